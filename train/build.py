"""The tagger a run trains: the base checkpoint, a head, and LoRA (or every weight) made trainable."""

from __future__ import annotations

import torch

from lora.inject import inject_lora
from model import load_llama
from model.tagger import Tagger
from train.config import TrainConfig
from train.device import use_bf16


def build_tagger(
    config: TrainConfig, num_labels: int, device: torch.device, with_lora: bool = True,
    load_on: torch.device | None = None,
) -> Tagger:
    """Base checkpoint + head, with LoRA injected and everything but LoRA and head frozen; with `--finetune full`
    no LoRA and every weight trained (the reference LoRA is measured against).

    Under bf16 autocast the frozen base is stored in bf16 (half the memory, and no cast of every weight at every
    step); otherwise in float32. LoRA and the head always stay float32 so small updates are not rounded away.
    `load_on` puts the weights elsewhere than `device`, the one they will run on: FSDP loads on the CPU and
    shards onto the GPUs a model too large for one of them.
    """
    base_dtype = torch.bfloat16 if use_bf16(config.precision, device) else torch.float32
    load_on = load_on or device
    backbone = load_llama(config.model, dtype=base_dtype, device=load_on, causal=config.causal,
                          bidirectional_top_layers=config.bidirectional_top_layers)
    tagger = Tagger(backbone, num_labels, dropout=config.head_dropout).to(load_on)
    if config.finetune == "full":
        # named_parameters lists a tied lm_head once, as embed_tokens; an untied one is unused by a tagger.
        for name, p in tagger.named_parameters():
            p.requires_grad_(not name.startswith("backbone.lm_head."))
        keep_trainable_in_float32(tagger)
    elif with_lora:
        inject_lora(tagger, config.lora_targets, r=config.lora_r, alpha=config.lora_alpha,
                    dropout=config.lora_dropout, trainable=("head",))
        keep_trainable_in_float32(tagger)
    if config.compile:
        compile_blocks(tagger)
    return tagger


def compile_blocks(tagger: Tagger) -> None:
    """torch.compile each transformer block, in place (state-dict keys unchanged), for dynamic shapes: every batch
    has its own length. Per block: the FLOPs are there, and the masks and padding layout stay out of the graph."""
    for block in tagger.backbone.layers:
        block.compile(dynamic=True)


def keep_trainable_in_float32(tagger: Tagger) -> None:
    for p in tagger.parameters():
        if p.requires_grad:
            p.data = p.data.float()
