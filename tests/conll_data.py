"""Where the tests find the real datasets (CoNLL-2003, WNUT-17): $CONLL_DIR and $WNUT_DIR, else shared/ beside the
checkout; never in the repo. A test that needs one and does not find it fails, naming the folder: none skips."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CONLL = Path(os.environ.get("CONLL_DIR") or SHARED / "conll2003")
WNUT = Path(os.environ.get("WNUT_DIR") or SHARED / "wnut17")
needs_conll = pytest.mark.usefixtures("conll_dir")  # conftest.py: fails when CONLL lacks the files
needs_wnut = pytest.mark.usefixtures("wnut_dir")


def require(folder: Path, name: str, variable: str) -> Path:
    """`folder` if it holds train.txt and valid.txt; else the calling test fails with one line saying what to do."""
    missing = [split for split in ("train.txt", "valid.txt") if not (folder / split).is_file()]
    if missing:
        pytest.fail(f"{name} is not at {folder} (no {', '.join(missing)}): the test needs its original files, which "
                    f"are never committed; put them there or set ${variable} to their folder", pytrace=False)
    return folder


def slice_conll(source: Path, out: Path, sentences: int) -> Path:
    """The first `sentences` sentences of a CoNLL file (documents and -DOCSTART- lines kept as they are)."""
    blocks = source.read_text().split("\n\n")
    kept, count = [], 0
    for block in blocks:
        kept.append(block)
        if not block.startswith("-DOCSTART-"):
            count += 1
        if count == sentences:
            break
    out.write_text("\n\n".join(kept) + "\n\n")
    return out


def records(run_dir: Path, kind: str) -> list[dict]:
    """The records of one type ("train", "eval", "subset_eval") of a run's metrics.jsonl, in order."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]
