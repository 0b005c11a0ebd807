"""Rotary position embeddings (RoPE, Su et al. 2021, "RoFormer"), with Llama 3's frequency scaling.

A pair of channels (i, i + d/2) of every query and key is rotated by the angle `position * inv_freq[i]`, so the
dot product of a query and a key depends only on their distance. HF checkpoints store q/k rows in this
"rotate-half" pairing (channel i with channel i + d/2, not 2i with 2i+1), so we use it too and load their
weights unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model.config import LlamaConfig, RopeScaling


def rope_inv_freq(head_dim: int, theta: float, scaling: RopeScaling | None) -> torch.Tensor:
    """inv_freq[i] = theta^(-2i/d), i < d/2, rescaled per Llama 3 when `scaling` is given. Always float32, CPU."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    if scaling is None:
        return inv_freq
    # Llama 3 (Meta's reference `apply_scaling`): wavelengths longer than original_context / low_freq_factor are
    # stretched by `factor`, those shorter than original_context / high_freq_factor are kept, and the band in
    # between blends the two linearly in original_context / wavelength.
    context = scaling.original_max_position_embeddings
    wavelen = 2 * math.pi / inv_freq
    low_freq_wavelen = context / scaling.low_freq_factor
    high_freq_wavelen = context / scaling.high_freq_factor
    smooth = (context / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
    blended = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, blended)
    return torch.where(wavelen < high_freq_wavelen, inv_freq, scaled)


class RotaryEmbedding(nn.Module):
    """Turns position ids into the cos/sin tables that `apply_rotary` uses."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        # Built on the CPU explicitly so it is real even when the model is created on the meta device for loading.
        inv_freq = rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids (*tokens) -> cos, sin of shape (*tokens, head_dim), float32."""
        angles = position_ids.float()[..., None] * self.inv_freq  # (*tokens, hd/2)
        angles = torch.cat((angles, angles), dim=-1)  # (*tokens, hd): channel i and i + hd/2 share an angle
        return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension: a 90° turn of every channel pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (*tokens, heads, hd) by the per-token angles in cos/sin (*tokens, hd)."""
    cos = cos.unsqueeze(-2).to(x.dtype)  # (*tokens, 1, hd), broadcast over heads
    sin = sin.unsqueeze(-2).to(x.dtype)
    return x * cos + rotate_half(x) * sin
