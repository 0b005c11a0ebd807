"""The FLOPs torch counts (`FlopCounterMode`) in a Llama's forward, or forward and backward, over real sentences.

FlopCounterMode counts the matmuls that run (mm, addmm, bmm) and the attention kernels it has a formula for. On a
CPU, torch 2.13 dispatches SDPA to `_scaled_dot_product_flash_attention_for_cpu`, which has none and counts 0; the
MATH backend computes attention with plain bmm and softmax, which it counts. On the meta device (no kernels at
all) SDPA runs as the MATH composite too, so a large shape is counted without allocating its weights.
Each sentence runs as a batch of one, unpadded: every token attends exactly its sentence.
"""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from model.llama import Llama


def counted_flops(model: Llama, sentences: list[torch.Tensor], backward: bool = False) -> dict[str, int]:
    """FLOPs per aten op ("mm", "bmm", ...) of `model` over `sentences` (1-D token ids), forward (and backward)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        for ids in sentences:
            hidden = model(ids[None])  # (1, n, C)
            if backward:
                hidden.square().mean().backward()
    return {str(op).removeprefix("aten."): flops for op, flops in counter.get_flop_counts()["Global"].items()}


def random_sentences(lengths: list[int], vocab_size: int, device: str = "cpu") -> list[torch.Tensor]:
    return [torch.randint(0, vocab_size, (n,), device=device) for n in lengths]
