"""train/curves.py: the figure holds every series of metrics.jsonl with its data (read back from the Line2D
objects), one legend names each series once and nothing drawn falls outside the figure (measured with the Agg
renderer), the smoothing matches a brute-force moving average, the PNG decodes, and bad logs are refused by line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.image import imread

from train.curves import DPI, SIZE_INCHES, centred_mean, draw_curves, main, plot_run, read_metrics, smoothing_half_width

PIXELS = (round(SIZE_INCHES[1] * DPI), round(SIZE_INCHES[0] * DPI))  # (H, W)
ROOT = Path(__file__).resolve().parents[2]


def write_log(run_dir: Path, records: list[dict]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def train_record(step: int, loss: float) -> dict:
    return {"type": "train", "step": step, "epoch": 0, "loss": loss, "lr": 1e-4, "grad_norm": 1.0,
            "tokens_per_s": 500.0}


def eval_record(step: int, f1: float, kind: str = "eval", **extra: float) -> dict:
    return {"type": kind, "step": step, "epoch": 0, "valid_documents_loss": 0.3 - f1 / 400,
            "valid_documents_f1": f1, "valid_documents_precision": f1, "valid_documents_recall": f1,
            "valid_documents_per_type_f1": {"PER": f1}, "valid_documents_f1_by_decoder": {"viterbi": f1},
            "valid_sentences": 3250 if kind == "eval" else 250,
            "seconds": 2.0, **extra}


def overfitting_records() -> list[dict]:
    """Training-sample F1 keeps rising while validation F1 peaks and falls; subset evaluations every 150 steps,
    full ones every 500; a record type the curves do not draw."""
    records = [{"type": "run_info", "step": 0}]
    for step in [1, *range(10, 1010, 10)]:
        records.append(train_record(step, 2.0 * math.exp(-step / 150) + 0.02 * (1 + math.sin(step))))
        k = step / 200
        if step % 500 == 0:
            records.append(eval_record(step, 85 + 3 * k - k * k, train_loss=0.2 / k, train_f1=86 + 3 * k,
                                       valid_alone_f1=80 + k, valid_bare_f1=75 + k))
        elif step % 150 == 0:
            records.append(eval_record(step, 84 + 3 * k - k * k, "subset_eval", train_loss=0.25 / k,
                                       train_f1=85 + 3 * k, valid_alone_f1=79 + k, valid_bare_f1=74 + k))
    return records


def lines(figure) -> dict[tuple[str, str], object]:
    """{(panel title's first word, legend label): Line2D} of a curves figure."""
    found = {}
    for ax in figure.axes:
        for line in ax.get_lines():
            found[(ax.get_title().split()[0], line.get_label())] = line
    return found


def brute_force_centred_mean(values: list[float], half: int) -> list[float]:
    out = []
    for i, value in enumerate(values):
        window = [v for v in values[max(0, i - half):i + half + 1] if math.isfinite(v)]
        out.append(sum(window) / len(window) if math.isfinite(value) else math.nan)
    return out


def test_figure_holds_every_series_with_its_data():
    records = overfitting_records()
    found = lines(draw_curves(records))
    train = [r for r in records if r["type"] == "train"]
    full = [r for r in records if r["type"] == "eval"]
    subset = [r for r in records if r["type"] == "subset_eval"]
    half = smoothing_half_width(len(train))
    expected = {
        ("Loss", "training batch (raw)"): (train, "loss"),
        ("Loss", f"training batch, centred moving average of {2 * half + 1} logs"): (train, None),
        ("Loss", "valid as documents, full evaluation (3250 sentences)"): (full, "valid_documents_loss"),
        ("Loss", "valid as documents, subset evaluation (250 sentences)"): (subset, "valid_documents_loss"),
        ("Loss", "train sample, full evaluation"): (full, "train_loss"),
        ("Loss", "train sample, subset evaluation"): (subset, "train_loss"),
        ("Entity", "valid as documents, full evaluation (3250 sentences)"): (full, "valid_documents_f1"),
        ("Entity", "valid as documents, subset evaluation (250 sentences)"): (subset, "valid_documents_f1"),
        ("Entity", "valid sentence by sentence, full evaluation"): (full, "valid_alone_f1"),
        ("Entity", "valid sentence by sentence, subset evaluation"): (subset, "valid_alone_f1"),
        ("Entity", "valid without final punctuation, full evaluation"): (full, "valid_bare_f1"),
        ("Entity", "valid without final punctuation, subset evaluation"): (subset, "valid_bare_f1"),
        ("Entity", "train sample, full evaluation"): (full, "train_f1"),
        ("Entity", "train sample, subset evaluation"): (subset, "train_f1"),
    }
    assert set(found) == set(expected)
    for name, (rows, key) in expected.items():
        line = found[name]
        values = [r[key] for r in rows] if key else brute_force_centred_mean([r["loss"] for r in train], half)
        np.testing.assert_allclose(line.get_xdata(), [r["step"] for r in rows], err_msg=str(name))
        np.testing.assert_allclose(line.get_ydata(), values, rtol=1e-12, err_msg=str(name))
        drawn_as = "markers" if line.get_linestyle() == "None" else "line"
        assert drawn_as == ("markers" if rows is full else "line"), name


def test_full_evaluations_are_markers_and_the_raw_loss_is_faint():
    found = lines(draw_curves(overfitting_records()))
    full = found[("Entity", "valid as documents, full evaluation (3250 sentences)")]
    assert full.get_linestyle() == "None" and full.get_marker() == "o"
    raw, = (line for (panel, label), line in found.items() if label == "training batch (raw)")
    smooth, = (line for (panel, label), line in found.items() if "moving average" in label)
    assert raw.get_alpha() < 0.5 and smooth.get_alpha() in (None, 1.0)


def default_run_records() -> list[dict]:
    """A default `make train` run's log: 835 steps, a training record every 10, subset evaluations every 100 steps on
    100 sentences, the full one at the end; long enough labels to fill the legend."""
    records = [train_record(step, 3.0 * math.exp(-step / 25) + 0.06) for step in [1, *range(10, 840, 10)]]
    for step in range(100, 835, 100):
        records.append(eval_record(step, 94 - 60 * math.exp(-step / 110), "subset_eval", train_loss=0.1,
                                   train_f1=96.0, valid_alone_f1=92.0, valid_bare_f1=91.0, valid_sentences=100))
    return records + [eval_record(835, 94.24, train_loss=0.02, train_f1=97.0, valid_alone_f1=93.45,
                                  valid_bare_f1=93.48)]


def every_legend(figure) -> list:
    return figure.legends + [ax.get_legend() for ax in figure.axes if ax.get_legend() is not None]


def test_one_legend_names_each_series_once():
    """A series drawn in both panels (validation as documents, the training sample) is named once, and how a point
    was evaluated (full: a marker, subset: a line) is said once for all the series, not once per series."""
    records = overfitting_records()
    figure = draw_curves(records)
    legend, = every_legend(figure)
    half = smoothing_half_width(sum(r["type"] == "train" for r in records))
    names = [text.get_text() for text in legend.get_texts()]
    assert names == ["training batch (raw)", f"training batch, centred moving average of {2 * half + 1} logs",
                     "valid as documents", "valid sentence by sentence", "valid without final punctuation",
                     "train sample", "full evaluation (3250 valid sentences)",
                     "subset evaluation (first 250 valid sentences)"]
    handles = dict(zip(names, legend.legend_handles))
    drawn = lines(figure)
    for name in ("valid as documents", "valid sentence by sentence", "valid without final punctuation",
                 "train sample"):
        colours = {line.get_color() for (_, label), line in drawn.items() if label.startswith(name + ",")}
        assert colours == {handles[name].get_color()}, name
    full, subset = handles["full evaluation (3250 valid sentences)"], handles[names[-1]]
    assert (full.get_linestyle(), full.get_marker()) == ("None", "o")
    assert subset.get_linestyle() == "-"


@pytest.mark.parametrize("records", [overfitting_records(), default_run_records(), [train_record(10, 1.0)]],
                         ids=["overfitting", "default run", "one training record"])
def test_nothing_drawn_falls_outside_the_figure(records):
    """What savefig would cut: the tight box of everything drawn (legend, titles, tick labels) lies inside the
    figure, and the legend covers no panel."""
    figure = draw_curves(records)
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)
    width, height = SIZE_INCHES
    drawn = figure.get_tightbbox(renderer)  # inches
    assert drawn.x0 >= 0 and drawn.y0 >= 0 and drawn.x1 <= width and drawn.y1 <= height, drawn.extents
    for legend in every_legend(figure):
        extent = legend.get_window_extent(renderer)  # pixels
        assert extent.x0 >= 0 and extent.y0 >= 0 and extent.x1 <= figure.bbox.x1 and extent.y1 <= figure.bbox.y1, \
            extent.extents
        assert not any(extent.overlaps(ax.bbox) for ax in figure.axes), "the legend hides no data"


@pytest.mark.parametrize("half", [1, 2, 5])
def test_centred_mean_matches_brute_force(half):
    values = [float(v) for v in np.random.default_rng(half).normal(1.0, 0.5, size=23)]
    values[4], values[5], values[17] = math.nan, math.inf, -math.inf
    got = centred_mean(np.array(values), half)
    np.testing.assert_allclose(got, brute_force_centred_mean(values, half), rtol=1e-12)
    assert np.isnan(got[[4, 5, 17]]).all(), "a non-finite loss stays a gap"


def test_single_evaluation_still_shows():
    records = [train_record(step, 1.0 / step) for step in range(10, 110, 10)] + [eval_record(100, 71.5)]
    found = lines(draw_curves(records))
    for panel in ("Loss", "Entity"):
        line = found[(panel, "valid as documents, full evaluation (3250 sentences)")]
        assert line.get_marker() == "o" and line.get_markersize() >= 5, panel
        assert list(line.get_xdata()) == [100], panel
    assert not any("train sample" in label for _, label in found), "no training-sample metrics were logged"


def test_single_subset_evaluation_and_single_train_record_get_a_marker():
    found = lines(draw_curves([train_record(1, 2.0), eval_record(1, 10.0, "subset_eval")]))
    assert found[("Entity", "valid as documents, subset evaluation (250 sentences)")].get_marker() == "o"
    assert found[("Loss", "training batch (raw)")].get_marker() == "o"


def test_non_finite_loss_leaves_a_gap_not_an_error(tmp_path):
    losses = [1.0, float("nan"), 0.5, float("inf"), 0.25]
    records = [train_record(10 * (i + 1), loss) for i, loss in enumerate(losses)] + [eval_record(50, 60.0)]
    figure = draw_curves(records)
    raw = lines(figure)[("Loss", "training batch (raw)")]
    assert np.isnan(raw.get_ydata()[[1, 3]]).all()
    low, high = figure.axes[0].get_ylim()
    assert math.isfinite(low) and math.isfinite(high) and low <= 0.25 and high >= 1.0
    assert imread(plot_run(write_log(tmp_path / "run", records))).shape[:2] == PIXELS


def test_loss_axis_is_logarithmic_only_across_a_decade():
    steep = draw_curves([train_record(10, 2.0), train_record(20, 0.1)]).axes[0]
    flat = draw_curves([train_record(10, 0.5), train_record(20, 0.1)]).axes[0]
    assert (steep.get_yscale(), steep.get_title()) == ("log", "Loss (log scale)")
    assert (flat.get_yscale(), flat.get_title()) == ("linear", "Loss")


def test_f1_panel_without_evaluation_says_so():
    f1_axes = draw_curves([train_record(10, 1.0)]).axes[1]
    assert not f1_axes.get_lines()
    assert [t.get_text() for t in f1_axes.texts] == ["no evaluation yet"]


def test_plot_run_writes_a_png_of_the_figure_atomically(tmp_path):
    run_dir = write_log(tmp_path / "run", overfitting_records())
    out = plot_run(run_dir)
    assert out == run_dir / "curves.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(out)
    assert image.shape[:2] == PIXELS
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 50, "something is drawn"
    assert sorted(os.listdir(run_dir)) == ["curves.png", "metrics.jsonl"], "no temporary file left behind"


def test_read_metrics_keeps_drawn_records_in_order(tmp_path):
    records = read_metrics(write_log(tmp_path / "run", overfitting_records()) / "metrics.jsonl")
    assert {r["type"] for r in records} == {"train", "eval", "subset_eval"}
    assert len(records) == 101 + 2 + 6
    assert [(r["type"], r["step"]) for r in records if r["type"] != "train"] == [
        ("subset_eval", 150), ("subset_eval", 300), ("subset_eval", 450), ("eval", 500), ("subset_eval", 600),
        ("subset_eval", 750), ("subset_eval", 900), ("eval", 1000)]


@pytest.mark.parametrize("bad_line, problem", [
    ("{not json", "not valid JSON"),
    ('{"type": "train", "loss": 0.5}', "'type' and a 'step'"),
    ('{"step": 20, "loss": 0.5}', "'type' and a 'step'"),
    ('{"type": "train", "step": 20, "loss": "low"}', "'loss'"),
    ('{"type": "eval", "step": 20, "valid_documents_loss": 0.1, "valid_documents_f1": 50, "train_f1": null}',
     "'train_f1'"),
    ('{"type": "subset_eval", "step": 20, "valid_documents_loss": 0.1}', "'valid_documents_f1'"),
    ('{"type": "eval", "step": true, "valid_documents_loss": 0.1, "valid_documents_f1": 50}', "'step'"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad_line, problem):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(train_record(10, 1.0)) + "\n\n" + bad_line + "\n")
    with pytest.raises(ValueError, match=rf"metrics\.jsonl:3: .*{problem}"):
        read_metrics(path)


def test_a_last_line_cut_short_by_a_kill_is_left_out(tmp_path, capsys):
    """Drawn while a record is being written, or after a kill mid-write: the records before it are drawn."""
    run_dir = write_log(tmp_path / "run", overfitting_records())
    whole = read_metrics(run_dir / "metrics.jsonl")
    lines = len((run_dir / "metrics.jsonl").read_text().splitlines())
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"type": "train", "step": 9')
    assert read_metrics(run_dir / "metrics.jsonl") == whole
    assert f"metrics.jsonl:{lines + 1}: " in capsys.readouterr().err
    plot_run(run_dir)


def test_missing_log_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plot_run(tmp_path)


@pytest.mark.parametrize("content", ["", "\n", '{"type": "run_info", "step": 0}\n'])
def test_log_without_records_is_refused(tmp_path, content):
    (tmp_path / "metrics.jsonl").write_text(content)
    with pytest.raises(ValueError, match="no records"):
        read_metrics(tmp_path / "metrics.jsonl")


def test_cli_writes_to_out_without_pyplot(tmp_path):
    run_dir, out = write_log(tmp_path / "run", overfitting_records()), tmp_path / "elsewhere.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "pdf"}  # the Agg canvas is used whatever this says
    result = subprocess.run([sys.executable, "-m", "train.curves", str(run_dir), "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    assert result.stdout.strip() == str(out)
    assert imread(out).shape[:2] == PIXELS
    assert not (run_dir / "curves.png").exists()
    check = ("import sys; from train.curves import plot_run; plot_run(sys.argv[1]); "
             "print('matplotlib.pyplot' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", check, str(run_dir)], capture_output=True, text=True, cwd=ROOT,
                            env=env, check=True)
    assert result.stdout.strip() == "False", "pyplot (and its global figure manager) stays out of it"


def test_main_defaults_to_the_run_directory(tmp_path, capsys):
    run_dir = write_log(tmp_path / "run", overfitting_records())
    main([str(run_dir)])
    assert capsys.readouterr().out.strip() == str(run_dir / "curves.png")
    assert imread(run_dir / "curves.png").shape[:2] == PIXELS
