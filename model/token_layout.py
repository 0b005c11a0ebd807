"""Padding-free execution: the per-token layers run on the real tokens only.

A batch of sentences padded to its longest is often mostly padding (about a third real tokens for CoNLL
sentences in random batches). The projections, the MLP and the norms, nearly all of the FLOPs, act on each token
alone, so they run on the (N, C) stack of the N real tokens; only attention needs the (B, T) grid, and gets it
by a scatter before and a gather after. This is the idea behind flash-attention's "varlen" kernels and
padding-free training in other libraries, done with plain indexing.
"""

from __future__ import annotations

import torch


class TokenLayout:
    """Maps between the (B, T, ...) grid of a batch and the (N, ...) stack of its real tokens."""

    def __init__(self, attention_mask: torch.Tensor | None, batch: int, length: int):
        self.batch, self.length = batch, length
        self.index: torch.Tensor | None = None  # flat positions of real tokens; None: nothing is padding
        if attention_mask is not None and not bool(attention_mask.all()):
            self.index = attention_mask.flatten().nonzero().squeeze(1)  # (N,)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...); unchanged when nothing is padding."""
        if self.index is None:
            return x
        return x.flatten(0, 1)[self.index]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...) with zeros at padding; unchanged when nothing is padding."""
        if self.index is None:
            return x
        grid = Scatter.apply(x, self.index, self.batch * self.length)  # (B * T, ...)
        return grid.view(self.batch, self.length, *x.shape[1:])


class Scatter(torch.autograd.Function):
    """x (N, ...) -> (rows, ...), zeros except x at `index`. Its gradient only gathers rows back, so only the index
    is kept for backward: autograd's own index_copy would also keep x, a copy of q, k, v per layer."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor, rows: int) -> torch.Tensor:
        ctx.save_for_backward(index)
        return x.new_zeros(rows, *x.shape[1:]).index_copy_(0, index, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None
