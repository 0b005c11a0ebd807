"""The part of a run directory that tagging reads, written by training and read by `tag/`:

    tagging.json           the label list, in head order, and the tagging settings (settings.py)
    adapter/               LoRA A/B of every adapted projection + the classification head, of the best evaluation
                           (adapter_config.json + adapter.safetensors, lora/io.py)
    finetuned.safetensors  instead of the adapter, with --finetune full: every trained tensor (backbone and head)

What only training reads (run.json, checkpoint.pt, metrics.jsonl) is train/run_dir.py's. Every file is replaced
atomically (model/files.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from safetensors.torch import save_file

from data.labels import LabelSet
from lora.inject import trainable_parameters
from lora.io import CONFIG_NAME, WEIGHTS_NAME, load_adapter, load_tensors_into, read_adapter_config, save_adapter
from model.files import atomic_file, atomic_folder, current_folder, read_json
from model.tagger import Tagger
from predictor.build import make_trainable
from predictor.settings import TaggingSettings

T = TypeVar("T")

TAGGING_FILE = "tagging.json"
ADAPTER_DIR = "adapter"
FINETUNED_NAME = "finetuned.safetensors"


def write_tagging(run_dir: Path, settings: TaggingSettings, labels: LabelSet) -> None:
    with atomic_file(run_dir / TAGGING_FILE) as tmp:
        tmp.write_text(json.dumps({"labels": list(labels), "settings": settings.to_json()}, indent=2) + "\n")


def read_tagging(run_dir: Path) -> tuple[TaggingSettings, LabelSet]:
    """The settings and labels of a run directory's tagging.json."""
    return read_run_file(run_dir / TAGGING_FILE, "tagging", lambda raw: (
        TaggingSettings.from_json(raw["settings"]), LabelSet(tuple(raw["labels"]))))


def read_run_file(path: Path, kind: str, parse: Callable[[Any], T]) -> T:
    """`parse` of a run directory's JSON file: a missing file means the folder is no run directory, one that does
    not parse was written by another version of llama-ner (or by hand)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a run directory (no {path.name})")
    raw = read_json(path)
    try:
        return parse(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a {kind} file of this version of llama-ner ({e})") from None


def tuned_path(run_dir: Path, finetune: str) -> Path:
    """Where a run keeps what training changed; an error when it is not there yet."""
    path = run_dir / (FINETUNED_NAME if finetune == "full" else ADAPTER_DIR)
    if not current_folder(path).exists():  # also a folder a kill left aside (model/files.py)
        raise FileNotFoundError(f"{path}: missing; the run has not finished an evaluation yet")
    return current_folder(path)


def save_tuned(tagger: Tagger, run_dir: Path, finetune: str) -> None:
    """Keep what training changed: the LoRA adapter and head, or with --finetune full every trained tensor."""
    if finetune == "lora":
        with atomic_folder(run_dir / ADAPTER_DIR, (WEIGHTS_NAME, CONFIG_NAME)) as tmp:
            save_adapter(tagger, tmp)
        return
    tensors = {name: p.detach().contiguous() for name, p in trainable_parameters(tagger).items()}
    with atomic_file(run_dir / FINETUNED_NAME) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})


def load_tuned(tagger: Tagger, run_dir: Path, finetune: str) -> None:
    """Fill `tagger` (the base and a head, as predictor.build.base_tagger builds it) with what save_tuned wrote,
    strictly, in float32 as training kept it."""
    path = tuned_path(run_dir, finetune)
    make_trainable(tagger, finetune, read_adapter_config(path) if finetune == "lora" else None)
    if finetune == "lora":
        load_adapter(tagger, path)
    else:
        load_tensors_into(path, trainable_parameters(tagger))
