"""Training curves of a run (loss and entity F1 against optimizer step), drawn with matplotlib into a PNG.

    python -m train.curves RUN_DIR [--out PNG]

The full evaluations (the ones that keep the best adapter) are markers; the evaluations on fixed subsets between
them are lines. Overfitting shows as the training-sample curves improving while the validation ones get worse.
Validation F1 is drawn in its three views (data/views.py): as documents, sentence by sentence, and sentence by
sentence without final punctuation.
Drawn on matplotlib's Agg canvas directly, not through pyplot, so the caller's backend and figures stay untouched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from data.views import VIEW_NAMES
from model.files import atomic_file
from train.run_dir import CURVES_FILE, METRICS_FILE, read_log

EVALUATION = ("step", "valid_documents_loss", "valid_documents_f1")
REQUIRED = {"train": ("step", "loss"), "eval": EVALUATION, "subset_eval": EVALUATION}
SCORES = ("train_loss", "train_f1", "valid_alone_f1", "valid_bare_f1")
OPTIONAL = {"train": (), "eval": SCORES, "subset_eval": SCORES}
TRAIN_BATCH, VALID, TRAIN_SAMPLE = "#1f77b4", "#e66101", "#5e3c99"  # blue, orange, purple
VALID_ALONE, VALID_BARE = "#d7301f", "#fdae61"  # red, light orange
SIZE_INCHES, DPI = (14.0, 5.6), 100  # two panels side by side, loss left, F1 right: 1400 x 560 pixels


def read_metrics(path: str | Path) -> list[dict]:
    """The train, eval and subset_eval records of a metrics.jsonl, in file order; other record types are skipped.
    A last line cut short by a kill is left out with a note, as on resume (train/run_dir.py `read_log`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics log here (is this a run directory of `python -m train`?)")
    records = []
    for number, record in read_log(path):
        kind = record["type"]
        if kind not in REQUIRED:
            continue
        for key in REQUIRED[kind] + tuple(k for k in OPTIONAL[kind] if k in record):
            value = record.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{path}:{number}: {kind} record needs a number for {key!r}, got {value!r}")
        records.append(record)
    if not records:
        raise ValueError(f"{path}: no records (no 'train', 'eval' or 'subset_eval' line)")
    return records


def smoothing_half_width(count: int) -> int:
    """Half the smoothing window, in logged points: about a fortieth of the run on each side, at least one."""
    return max(1, count // 40)


def centred_mean(values: np.ndarray, half: int) -> np.ndarray:
    """values[i] replaced by the mean of the finite values among values[i - half : i + half + 1] (the window
    shrinks at the ends). Centred rather than exponential, so the smoothed curve does not lag behind the raw one.
    A non-finite value (a diverged batch) stays a gap and is left out of its neighbours' means."""
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])  # (N + 1,) prefix sums
    counts = np.concatenate([[0], np.cumsum(finite)])
    ends = np.arange(len(values))
    lo, hi = np.maximum(ends - half, 0), np.minimum(ends + half + 1, len(values))
    with np.errstate(invalid="ignore"):
        means = (sums[hi] - sums[lo]) / (counts[hi] - counts[lo])
    return np.where(finite, means, np.nan)


def column(rows: list[dict], key: str) -> np.ndarray:
    """rows[*][key] as floats, inf turned into NaN: matplotlib leaves a gap at a NaN and ranges over the rest."""
    values = np.array([r[key] for r in rows], float)
    return np.where(np.isfinite(values), values, np.nan)


def sentences(rows: list[dict]) -> str:
    counts = {r.get("valid_sentences") for r in rows}
    return f" ({counts.pop()} sentences)" if len(counts) == 1 and None not in counts else ""


def draw_evaluations(ax: Axes, records: list[dict], series: list[tuple[str, str, str]]) -> None:
    """Curves of the evaluation `series` (record key, name, colour): full evaluations as markers, subset ones as
    lines (with a marker when there is a single point, which a line alone would not show)."""
    for kind, style in (("subset_eval", "line"), ("eval", "markers")):
        rows = [r for r in records if r["type"] == kind]
        what = "full" if kind == "eval" else "subset"
        for key, name, color in series:
            label = f"{name}, {what} evaluation" + (sentences(rows) if key in EVALUATION[1:] else "")
            with_key = [r for r in rows if key in r]
            if not with_key:
                continue
            marker = "o" if style == "markers" or len(with_key) == 1 else None
            ax.plot(column(with_key, "step"), column(with_key, key), color=color, label=label,
                    linestyle="none" if style == "markers" else "-", marker=marker, markersize=7 if marker else 0,
                    markeredgecolor="white", zorder=3 if style == "markers" else 2)


