"""The network a run's settings describe: the base checkpoint with a classification head on top."""

from __future__ import annotations

import torch

from lora.inject import inject_lora, trainable_parameters
from lora.io import AdapterConfig
from model import load_llama
from model.tagger import Tagger
from predictor.device import use_bf16
from predictor.settings import TaggingSettings


def base_tagger(settings: TaggingSettings, num_labels: int, device: torch.device,
                load_on: torch.device | None = None) -> Tagger:
    """The base checkpoint and a fresh head, nothing trainable added yet. Under bf16 autocast the base is stored in
    bf16 (half the memory, and no cast of every weight at every step); otherwise in float32. `load_on` puts the
    weights elsewhere than `device`, the one they will run on (FSDP loads on the CPU and shards onto the GPUs)."""
    base_dtype = torch.bfloat16 if use_bf16(settings.precision, device) else torch.float32
    load_on = load_on or device
    backbone = load_llama(settings.model, dtype=base_dtype, device=load_on, causal=settings.causal,
                          bidirectional_top_layers=settings.bidirectional_top_layers)
    return Tagger(backbone, num_labels, dropout=settings.head_dropout).to(load_on)


def make_trainable(tagger: Tagger, finetune: str, adapter: AdapterConfig | None = None) -> None:
    """Make trainable, in float32, what a run trains: with LoRA (Hu et al. 2021, arXiv:2106.09685) the adapter
    `adapter` describes and the head, the base frozen; with `full`, every weight (the reference LoRA is measured
    against). Training calls it before the first step, tagging before it loads what training kept."""
    if finetune == "full":
        # named_parameters lists a tied lm_head once, as embed_tokens; an untied one is unused by a tagger.
        for name, p in tagger.named_parameters():
            p.requires_grad_(not name.startswith("backbone.lm_head."))
    else:
        inject_lora(tagger, adapter.targets, r=adapter.r, alpha=adapter.alpha, dropout=adapter.dropout,
                    trainable=adapter.extra)
    keep_trainable_in_float32(tagger)


def keep_trainable_in_float32(tagger: Tagger) -> None:
    """LoRA and the head stay float32 over a bf16 base, so that small updates are not rounded away."""
    for p in trainable_parameters(tagger).values():
        p.data = p.data.float()
