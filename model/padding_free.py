"""Padding-free execution: every layer but attention runs on the batch's real tokens only.

A batch of sentences padded to its longest is often half padding (CoNLL sentences in random batches). The
embedding, the norms, the projections and the MLP, nearly all of the FLOPs, act on each token alone, so the model
runs them on the (N, C) stack of the batch's N real tokens. Attention alone mixes tokens: `RealTokens.attend`
puts q, k, v back on the (B, T) grid of sentences for `F.scaled_dot_product_attention`, with a mask that hides
the padding, and takes the real tokens' outputs out again. This is the idea of flash-attention's "varlen" kernels
and of padding-free training in other libraries, done with plain indexing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class RealTokens:
    """The N real tokens of a (B, T) batch: where they sit on its grid, and attention within each sentence.

    attention_mask (B, T): 1 for real tokens, 0 for padding; None when nothing is padding (then N = B * T)."""

    def __init__(self, attention_mask: torch.Tensor | None, batch: int, length: int):
        self.batch, self.length = batch, length
        self.is_real: torch.Tensor | None = None  # (B, T) bool; None: nothing is padding
        self.index: torch.Tensor | None = None  # (N,) flat grid positions of the real tokens
        if attention_mask is not None and not bool(attention_mask.all()):
            self.is_real = attention_mask.bool()
            self.index = self.is_real.flatten().nonzero().squeeze(1)

    def select(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...), the real tokens in row-major order."""
        x = x.flatten(0, 1)  # (B * T, ...)
        return x if self.index is None else x[self.index]

    def scatter(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...), zeros at padding. Autograd keeps only the index for the backward pass."""
        if self.index is not None:
            grid = x.new_zeros(self.batch * self.length, *x.shape[1:])
            grid[self.index] = x
            x = grid
        return x.unflatten(0, (self.batch, self.length))

    def attention_mask(self, is_causal: bool) -> torch.Tensor | None:
        """Boolean, True where query i may attend to key j: real keys only, and only j <= i when causal.

        (B, 1, 1, T), or (B, 1, T, T) when causal; None when nothing is padding, and SDPA's `is_causal` alone
        decides, on its fastest path. A query with no key to see (a pad query before the first real token) gets
        zeros from SDPA, not NaN, and its output is dropped."""
        if self.is_real is None:
            return None
        allowed = self.is_real[:, None, None, :]  # (B, 1, 1, T): keys, broadcast over heads and queries
        if is_causal:
            allowed = allowed & torch.ones(self.length, self.length, dtype=torch.bool, device=allowed.device).tril()
        return allowed

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool) -> torch.Tensor:
        """softmax(q k^T / sqrt(hd)) v (Vaswani et al. 2017) among the real tokens of each sentence.

        q (N, nh, hd), k and v (N, n_kv, hd) -> (N, nh, hd). With grouped-query attention (Ainslie et al. 2023)
        each group of nh / n_kv query heads shares one key/value head: SDPA's `enable_gqa`."""
        q, k, v = (self.scatter(t).transpose(1, 2) for t in (q, k, v))  # (B, heads, T, hd)
        mask = self.attention_mask(is_causal)
        if mask is not None and q.is_cuda:
            # CUDA's fused kernel for masks (memory-efficient attention) takes no groups: enable_gqa would fall
            # back to the unfused math kernel, so each key/value head is repeated for its group instead.
            k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))  # (B, nh, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
                                           enable_gqa=True)  # (B, nh, T, hd)
        return self.select(y.transpose(1, 2))  # (N, nh, hd)
