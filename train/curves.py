"""Training curves of a run (loss and entity F1 against optimizer step) drawn into a PNG.

    python -m train.curves RUN_DIR [--out PNG]

Product code may depend only on torch/numpy/stdlib, so instead of a plotting library this file carries the three
small pieces a plot needs: a PNG encoder (zlib stream + CRC-32 chunks, RFC 2083), a numpy raster canvas, and a
5x9 bitmap font. Overfitting shows as the training-subset curves improving while the validation ones get worse.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METRICS_FILE = "metrics.jsonl"  # as in train/loop.py, not imported from there: that would pull in torch
REQUIRED = {"train": ("step", "loss"), "eval": ("step", "valid_loss", "valid_f1")}
OPTIONAL = {"train": (), "eval": ("train_loss", "train_f1")}

Color = tuple[int, int, int]
TRAIN_STEP, VALID, TRAIN_SUBSET = (31, 119, 180), (230, 97, 1), (94, 60, 153)  # blue, orange, purple
INK, GRID, WHITE = (30, 30, 30), (225, 225, 225), (255, 255, 255)
SIZE = (560, 1400)  # (H, W) pixels: two 700-pixel panels side by side, loss left, F1 right

# 5 columns x 9 rows (rows 7-8: descenders); one base-32 digit per row, bit 4 = leftmost column, missing rows blank.
GLYPHS = {
    " ": "", "A": "ehhvhhh", "B": "uhhuhhu", "C": "ehggghe", "D": "uhhhhhu", "E": "vgguggv", "F": "vgguggg",
    "G": "ehgnhhf", "H": "hhhvhhh", "I": "e44444e", "J": "72222ic", "K": "hikokih", "L": "ggggggv", "M": "hrllhhh",
    "N": "hhpljhh", "O": "ehhhhhe", "P": "uhhuggg", "Q": "ehhhlid", "R": "uhhukih", "S": "fgge11u", "T": "v444444",
    "U": "hhhhhhe", "V": "hhhhha4", "W": "hhhllla", "X": "hha4ahh", "Y": "hha4444", "Z": "v1248gv", "a": "00e1fhf",
    "b": "gguhhhu", "c": "00eggge", "d": "11fhhhf", "e": "00ehvge", "f": "68s8888", "g": "00fhhhf1e", "h": "gguhhhh",
    "i": "40c444e", "j": "2062222ic", "k": "ggikoki", "l": "c44444e", "m": "00qllll", "n": "00uhhhh", "o": "00ehhhe",
    "p": "00uhhhugg", "q": "00fhhhf11", "r": "00mpggg", "s": "00fge1u", "t": "88s8896", "u": "00hhhjd", "v": "00hhha4",
    "w": "00hhlla", "x": "00ha4ah", "y": "00hhhhf1e", "z": "00v248v", "0": "ehjlphe", "1": "4c4444e", "2": "eh1248v",
    "3": "v2421he", "4": "26aiv22", "5": "vgu11he", "6": "68guhhe", "7": "v124888", "8": "ehhehhe", "9": "ehhf12c",
    ".": "00000cc", "-": "000v", ",": "00000c48", ":": "0cc0cc", "(": "2488842", ")": "8422248", "/": "01248g",
    "%": "op248j3", "_": "0000000v", "+": "044v44",
}


def read_metrics(path: Path) -> list[dict]:
    """The train and eval records of a metrics.jsonl, in file order; other record types are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics log here (is this a run directory of `python -m train`?)")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or "type" not in record or "step" not in record:
            raise ValueError(f"{path}:{number}: a record needs a 'type' and a 'step'")
        if record["type"] not in REQUIRED:
            continue
        for key in REQUIRED[record["type"]] + tuple(k for k in OPTIONAL[record["type"]] if k in record):
            value = record.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{path}:{number}: {record['type']} record needs a number for {key!r}, got {value!r}")
        records.append(record)
    if not records:
        raise ValueError(f"{path}: no records (no 'train' or 'eval' line)")
    return records


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as an 8-bit RGB PNG, every row with filter type 0 (none)."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"write_png wants an (H, W, 3) uint8 array, got {pixels.shape} {pixels.dtype}")
    height, width, _ = pixels.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, width * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # bit depth 8, colour type 2 (RGB)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
           + chunk(b"IEND", b""))
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(png)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- canvas: an (H, W, 3) uint8 array; x grows right, y grows down ----

