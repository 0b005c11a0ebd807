"""The tagger a run trains: the base checkpoint and a head (predictor/build.py), with LoRA (or every weight) made
trainable."""

from __future__ import annotations

import torch

from lora.io import AdapterConfig
from model.tagger import Tagger
from predictor.build import base_tagger, make_trainable
from train.config import TrainConfig


def build_tagger(
    config: TrainConfig, num_labels: int, device: torch.device, load_on: torch.device | None = None,
) -> Tagger:
    """Base checkpoint + head, with LoRA injected and everything but LoRA and head frozen; with `--finetune full`
    no LoRA and every weight trained (the reference LoRA is measured against). LoRA and the head always stay
    float32 so small updates are not rounded away. `load_on`: see predictor.build.base_tagger."""
    tagger = base_tagger(config.tagging(), num_labels, device, load_on)
    adapter = AdapterConfig(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
                            targets=tuple(config.lora_targets), extra=("head",))
    make_trainable(tagger, config.finetune, adapter)
    if config.compile:
        compile_blocks(tagger)
    return tagger


def compile_blocks(tagger: Tagger) -> None:
    """torch.compile each transformer block, in place (state-dict keys unchanged): the norms, rotary, the LoRA
    casts and SwiGLU's elementwise work fuse around the matmuls. Attention runs between two compiled graphs, outside
    them (`RealTokens.attend`), so no graph depends on the batch's layout; the number of real tokens N is a dynamic
    size. A run compiles a few graphs in its first steps (with and without gradients, the first block, whose input
    needs none, and the others) and no more, whatever its batches' lengths (tests/train/test_build.py)."""
    for block in tagger.backbone.layers:
        block.compile(dynamic=True)