def draw_loss(ax: Axes, records: list[dict]) -> None:
    """Raw per-batch training loss (faint), its centred moving average, and the evaluation losses; on a log axis
    when the finite losses span a decade or more, so that the late, small losses stay readable."""
    rows = [r for r in records if r["type"] == "train"]
    if rows:
        steps, loss = column(rows, "step"), column(rows, "loss")
        half = smoothing_half_width(len(rows))
        ax.plot(steps, loss, color=TRAIN_BATCH, alpha=0.3, linewidth=0.8, label="training batch (raw)",
                marker="o" if len(rows) == 1 else None)
        ax.plot(steps, centred_mean(loss, half), color=TRAIN_BATCH, linewidth=1.8,
                label=f"training batch, centred moving average of {2 * half + 1} logs")
    draw_evaluations(ax, records, [("valid_documents_loss", "valid", VALID),
                                   ("train_loss", "train sample", TRAIN_SAMPLE)])
    values = np.concatenate([line.get_ydata() for line in ax.get_lines()] + [np.empty(0)])
    values = values[np.isfinite(values)]
    log = len(values) > 0 and values.min() > 0 and values.max() >= 10 * values.min()
    if log:
        ax.set_yscale("log")
    ax.set_title("Loss (log scale)" if log else "Loss")


def draw_f1(ax: Axes, records: list[dict]) -> None:
    draw_evaluations(ax, records, [("valid_documents_f1", f"valid {VIEW_NAMES['documents']}", VALID),
                                   ("valid_alone_f1", f"valid {VIEW_NAMES['alone']}", VALID_ALONE),
                                   ("valid_bare_f1", f"valid {VIEW_NAMES['bare']}", VALID_BARE),
                                   ("train_f1", "train sample", TRAIN_SAMPLE)])
    ax.set_title("Entity F1 (%)")
    values = np.concatenate([line.get_ydata() for line in ax.get_lines()] + [np.empty(0)])
    values = values[np.isfinite(values)]
    if not len(values):
        ax.text(0.5, 0.5, "no evaluation yet", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylim(0, 100)
        return
    widen = max(0.0, 10.0 - (values.max() - values.min())) / 2  # span at least 10 points: noise is not a trend
    ax.set_ylim(max(0.0, values.min() - widen - 1), min(100.0, values.max() + widen + 1))


def draw_curves(records: list[dict]) -> Figure:
    """The figure of a run's records (as read_metrics returns them): loss left, entity F1 right."""
    figure = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    loss_ax, f1_ax = figure.subplots(1, 2)
    draw_loss(loss_ax, records)
    draw_f1(f1_ax, records)
    last_step = max(r["step"] for r in records)
    for ax in (loss_ax, f1_ax):
        ax.set_xlim(0, max(last_step, 1) * 1.03)  # room for the marker of a final evaluation
        ax.set_xlabel("optimizer step")
        ax.grid(True, color="#e1e1e1", linewidth=0.8)
        if ax.get_lines():
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False, fontsize=9)
    return figure


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the curves of run_dir/metrics.jsonl and write them to out (default run_dir/curves.png), atomically:
    `make plot` during a run, or a viewer open on the file, never sees a half-written PNG."""
    run_dir = Path(run_dir)
    figure = draw_curves(read_metrics(run_dir / METRICS_FILE))
    out = Path(out) if out is not None else run_dir / CURVES_FILE
    with atomic_file(out) as tmp:
        FigureCanvasAgg(figure)  # attach the Agg canvas, whatever backend the caller selected
        figure.savefig(tmp, format="png")  # tmp ends in .tmp: the format cannot be inferred from the name
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.curves", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help=f"a run directory holding {METRICS_FILE}")
    parser.add_argument("--out", type=Path, help=f"where to write the PNG (default: RUN_DIR/{CURVES_FILE})")
    args = parser.parse_args(argv)
    print(plot_run(args.run_dir, args.out))


if __name__ == "__main__":
    main(sys.argv[1:])
