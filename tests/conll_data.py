"""Where the tests find the real datasets (CoNLL-2003, WNUT-17): in shared/ beside the checkout, never in the repo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONLL = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003"
needs_conll = pytest.mark.skipif(not (CONLL / "train.txt").exists(),
                                 reason=f"CoNLL-2003 is not at {CONLL} (it is never committed to the repo)")
WNUT = CONLL.parent / "wnut17"
needs_wnut = pytest.mark.skipif(not (WNUT / "train.txt").exists(),
                                reason=f"WNUT-17 is not at {WNUT} (it is never committed to the repo)")


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
