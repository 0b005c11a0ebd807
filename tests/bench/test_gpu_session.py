"""bench/gpu_session.sh's plumbing on this CPU, without its steps' work: flags, the data check, and the deadline that
skips what no longer fits while the summary table is still printed. (Its whole dry run takes minutes: run by hand,
docs/performance.md#one-gpu-session-benchgpu_sessionsh.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_session.sh"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_an_unknown_flag_is_one_clear_line():
    done = run("--dry-rn")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "gpu_session.sh: unknown argument --dry-rn (see the comment at the top)"]


def test_data_without_its_files_is_one_clear_line(tmp_path):
    done = run("--dry-run", "--data", str(tmp_path), "--logs", str(tmp_path / "logs"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"--data {tmp_path}: no train.txt and valid.txt there"


def test_steps_past_the_deadline_are_skipped_and_the_table_still_printed(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid"):
        (data / f"{split}.txt").write_text("EU B-ORG\n\n")
    done = run("--dry-run", "--minutes", "0", "--data", str(data), "--logs", str(tmp_path / "logs"))
    assert done.returncode == 0
    table = done.stdout.strip().splitlines()
    assert table[:2] == ["| step | result | wall |", "|---|---|---|"]
    steps = ("env", "model", "bench", "train", "eval", "compiled")
    assert table[2:] == [f"| {step} | skipped: the deadline was near | - |" for step in steps]