def fill(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
    """Paint the rectangle [x0, x1) x [y0, y1), clipped to the image."""
    img[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = color


def polyline(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, color: Color, width: int = 2) -> None:
    """Join consecutive points with width x width square dabs, one per pixel of the longer side of each segment.
    A non-finite point (a NaN loss) leaves a gap; a lone point (one record, or one between gaps) stays a dot."""
    ends = np.append(np.arange(1, len(xs)), len(xs) - 1)  # the segment from point i ends at i + 1, the last at itself
    for x0, y0, x1, y1 in zip(xs, ys, xs[ends], ys[ends]):
        if not np.isfinite([x0, y0]).all():
            continue
        if not np.isfinite([x1, y1]).all():
            x1, y1 = x0, y0
        n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        for x, y in zip(np.linspace(x0, x1, n + 1).round(), np.linspace(y0, y1, n + 1).round()):
            fill(img, int(x) - width // 2, int(y) - width // 2, int(x) + (width + 1) // 2, int(y) + (width + 1) // 2,
                 color)


def text(img: np.ndarray, x: int, y: int, s: str, color: Color = INK, scale: int = 2, align: str = "left") -> None:
    """Draw s with its cell top at y; x is its left edge, centre or right edge (align)."""
    x -= {"left": 0, "center": text_width(s, scale) // 2, "right": text_width(s, scale)}[align]
    for i, char in enumerate(s):
        rows = [int(d, 32) for d in GLYPHS[char].ljust(9, "0")]
        bits = np.array([[(r >> (4 - c)) & 1 for c in range(5)] for r in rows], bool)  # (9, 5)
        bits = np.kron(bits, np.ones((scale, scale), bool))  # (9 * scale, 5 * scale)
        left = x + 6 * scale * i
        window = img[y:y + bits.shape[0], left:left + bits.shape[1]]
        window[bits[:window.shape[0], :window.shape[1]]] = color


def text_width(s: str, scale: int) -> int:
    return 6 * scale * len(s) - scale


# ---- axes ----

@dataclass
class Axis:
    lo: float  # ends of the axis, in data units (log10 of them when log)
    hi: float
    ticks: list[float]  # in data units
    log: bool = False

    def to_pixels(self, values: np.ndarray, start: int, end: int) -> np.ndarray:
        t = ((np.log10(values) if self.log else values) - self.lo) / (self.hi - self.lo)
        return start + t * (end - start)


def linear_axis(lo: float, hi: float, target_ticks: int = 6) -> Axis:
    """Ticks at 1, 2 or 5 x 10^k, the axis widened to whole ticks around [lo, hi]."""
    if hi - lo < 1e-12:
        lo, hi = lo - max(abs(lo) * 0.05, 0.5), hi + max(abs(hi) * 0.05, 0.5)
    raw = (hi - lo) / target_ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return Axis(first * step, last * step, [k * step for k in range(first, last + 1)])


def log_axis(lo: float, hi: float) -> Axis:
    """A log10 axis over [lo, hi] padded by 5%, ticks at 1, 2, 5 x 10^k (only 10^k beyond two decades)."""
    a, b = math.log10(lo), math.log10(hi)
    pad = 0.05 * (b - a) if b > a else 0.1
    a, b = a - pad, b + pad
    mantissas = (1, 2, 5) if b - a <= 2.5 else (1,)
    ticks = [m * 10.0 ** k for k in range(math.floor(a), math.ceil(b) + 1) for m in mantissas]
    return Axis(a, b, [t for t in ticks if a <= math.log10(t) <= b], log=True)


def tick_label(value: float, axis: Axis) -> str:
    if axis.log:
        return f"{value:g}"
    step = axis.ticks[1] - axis.ticks[0]
    return f"{value:.{max(0, -math.floor(math.log10(step) + 1e-9))}f}"


# ---- panels ----

@dataclass
class Series:
    label: str
    steps: np.ndarray  # (N,)
    values: np.ndarray  # (N,)
    color: Color
    markers: bool  # evaluations (or a lone point): one square per point, so a single evaluation still shows


def draw_panel(img: np.ndarray, left: int, top: int, width: int, height: int, title: str, series: list[Series],
               x_axis: Axis, y_axis: Axis, empty_note: str) -> None:
    """Title, grid, frame, tick labels, the series, and a legend row under the x axis."""
    text(img, left + width // 2, top - 34, title, align="center")
    bottom, right = top + height, left + width
    xs = {t: round(p) for t, p in zip(x_axis.ticks, x_axis.to_pixels(np.array(x_axis.ticks), left, right))}
    ys = {t: round(p) for t, p in zip(y_axis.ticks, y_axis.to_pixels(np.array(y_axis.ticks), bottom, top))}
    for tick, x in xs.items():
        fill(img, x, top, x + 1, bottom, GRID)
        fill(img, x, bottom, x + 1, bottom + 6, INK)
        text(img, x, bottom + 10, tick_label(tick, x_axis), align="center")
    for tick, y in ys.items():
        fill(img, left, y, right, y + 1, GRID)
        fill(img, left - 6, y, left, y + 1, INK)
        text(img, left - 10, y - 8, tick_label(tick, y_axis), align="right")
    for x0, y0, x1, y1 in ((left, top, right, top + 1), (left, bottom, right, bottom + 1),
                           (left, top, left + 1, bottom), (right, top, right + 1, bottom + 1)):
        fill(img, x0, y0, x1, y1, INK)
    text(img, left + width // 2, bottom + 36, "step", align="center")
    if not series:
        text(img, left + width // 2, top + height // 2 - 8, empty_note, align="center")
    legend_x = left
    for s in series:
        px, py = x_axis.to_pixels(s.steps, left, right), y_axis.to_pixels(s.values, bottom, top)
        polyline(img, px, py, s.color)
        sample_y = bottom + 79
        polyline(img, np.array([legend_x, legend_x + 28]), np.array([sample_y, sample_y]), s.color)
        if s.markers:
            finite = np.isfinite(py)
            for x, y in [*zip(px[finite], py[finite]), (legend_x + 14, sample_y)]:
                x, y = round(x), round(y)
                fill(img, x - 4, y - 4, x + 5, y + 5, s.color)
        text(img, legend_x + 38, sample_y - 8, s.label)
        legend_x += 38 + text_width(s.label, 2) + 30


def finite_values(series: list[Series], fallback: tuple[float, float]) -> np.ndarray:
    """The sorted values an axis must span: NaN / inf (a diverged run) are drawn as gaps, not ranged over."""
    values = np.concatenate([s.values for s in series] + [np.empty(0)])
    values = np.sort(values[np.isfinite(values)])
    return values if len(values) else np.array(fallback)


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the loss and F1 curves of run_dir/metrics.jsonl side by side; write them to out (run_dir/curves.png)."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / METRICS_FILE)
    out = Path(out) if out is not None else run_dir / "curves.png"

    def series(kind: str, key: str, label: str, color: Color) -> list[Series]:
        rows = [r for r in records if r["type"] == kind and key in r]
        if not rows:
            return []
        steps, values = (np.array([r[k] for r in rows], float) for k in ("step", key))
        return [Series(label, steps, values, color, markers=kind == "eval" or len(rows) == 1)]

    loss = (series("train", "loss", "train batches", TRAIN_STEP) + series("eval", "valid_loss", "valid", VALID)
            + series("eval", "train_loss", "train subset", TRAIN_SUBSET))
    f1 = series("eval", "valid_f1", "valid", VALID) + series("eval", "train_f1", "train subset", TRAIN_SUBSET)

    x_axis = linear_axis(0.0, max(5, *(r["step"] for r in records)))  # at least 0..5: whole-number step ticks
    low, high = finite_values(loss, fallback=(0.0, 1.0))[[0, -1]]
    if low > 0 and high >= 10 * low:  # a decade or more: on a log axis the late, small losses stay readable
        loss_axis, loss_title = log_axis(low, high), "Loss (log scale)"
    else:
        loss_axis, loss_title = linear_axis(low, high), "Loss"
    low, high = finite_values(f1, fallback=(0.0, 100.0))[[0, -1]]
    widen = max(0.0, 10.0 - (high - low)) / 2  # span at least 10 points, so noise does not look like a trend
    f1_axis = linear_axis(max(0.0, low - widen), min(100.0, high + widen))

    img = np.full((*SIZE, 3), WHITE, np.uint8)  # (H, W, RGB)
    draw_panel(img, 100, 60, 560, 380, loss_title, loss, x_axis, loss_axis, "")
    draw_panel(img, 800, 60, 560, 380, "Entity F1 (%)", f1, x_axis, f1_axis, "no evaluation yet")
    write_png(out, img)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.curves", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help=f"a run directory holding {METRICS_FILE}")
    parser.add_argument("--out", type=Path, help="where to write the PNG (default: RUN_DIR/curves.png)")
    args = parser.parse_args(argv)
    print(plot_run(args.run_dir, args.out))


if __name__ == "__main__":
    main(sys.argv[1:])
