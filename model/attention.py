"""Grouped-query self-attention (Ainslie et al. 2023, "GQA"), with rotary positions on queries and keys.

Whether a layer is causal is its own explicit flag, handed to the attention call as `is_causal`, so no hidden
default can turn a "bidirectional" model back into a causal one.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from model.config import LlamaConfig
from model.rope import apply_rotary


class Attend(Protocol):
    """Softmax attention of each token over the tokens of its own sentence: q (N, nh, hd), k and v (N, n_kv, hd)
    -> (N, nh, hd). `Llama.forward` builds it for the batch at hand (`RealTokens.attend`, model/padding_free.py)."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool) -> torch.Tensor: ...


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig, causal: bool):
        super().__init__()
        self.causal = causal
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, config.num_heads * config.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, config.num_kv_heads * config.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, config.num_kv_heads * config.head_dim, bias=False)
        self.o_proj = nn.Linear(config.num_heads * config.head_dim, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: Attend) -> torch.Tensor:
        """x (N, C): the batch's N real tokens; cos/sin (N, hd): their rotary angles. Returns (N, C)."""
        q = self.q_proj(x).unflatten(-1, (self.num_heads, self.head_dim))  # (N, nh, hd)
        k = self.k_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim))  # (N, n_kv, hd)
        v = self.v_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim))  # (N, n_kv, hd)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = attend(q, k, v, is_causal=self.causal)  # (N, nh, hd)
        return self.o_proj(y.flatten(1))  # (N, C)
