"""What a run is trained from, recorded in run.json so that a resume on other data or other base weights is refused
rather than mixing two trainings in one run: the data folder as resolved (--data, $CONLL_DIR or data/conll2003/),
the sha256 of its train and valid files, and a fingerprint of the base checkpoint's weights."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from model.loading import weight_files

DATA_FILES = ("train.txt", "valid.txt")
SAMPLES, SAMPLE_BYTES = 16, 64 * 1024  # read from each weights file, spread evenly over its data


def run_sources(data_dir: Path, model_dir: str | Path) -> dict[str, str]:
    """The data folder, the sha256 of each of its DATA_FILES, and the fingerprint of the weights in `model_dir`."""
    sources = {"data": str(data_dir.resolve())}
    for name in DATA_FILES:
        with open(data_dir / name, "rb") as f:
            sources[name] = hashlib.file_digest(f, "sha256").hexdigest()
    sources["weights"] = weights_fingerprint(Path(model_dir))
    return sources


def weights_fingerprint(model_dir: Path) -> str:
    """sha256 of each safetensors file's name, size, header and SAMPLES blocks of SAMPLE_BYTES spread over its data.

    The header lists every tensor's name, dtype, shape and offset, so models of another shape differ there. Two
    checkpoints of one shape (a base model and its instruct version, two fine-tunes) differ in nearly every weight,
    so blocks spread over the data tell them apart. Hashing all of a 1B model's 2.5 GB at every start would take
    seconds; this reads about a MiB per file. A change confined to a few tensors between the blocks passes unseen.
    """
    digest = hashlib.sha256()
    for file in weight_files(model_dir):
        size = file.stat().st_size
        digest.update(f"{file.name} {size}\n".encode())
        with open(file, "rb") as f:
            header_size = int.from_bytes(f.read(8), "little")
            digest.update(f.read(header_size))
            start, spread = 8 + header_size, max(size - 8 - header_size - SAMPLE_BYTES, 0)
            for offset in sorted({start + spread * i // (SAMPLES - 1) for i in range(SAMPLES)}):
                f.seek(offset)
                digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()


def changed_sources(started: dict[str, Any] | None, now: dict[str, str], model: str) -> list[str]:
    """What differs between the sources a run started from and `now`, in words; empty when nothing does."""
    if started is None:
        return ["data and base weights not recorded (the run was started by an older llama-ner)"]
    changed = []
    if started.get("data") != now["data"]:
        changed.append(f"the data folder (was {started.get('data')}, now {now['data']})")
    changed += [f"{name} in {now['data']} (its content)" for name in DATA_FILES if started.get(name) != now[name]]
    if started.get("weights") != now["weights"]:
        changed.append(f"the base weights in {model} (another model than the run started from)")
    return changed
