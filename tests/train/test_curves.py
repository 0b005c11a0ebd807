"""train/plot.py: the PNG it writes decodes (with an independent decoder below) to the pixels given, and the
curves of a run show every series in its colour, in its panel and in the legend."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from train.curves import (SIZE, TRAIN_STEP, TRAIN_SUBSET, VALID, linear_axis, log_axis, main, plot_run, read_metrics,
                        write_png)



def decode_png(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 pixels of an 8-bit RGB, non-interlaced PNG whose rows all use filter type 0."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"CRC of chunk {kind}"
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + 3 * width)  # each row: filter byte + RGB triples
    assert (rows[:, 0] == 0).all(), "filter type 0 on every row"
    return rows[:, 1:].reshape(height, width, 3)


def write_log(run_dir: Path, records: list[dict]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def train_record(step: int, loss: float) -> dict:
    return {"type": "train", "step": step, "epoch": 0, "loss": loss, "lr": 1e-4, "grad_norm": 1.0,
            "tokens_per_s": 500.0}


def eval_record(step: int, valid_f1: float, **extra: float) -> dict:
    return {"type": "eval", "step": step, "epoch": 0, "valid_loss": 0.3 - valid_f1 / 400, "valid_f1": valid_f1,
            "valid_precision": valid_f1, "valid_recall": valid_f1, "per_type_f1": {"PER": valid_f1}, "seconds": 2.0,
            **extra}


def overfitting_run(run_dir: Path) -> Path:
    """Training-subset F1 keeps rising while validation F1 peaks and falls."""
    records = []
    for step in [1, *range(10, 1010, 10)]:
        records.append(train_record(step, 2.0 * math.exp(-step / 150) + 0.02))
        if step % 200 == 0:
            k = step // 200
            records.append(eval_record(step, 85 + 3 * k - k * k, train_loss=0.2 / k, train_f1=86 + 3 * k))
    return write_log(run_dir, [*records, {"type": "note", "step": 0, "text": "ignored"}])


def colours(image: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(int(c) for c in pixel) for pixel in np.unique(image.reshape(-1, 3), axis=0)}


def regions(image: np.ndarray) -> dict[str, np.ndarray]:
    """The plots (above the legend rows at the bottom fifth) and the legends, of each half of the figure."""
    split_row, middle = image.shape[0] * 4 // 5, image.shape[1] // 2
    return {"loss plot": image[:split_row, :middle], "loss legend": image[split_row:, :middle],
            "f1 plot": image[:split_row, middle:], "f1 legend": image[split_row:, middle:]}


def test_write_png_round_trips_random_pixels(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    write_png(tmp_path / "random.png", pixels)
    np.testing.assert_array_equal(decode_png(tmp_path / "random.png"), pixels)
    assert os.listdir(tmp_path) == ["random.png"], "no temporary file left behind"


def test_write_png_refuses_other_arrays(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "gray.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "float.png", np.zeros((4, 4, 3)))


def test_plot_run_draws_every_series_in_its_panel(tmp_path):
    run_dir = overfitting_run(tmp_path / "run")
    out = plot_run(run_dir)
    assert out == run_dir / "curves.png"
    image = decode_png(out)
    assert image.shape == (*SIZE, 3)
    found = {name: colours(region) for name, region in regions(image).items()}
    for name in ("loss plot", "loss legend"):
        assert {TRAIN_STEP, VALID, TRAIN_SUBSET} <= found[name], name
    for name in ("f1 plot", "f1 legend"):
        assert {VALID, TRAIN_SUBSET} <= found[name], name
        assert TRAIN_STEP not in found[name], f"{name}: the per-step training loss belongs to the loss panel"


def test_single_evaluation_still_shows(tmp_path):
    records = [train_record(step, 1.0 / step) for step in range(10, 110, 10)]
    run_dir = write_log(tmp_path / "run", [*records, eval_record(100, 71.5)])
    parts = regions(decode_png(plot_run(run_dir)))
    found = {name: colours(region) for name, region in parts.items()}
    for name in ("loss plot", "f1 plot"):
        assert (parts[name] == VALID).all(axis=-1).sum() >= 25, f"{name}: a marker, not a dot of line"
    assert TRAIN_SUBSET not in found["f1 plot"] | found["f1 legend"], "no training-subset metrics were logged"


def test_non_finite_loss_leaves_a_gap_not_an_error(tmp_path):
    records = [train_record(10, 1.0), train_record(20, float("nan")), train_record(30, 0.5), eval_record(30, 60.0)]
    found = colours(regions(decode_png(plot_run(write_log(tmp_path / "run", records))))["loss plot"])
    assert {TRAIN_STEP, VALID} <= found


def test_read_metrics_keeps_train_and_eval_records_in_order(tmp_path):
    records = read_metrics(overfitting_run(tmp_path / "run") / "metrics.jsonl")
    assert {r["type"] for r in records} == {"train", "eval"}
    assert len(records) == 101 + 5
    assert [r["step"] for r in records if r["type"] == "eval"] == [200, 400, 600, 800, 1000]


@pytest.mark.parametrize("bad_line, problem", [
    ("{not json", "not valid JSON"),
    ('{"type": "train", "loss": 0.5}', "'type' and a 'step'"),
    ('{"step": 20, "loss": 0.5}', "'type' and a 'step'"),
    ('{"type": "train", "step": 20, "loss": "low"}', "'loss'"),
    ('{"type": "eval", "step": 20, "valid_loss": 0.1, "valid_f1": 50, "train_f1": null}', "'train_f1'"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad_line, problem):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(train_record(10, 1.0)) + "\n\n" + bad_line + "\n")
    with pytest.raises(ValueError, match=rf"metrics\.jsonl:3: .*{problem}"):
        read_metrics(path)


def test_missing_log_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plot_run(tmp_path)


@pytest.mark.parametrize("content", ["", "\n", '{"type": "run_info", "step": 0}\n'])
def test_log_without_records_is_refused(tmp_path, content):
    (tmp_path / "metrics.jsonl").write_text(content)
    with pytest.raises(ValueError, match="no records"):
        read_metrics(tmp_path / "metrics.jsonl")


def test_axis_ticks_are_round_numbers_covering_the_data():
    steps = linear_axis(0.0, 878.0)
    assert steps.ticks == [0, 200, 400, 600, 800, 1000] and (steps.lo, steps.hi) == (0, 1000)
    f1 = linear_axis(84.2, 92.7)
    assert f1.ticks[0] <= 84.2 and f1.ticks[-1] >= 92.7 and len(f1.ticks) <= 8
    assert np.allclose(np.diff(f1.ticks), 2.0)
    assert log_axis(0.005, 2.5).ticks == [0.01, 0.1, 1.0]
    assert log_axis(0.04, 0.3).ticks == pytest.approx([0.05, 0.1, 0.2])


def test_cli_writes_to_out(tmp_path):
    run_dir, out = overfitting_run(tmp_path / "run"), tmp_path / "elsewhere.png"
    result = subprocess.run([sys.executable, "-m", "train.curves", str(run_dir), "--out", str(out)],
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    assert result.stdout.strip() == str(out)
    assert decode_png(out).shape == (*SIZE, 3)
    assert not (run_dir / "curves.png").exists()


def test_main_defaults_to_the_run_directory(tmp_path, capsys):
    run_dir = overfitting_run(tmp_path / "run")
    main([str(run_dir)])
    assert capsys.readouterr().out.strip() == str(run_dir / "curves.png")
    assert decode_png(run_dir / "curves.png").shape == (*SIZE, 3)
