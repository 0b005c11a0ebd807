"""Load a trained run for tagging: the base checkpoint, the tuned tensors of the best evaluation, the tokenizer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from data.labels import LabelSet
from lora.inject import lora_modules, merge_lora
from lora.io import WEIGHTS_NAME
from model import load_tokenizer
from model.files import current_folder
from model.tagger import Tagger
from model.tokenizer import Tokenizer
from tag.quantize import quantize_int8, use_int8
from train.build import build_tagger, keep_trainable_in_float32
from train.config import TrainConfig
from train.device import resolve_device, use_bf16
from train.run_dir import ADAPTER_DIR, load_tuned, read_run_info, tuned_files

OLD_LAYOUT = (", or it was written by an older llama-ner, which kept the adapter files at the top of the run "
              f"directory: move adapter.safetensors and adapter_config.json into {ADAPTER_DIR}/")


@dataclass
class LoadedRun:
    tagger: Tagger  # in eval mode
    tokenizer: Tokenizer
    config: TrainConfig
    labels: LabelSet
    device: torch.device
    int8: bool = False  # the transformer blocks' linear layers run in int8 (tag/quantize.py)

    @property
    def bf16(self) -> bool:
        return use_bf16(self.config.precision, self.device)


def load_run(run_dir: str | Path, device: str = "auto", model: str | None = None, merge: bool = True,
             int8: bool | None = False) -> LoadedRun:
    """Rebuild the trained tagger of a run directory. `model` overrides the base checkpoint path.

    With `merge` (for tagging) every LoRA update is folded into its frozen weight, W + (alpha / r) B A, so a
    forward pass costs what the base model's does; `merge=False` keeps the adapters apart (for the PEFT export).
    `int8` quantizes the merged linear layers (tag/quantize.py): True, False, or None for the CPU default.
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    config = dataclasses.replace(info["config"], model=model or info["model"])
    for name in tuned_files(config):
        if not current_folder(run_dir / name).exists():  # also a folder a kill left aside (model/files.py)
            raise FileNotFoundError(f"{run_dir / name}: missing; the run has not finished an evaluation yet"
                                    + (OLD_LAYOUT if (run_dir / WEIGHTS_NAME).exists() else ""))
    resolved = resolve_device(device)
    tagger = build_tagger(config, len(info["labels"]), resolved, with_lora=False)
    load_tuned(tagger, run_dir, config)
    keep_trainable_in_float32(tagger)
    if merge and lora_modules(tagger):
        merge_lora(tagger)
    int8 = use_int8(int8, resolved)
    if int8:
        if not merge:
            raise ValueError("int8 quantizes the merged weights; it cannot keep the adapters apart (merge=False)")
        quantize_int8(tagger)
    return LoadedRun(tagger.eval(), load_tokenizer(config.model), config, LabelSet(tuple(info["labels"])),
                     resolved, int8)
