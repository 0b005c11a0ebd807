"""A run directory holds everything needed to reload a trained tagger, and to resume its training:

    tagging.json           what tagging reads: the labels and the tagging settings (predictor/run_dir.py)
    adapter/               or finetuned.safetensors: the tuned weights of the best evaluation (predictor/run_dir.py)
    run.json               training settings, code version, and the data folder, its files' hashes and the base
                           weights' fingerprint (train/sources.py)
    checkpoint.pt          the latest resumable state (optimizer, schedule, RNG, step; train/checkpoint.py)
    metrics.jsonl          one JSON record per logged training step and per evaluation
    curves.png             loss and F1 of training and validation against the step (train/curves.py)
    .lock                  held (flock) by the training writing the directory

Training writes it (rank 0 alone); `tag/` reads only what predictor/run_dir.py names. Every file is replaced
atomically (model/files.py). Training resumes a directory of the same settings, data and base weights from its
checkpoint, and refuses any other that holds results: it never starts over on top of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data.labels import LabelSet
from model.files import atomic_file, current_folder
from predictor.run_dir import ADAPTER_DIR, FINETUNED_NAME, read_run_file, write_tagging
from train.config import TrainConfig
from train.sources import changed_sources

RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
LOCK_FILE = ".lock"


def code_version() -> str | None:
    """The git commit of this code, with "-dirty" when tracked files differ from it, so that a result in a run
    directory can be traced back to the code that made it; None outside a git checkout or without git."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def write_run_info(run_dir: Path, config: TrainConfig, labels: LabelSet, sources: dict[str, str]) -> None:
    """Start a run directory: run.json with the training settings and `sources`, what the run is trained from
    (train/sources.py `run_sources`), and tagging.json with what tagging needs."""
    write_tagging(run_dir, config.tagging(), labels)
    info = {"config": config.to_json(), "code": code_version(), "sources": sources}
    with atomic_file(run_dir / RUN_FILE) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """run.json as written by `write_run_info`, with its settings read back into a TrainConfig."""
    return read_run_file(run_dir / RUN_FILE, "run",
                         lambda info: {**info, "config": TrainConfig.from_json(info["config"])})


def log_record(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_log(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The records of a metrics.jsonl, each with its line number; blank lines are skipped.

    `log_record` appends each record as one line ending in a newline, so a kill mid-write can cut short the last
    line only: a last line without its newline that is not valid JSON is left out, with a note. Any other line
    that is not a JSON object with a "type" and a "step" is an error naming the file and line.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines) and not text.endswith("\n"):
                print(f"note: {path}:{number}: left out the last line, cut short by a kill while it was written",
                      file=sys.stderr)
                continue
            raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or "type" not in record or "step" not in record:
            raise ValueError(f"{path}:{number}: a record needs a 'type' and a 'step'")
        records.append((number, record))
    return records


def truncate_log(run_dir: Path, step: int) -> None:
    """On resume, drop records written after the checkpoint so the log reads as one uninterrupted run."""
    path = run_dir / METRICS_FILE
    if path.exists():
        kept = [record for _, record in read_log(path) if record["step"] <= step]
        with atomic_file(path) as tmp:
            tmp.write_text("".join(json.dumps(record) + "\n" for record in kept), encoding="utf-8")


def check_resumable(run_dir: Path, config: TrainConfig, sources: dict[str, str]) -> bool:
    """True when run_dir holds a checkpoint of these settings, data and base weights (`sources`); False when it
    holds no run, or one stopped before it kept anything. Otherwise an error saying what to do: training would
    mix two runs, or start over and replace results that no checkpoint can resume (the best adapter, the log)."""
    kept = [name for name in (ADAPTER_DIR, FINETUNED_NAME, METRICS_FILE, CHECKPOINT_FILE)
            if current_folder(run_dir / name).exists()]
    if not (run_dir / RUN_FILE).exists():
        if kept:
            raise ValueError(f"{run_dir} holds {', '.join(kept)} but no {RUN_FILE}, so no run can resume there; "
                             f"choose another --out")
        return False
    info = read_run_info(run_dir)
    # `out` is left out: it is run_dir itself, which may be spelled relative to another folder or absolute.
    saved = json.loads(json.dumps(info["config"].to_json()))
    wanted = json.loads(json.dumps(config.to_json()))  # as it reads back from run.json: tuples become lists
    del saved["out"], wanted["out"]
    if saved != wanted:
        changed = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
        raise ValueError(f"{run_dir} holds a run with other settings ({', '.join(changed)}); "
                         f"choose another --out or delete it")
    if not (run_dir / CHECKPOINT_FILE).exists():
        if kept:
            raise ValueError(f"{run_dir} holds the results of a run ({', '.join(kept)}) but no {CHECKPOINT_FILE} to "
                             f"resume it from, and training again would replace them; choose another --out")
        return False
    changed = changed_sources(info.get("sources"), sources, config.model)
    if changed:
        raise ValueError(f"{run_dir} was started from other data or weights: {'; '.join(changed)}; resume it with "
                         f"what it started from, or choose another --out")
    return True


@contextlib.contextmanager
def lock_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold run_dir for one training: a second one into the same directory stops at once, before it writes anything,
    instead of writing the same checkpoint. The lock (flock on LOCK_FILE) ends with the process, even a killed one."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{run_dir}: another training is writing this run directory (it holds "
                             f"{run_dir / LOCK_FILE}); wait for it to end, or choose another --out") from None
        yield
