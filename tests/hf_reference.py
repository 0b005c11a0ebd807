"""Helpers that build Hugging Face reference models for the tests (transformers is a test-only dependency)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM


def make_hf_checkpoint(folder: Path, seed: int = 0, **hf_config) -> Path:
    """Write a random-weight HF `LlamaForCausalLM` as safetensors into `folder` and return it.

    Every parameter, norms included, is drawn at random so a wrong norm, a swapped projection or a missing
    bias-free assumption shows up in the logits.
    """
    torch.manual_seed(seed)
    config = HFLlamaConfig(**hf_config)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def load_hf(folder: Path, causal: bool = True) -> LlamaForCausalLM:
    """Load the HF reference in float32, causal or bidirectional (transformers 5 reads `config.is_causal`)."""
    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
    model.config.is_causal = causal
    return model.eval()
