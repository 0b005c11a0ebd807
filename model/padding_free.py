"""Padding-free execution: every layer but attention runs on the batch's real tokens only.

A batch of sentences padded to its longest is often half padding (CoNLL sentences in random batches). The
embedding, the norms, the projections and the MLP, nearly all of the FLOPs, act on each token alone, so the model
runs them on the (N, C) stack of the batch's N real tokens. Attention alone mixes tokens, within each sentence:
`RealTokens.attend` computes it either on the (B, T) grid of sentences, with a mask that hides the padding
(`padded_attention`), or on the jagged stack itself (`jagged_attention`, model/jagged_attention.py), which on CUDA
runs flash-attention's "varlen" kernels and never builds the grid.

The layout is built on the host, where the batch is built (`RealTokens.from_lengths`, called by data.batching's
`collate`): the rows' lengths are known there, so no forward pass has to ask the device which tokens are real (a
`nonzero` or a `bool(mask.all())` waits for every kernel queued before it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from model.jagged_attention import jagged_attention


@dataclass(frozen=True)
class RealTokens:
    """The N real tokens of a (B, T) batch padded on the right: where they sit on its grid, and attention within each
    sentence. Sizes are host integers; the tensors live where the batch does (`to`)."""

    lengths: tuple[int, ...]  # B host ints: real tokens of each row, a prefix of it
    length: int  # T, the padded length
    index: torch.Tensor | None  # (N,) flat grid positions of the real tokens; None: nothing is padding
    is_real: torch.Tensor | None  # (B, T) bool; None: nothing is padding
    offsets: torch.Tensor  # (B + 1,) long: row b is real tokens offsets[b] : offsets[b + 1] of the (N, ...) stack
    # Attention on the jagged stack (True) or on the padded grid (False). None: by device, jagged on CUDA, the grid
    # elsewhere (a CPU computes the masked grid faster than the jagged stack, docs/performance.md).
    jagged: bool | None = None

    @classmethod
    def from_lengths(cls, lengths: Sequence[int], length: int, jagged: bool | None = None) -> RealTokens:
        """The layout of rows holding lengths[b] real tokens each, padded to `length`; tensors on the CPU."""
        lengths = tuple(int(n) for n in lengths)
        if any(not 0 <= n <= length for n in lengths):
            raise ValueError(f"row lengths {lengths} do not fit a padded length of {length}")
        offsets = torch.tensor((0, *lengths)).cumsum(0)  # (B + 1,)
        if all(n == length for n in lengths):
            return cls(lengths, length, None, None, offsets, jagged)
        is_real = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
        return cls(lengths, length, is_real.flatten().nonzero().squeeze(1), is_real, offsets, jagged)

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor | None, batch: int, length: int) -> RealTokens:
        """The layout of a 0/1 right-padding mask (B, T), on the mask's device; None: nothing is padding.

        Reading the mask waits for the device: a training step passes the layout its batch built instead."""
        if attention_mask is None:
            return cls.from_lengths([length] * batch, length)
        tokens = cls.from_lengths(attention_mask.sum(1).tolist(), length)
        return tokens.to(attention_mask.device)

    @property
    def count(self) -> int:
        """N, the number of real tokens."""
        return sum(self.lengths)

    def to(self, device: torch.device | str) -> RealTokens:
        """The same layout with its tensors on `device`, copied without waiting (the sizes stay on the host)."""
        index, is_real, offsets = (None if t is None else t.to(device, non_blocking=True)
                                   for t in (self.index, self.is_real, self.offsets))
        return replace(self, index=index, is_real=is_real, offsets=offsets)

    def select(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...), the real tokens in row-major order."""
        x = x.flatten(0, 1)  # (B * T, ...)
        return x if self.index is None else x[self.index]

    def scatter(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...), zeros at padding. Autograd keeps only the index for the backward pass."""
        if self.index is not None:
            grid = x.new_zeros(len(self.lengths) * self.length, *x.shape[1:])
            grid[self.index] = x
            x = grid
        return x.unflatten(0, (len(self.lengths), self.length))

    # Kept out of compiled graphs (train/build.compile_blocks): the layout changes with every batch, and a graph that
    # read it would be recompiled for each one. Attention is one fused SDPA kernel already; what compiling fuses is
    # the per-token work around it, whose only varying size, N, the compiler treats as dynamic.
    @torch.compiler.disable
    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool) -> torch.Tensor:
        """softmax(q k^T / sqrt(hd)) v (Vaswani et al. 2017) among the real tokens of each sentence.

        q (N, nh, hd), k and v (N, n_kv, hd) -> (N, nh, hd). With grouped-query attention (Ainslie et al. 2023)
        each group of nh / n_kv query heads shares one key/value head."""
        jagged = q.is_cuda if self.jagged is None else self.jagged
        # Causal layers stay on the grid: the jagged path's only CPU kernel (math) refuses is_causal, so it could not
        # be checked against the grid here. Unpadded batches need neither a mask nor a jagged layout.
        if jagged and not is_causal and self.index is not None:
            return jagged_attention(q, k, v, self.offsets, min(self.lengths), max(self.lengths))
        return padded_attention(self, q, k, v, is_causal)


def padding_mask(tokens: RealTokens, is_causal: bool) -> torch.Tensor | None:
    """Boolean, True where query i may attend to key j: real keys only, and only j <= i when causal.

    (B, 1, 1, T), or (B, 1, T, T) when causal; None when nothing is padding, and SDPA's `is_causal` alone decides, on
    its fastest path. A query with no key to see (a pad query before the first real token) gets zeros from SDPA, not
    NaN, and its output is dropped."""
    if tokens.is_real is None:
        return None
    allowed = tokens.is_real[:, None, None, :]  # (B, 1, 1, T): keys, broadcast over heads and queries
    if is_causal:
        allowed = allowed & torch.ones(tokens.length, tokens.length, dtype=torch.bool, device=allowed.device).tril()
    return allowed


def padded_attention(tokens: RealTokens, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     is_causal: bool) -> torch.Tensor:
    """Attention on the (B, T) grid: q, k, v scattered to it, SDPA with the padding mask, the real tokens taken out.
    q (N, nh, hd), k and v (N, n_kv, hd) -> (N, nh, hd); GQA through SDPA's `enable_gqa`."""
    q, k, v = (tokens.scatter(t).transpose(1, 2) for t in (q, k, v))  # (B, heads, T, hd)
    mask = padding_mask(tokens, is_causal)
    if mask is not None and q.is_cuda:
        # CUDA's fused kernel for masks (memory-efficient attention) takes no groups: enable_gqa would fall back to
        # the unfused math kernel, so each key/value head is repeated for its group instead.
        k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))  # (B, nh, T, hd)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
                                       enable_gqa=True)  # (B, nh, T, hd)
    return tokens.select(y.transpose(1, 2))  # (N, nh, hd)
