"""A run directory holds everything needed to reload a trained tagger, and to resume its training:

    run.json               training settings, label list, absolute path of the base checkpoint, code version
    adapter/               LoRA A/B of every adapted projection + the classification head, best validation F1
                           (adapter_config.json + adapter.safetensors, lora/io.py)
    finetuned.safetensors  instead of the adapter, with --finetune full: every trained tensor (backbone and head)
    checkpoint.pt          the latest resumable state (optimizer, schedule, RNG, step; train/checkpoint.py)
    metrics.jsonl          one JSON record per logged training step and per evaluation
    curves.png             loss and F1 of training and validation against the step (train/curves.py)

Training writes it (rank 0 alone), `tag/` reads it. Every file is replaced atomically (model/files.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from lora.io import CONFIG_NAME, WEIGHTS_NAME, load_adapter, load_tensors_into, save_adapter
from model.files import atomic_file, atomic_folder, current_folder, read_json
from model.tagger import Tagger
from train.config import TrainConfig

RUN_FILE = "run.json"
ADAPTER_DIR = "adapter"
FINETUNED_NAME = "finetuned.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


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


def write_run_info(run_dir: Path, config: TrainConfig, labels: list[str]) -> None:
    info = {"config": config.to_json(), "labels": labels, "model": str(Path(config.model).resolve()),
            "code": code_version()}
    with atomic_file(run_dir / RUN_FILE) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """run.json as written by `write_run_info`, with its settings read back into a TrainConfig."""
    path = run_dir / RUN_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a run directory (no {RUN_FILE})")
    info = read_json(path)
    try:
        return {**info, "config": TrainConfig.from_json(info["config"])}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a run file of this version of llama-ner ({e})") from None


def tuned_files(config: TrainConfig) -> tuple[str, ...]:
    """What training changed, as names in a run directory."""
    return (FINETUNED_NAME,) if config.finetune == "full" else (ADAPTER_DIR,)


def save_tuned(tagger: Tagger, run_dir: Path, config: TrainConfig) -> None:
    """Keep what training changed: the LoRA adapter and head, or with --finetune full every trained tensor."""
    if config.finetune != "full":
        with atomic_folder(run_dir / ADAPTER_DIR, (WEIGHTS_NAME, CONFIG_NAME)) as tmp:
            save_adapter(tagger, tmp)
        return
    tensors = {name: p.detach().contiguous() for name, p in tagger.named_parameters() if p.requires_grad}
    with atomic_file(run_dir / FINETUNED_NAME) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})


def load_tuned(tagger: Tagger, run_dir: Path, config: TrainConfig) -> None:
    """Fill `tagger` (built by build_tagger without LoRA) from what save_tuned wrote, strictly."""
    if config.finetune != "full":
        load_adapter(tagger, current_folder(run_dir / ADAPTER_DIR))
        return
    params = {name: p for name, p in tagger.named_parameters() if p.requires_grad}
    load_tensors_into(run_dir / FINETUNED_NAME, params)


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


def check_resumable(run_dir: Path, config: TrainConfig) -> bool:
    """True when run_dir holds a checkpoint of the same settings; an error when it holds another run's."""
    if not (run_dir / RUN_FILE).exists():
        return False
    # `out` is left out: it is run_dir itself, which may be spelled relative to another folder or absolute.
    saved = json.loads(json.dumps(read_run_info(run_dir)["config"].to_json()))
    wanted = json.loads(json.dumps(config.to_json()))  # as it reads back from run.json: tuples become lists
    del saved["out"], wanted["out"]
    if saved != wanted:
        changed = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
        raise ValueError(f"{run_dir} holds a run with other settings ({', '.join(changed)}); "
                         f"choose another --out or delete it")
    return (run_dir / CHECKPOINT_FILE).exists()
