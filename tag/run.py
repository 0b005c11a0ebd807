"""Load a trained run for tagging: the base checkpoint, the tuned tensors of the best evaluation, the tokenizer,
as the predictor that training evaluated with (predictor/)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lora.inject import lora_modules, merge_lora
from model import load_tokenizer
from predictor.build import base_tagger
from predictor.device import resolve_device
from predictor.predictor import Predictor
from predictor.run_dir import load_tuned, read_tagging, tuned_path
from tag.quantize import quantize_int8, use_int8


def load_run(run_dir: str | Path, device: str = "auto", model: str | None = None, merge: bool = True,
             int8: bool | None = False) -> Predictor:
    """The trained tagger of a run directory, in eval mode. `model` overrides the base checkpoint path.

    With `merge` (for tagging) every LoRA update is folded into its frozen weight, W + (alpha / r) B A, so a
    forward pass costs what the base model's does; `merge=False` keeps the adapters apart (for the PEFT export).
    `int8` quantizes the merged linear layers (tag/quantize.py): True, False, or None for the CPU default.
    """
    run_dir = Path(run_dir)
    settings, labels = read_tagging(run_dir)
    if model:
        settings = dataclasses.replace(settings, model=model)
    tuned_path(run_dir, settings.finetune)  # before the base checkpoint loads: a run that kept nothing yet
    resolved = resolve_device(device)
    tagger = base_tagger(settings, len(labels), resolved)
    load_tuned(tagger, run_dir, settings.finetune)
    if merge and lora_modules(tagger):
        merge_lora(tagger)
    int8 = use_int8(int8, resolved)
    if int8:
        if not merge:
            raise ValueError("int8 quantizes the merged weights; it cannot keep the adapters apart (merge=False)")
        quantize_int8(tagger)
    return Predictor(tagger.eval(), load_tokenizer(settings.model), labels, settings, resolved, int8)
