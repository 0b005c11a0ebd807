"""Grouped-query self-attention (Ainslie et al. 2023, "GQA") and the masks that decide who sees whom.

Whether attention is causal is an explicit flag of each layer, and the mask is built here from that flag and the
batch's padding, in one place, so no hidden default can turn a "bidirectional" model back into a causal one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import LlamaConfig
from model.rope import apply_rotary
from model.token_layout import TokenLayout


def build_attention_mask(attention_mask: torch.Tensor | None, causal: bool) -> torch.Tensor | None:
    """Boolean mask (B, 1, T, T), True where query i may attend to key j; None means "no padding".

    `attention_mask` (B, T) holds 0 for padding and a positive segment id for real tokens: 0/1 for an ordinary
    padded batch, 1, 2, 3, ... when several sequences are packed into one row. A token attends only to real
    tokens of its own segment (and, when causal, only to those at or before it). A padding query has no real key
    to look at; it attends to itself alone so softmax stays finite, and no real token ever sees it.
    """
    if attention_mask is None:
        return None
    segments = attention_mask.long()
    if bool((segments == 1).all()):
        return None  # one unpadded sequence per row: the flag alone decides, and SDPA takes its fastest path
    B, T = segments.shape
    same_segment = segments[:, :, None] == segments[:, None, :]  # (B, T, T)
    allowed = same_segment & (segments[:, None, :] != 0)
    if causal:
        allowed = allowed & torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    allowed = allowed | torch.eye(T, dtype=torch.bool, device=segments.device)
    return allowed[:, None]  # (B, 1, T, T), broadcast over heads


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

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        layout: TokenLayout,
    ) -> torch.Tensor:
        """x (*tokens, C): the (B, T) grid, or the N real tokens when `layout` unpads; cos/sin (*tokens, hd);
        mask from `build_attention_mask(..., self.causal)` or None."""
        q = self.q_proj(x).unflatten(-1, (self.num_heads, self.head_dim))  # (*tokens, nh, hd)
        k = self.k_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim))  # (*tokens, n_kv, hd)
        v = self.v_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim))  # (*tokens, n_kv, hd)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k, v = (layout.pad(t).transpose(1, 2) for t in (q, k, v))  # (B, heads, T, hd)
        # GQA: each group of num_heads / num_kv_heads query heads shares one key/value head.
        group = self.num_heads // self.num_kv_heads
        k = k.repeat_interleave(group, dim=1)  # (B, nh, T, hd)
        v = v.repeat_interleave(group, dim=1)
        # softmax(q k^T / sqrt(hd)) v (Vaswani et al. 2017). With no mask, is_causal alone decides.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal and mask is None)
        y = layout.unpad(y.transpose(1, 2)).flatten(-2)  # (*tokens, nh * hd)
        return self.o_proj(y)
