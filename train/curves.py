"""Training curves of a run (loss and entity F1 against optimizer step), drawn with matplotlib into a PNG.

    python -m train.curves RUN_DIR [--out PNG]

The full evaluations (the ones that keep the best adapter) are markers; the evaluations on fixed subsets between
them are lines. Overfitting shows as the training-sample curves improving while the validation ones get worse.
Validation F1 is drawn in its three views (data/views.py): as documents, sentence by sentence, and sentence by
sentence without final punctuation. A series keeps its name and colour in both panels, and one legend below them
names each series once, and each kind of evaluation once.
Drawn on matplotlib's Agg canvas directly, not through pyplot, so the caller's backend and figures stay untouched.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from data.views import VIEW_NAMES
from model.files import atomic_file
from train.run_dir import CURVES_FILE, METRICS_FILE, read_log

EVALUATION = ("step", "valid_documents_loss", "valid_documents_f1")
REQUIRED = {"train": ("step", "loss"), "eval": EVALUATION, "subset_eval": EVALUATION}
SCORES = ("train_loss", "train_f1", "valid_alone_f1", "valid_bare_f1")
OPTIONAL = {"train": (), "eval": SCORES, "subset_eval": SCORES}
TRAIN_BATCH, VALID, TRAIN_SAMPLE = "#1f77b4", "#e66101", "#5e3c99"  # blue, orange, purple
VALID_ALONE, VALID_BARE = "#d7301f", "#fdae61"  # red, light orange
KIND = "#555555"  # the legend's samples of a full and a subset evaluation, grey: they stand for every colour
SERIES = (  # name, colour, the record's key in the loss panel (None: not drawn there), in the F1 panel
    (f"valid {VIEW_NAMES['documents']}", VALID, "valid_documents_loss", "valid_documents_f1"),
    (f"valid {VIEW_NAMES['alone']}", VALID_ALONE, None, "valid_alone_f1"),
    (f"valid {VIEW_NAMES['bare']}", VALID_BARE, None, "valid_bare_f1"),
    ("train sample", TRAIN_SAMPLE, "train_loss", "train_f1"),
)
STYLE = {  # full evaluations: markers alone; subset ones: a line through small markers at its points
    "eval": dict(linestyle="none", marker="o", markersize=7, markeredgecolor="white", zorder=3),
    "subset_eval": dict(linestyle="-", linewidth=1.6, marker="o", markersize=3, zorder=2),
}
SIZE_INCHES, DPI = (14.0, 5.6), 100  # two panels side by side, loss left, F1 right, legend below: 1400 x 560 pixels


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


def sentences(rows: list[dict]) -> int | None:
    """The number of validation sentences the rows were scored on, when they all say the same."""
    counts = {r.get("valid_sentences") for r in rows}
    return counts.pop() if len(counts) == 1 and None not in counts else None


def draw_evaluations(ax: Axes, records: list[dict], series: list[tuple[str, str, str]]) -> None:
    """Curves of the evaluation `series` (name, colour, record key): full evaluations as markers, subset ones as
    lines through their points (a single point gets a full-sized marker, which a line alone would not show). Each
    line's label says all it is, "valid as documents, full evaluation (3250 sentences)"; the legend says it
    shorter (figure_legend)."""
    for kind in ("subset_eval", "eval"):
        rows = [r for r in records if r["type"] == kind]
        what = "full" if kind == "eval" else "subset"
        count = sentences(rows)
        for name, color, key in series:
            with_key = [r for r in rows if key in r]
            if not with_key:
                continue
            counted = f" ({count} sentences)" if count is not None and key in EVALUATION[1:] else ""
            style = {**STYLE[kind], "markersize": STYLE["eval"]["markersize"]} if len(with_key) == 1 else STYLE[kind]
            ax.plot(column(with_key, "step"), column(with_key, key), color=color,
                    label=f"{name}, {what} evaluation{counted}", **style)


def draw_loss(ax: Axes, records: list[dict]) -> list[Line2D]:
    """Raw per-batch training loss (faint), its centred moving average, and the evaluation losses; on a log axis
    when the finite losses span a decade or more, so that the late, small losses stay readable. Returns the two
    training-batch lines (none before the first log), which the legend shows as they are."""
    rows = [r for r in records if r["type"] == "train"]
    batch = []
    if rows:
        steps, loss = column(rows, "step"), column(rows, "loss")
        half = smoothing_half_width(len(rows))
        batch += ax.plot(steps, loss, color=TRAIN_BATCH, alpha=0.3, linewidth=0.8, label="training batch (raw)",
                         marker="o" if len(rows) == 1 else None)
        batch += ax.plot(steps, centred_mean(loss, half), color=TRAIN_BATCH, linewidth=1.8,
                         label=f"training batch, centred moving average of {2 * half + 1} logs")
    draw_evaluations(ax, records, [(name, color, loss) for name, color, loss, _ in SERIES if loss])
    values = np.concatenate([line.get_ydata() for line in ax.get_lines()] + [np.empty(0)])
    values = values[np.isfinite(values)]
    log = len(values) > 0 and values.min() > 0 and values.max() >= 10 * values.min()
    if log:
        ax.set_yscale("log")
    ax.set_title("Loss (log scale)" if log else "Loss")
    return batch


def draw_f1(ax: Axes, records: list[dict]) -> None:
    draw_evaluations(ax, records, [(name, color, f1) for name, color, _, f1 in SERIES])
    ax.set_title("Entity F1 (%)")
    values = np.concatenate([line.get_ydata() for line in ax.get_lines()] + [np.empty(0)])
    values = values[np.isfinite(values)]
    if not len(values):
        ax.text(0.5, 0.5, "no evaluation yet", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylim(0, 100)
        return
    widen = max(0.0, 10.0 - (values.max() - values.min())) / 2  # span at least 10 points: noise is not a trend
    ax.set_ylim(max(0.0, values.min() - widen - 1), min(100.0, values.max() + widen + 1))


def figure_legend(figure: Figure, batch: list[Line2D], records: list[dict]) -> None:
    """One legend below both panels: the training-batch lines, then each evaluated series once, by its colour,
    then each kind of evaluation once, by its style; in up to four columns, inside the figure (constrained layout
    makes room for an "outside" legend)."""
    evaluated = [r for r in records if r["type"] != "train"]
    handles = batch + [Line2D([], [], color=color, linewidth=3, label=name) for name, color, loss, f1 in SERIES
                       if any(key in r for r in evaluated for key in (loss, f1))]
    for kind, what, scored in (("eval", "full evaluation", "{} valid sentences"),
                               ("subset_eval", "subset evaluation", "first {} valid sentences")):
        rows = [r for r in records if r["type"] == kind]
        if rows:
            count = sentences(rows)
            label = f"{what} ({scored.format(count)})" if count is not None else what
            handles.append(Line2D([], [], color=KIND, label=label, **STYLE[kind]))
    figure.legend(handles=handles, loc="outside lower center", ncol=min(4, math.ceil(len(handles) / 2)),
                  frameon=False, fontsize=10)


def draw_curves(records: list[dict]) -> Figure:
    """The figure of a run's records (as read_metrics returns them): loss left, entity F1 right, the legend below."""
    figure = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    loss_ax, f1_ax = figure.subplots(1, 2)
    batch = draw_loss(loss_ax, records)
    draw_f1(f1_ax, records)
    last_step = max(r["step"] for r in records)
    for ax in (loss_ax, f1_ax):
        ax.set_xlim(0, max(last_step, 1) * 1.03)  # room for the marker of a final evaluation
        ax.set_xlabel("optimizer step")
        ax.grid(True, color="#e1e1e1", linewidth=0.8)
    figure_legend(figure, batch, records)
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
