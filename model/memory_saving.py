"""Autograd functions that keep less for the backward pass than autograd's own composition of the same ops.

Each is here only because it pays, and its plain formula stands beside it; tests/model/test_llama.py checks the
two give the same values and gradients, and that the fast one keeps less.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def silu_mul_reference(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The plain formula: autograd keeps g, silu(g) and u for backward."""
    return F.silu(g) * u


class SiluMul(torch.autograd.Function):
    """silu(g) * u, keeping only g and u for backward and recomputing silu there. Autograd's two ops would also
    keep silu(g): one more (tokens, intermediate) tensor per layer, the widest activation of the block. What that
    saves: docs/performance.md#before-and-after-the-redesign-issue-18-same-machine-each-run-alone.

    With s = sigmoid(g): d silu(g) / dg = s * (1 + g * (1 - s))."""

    @staticmethod
    def forward(ctx, g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(g, u)
        return F.silu(g) * u

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g, u = ctx.saved_tensors
        s = torch.sigmoid(g)
        silu = g * s
        return grad * u * (s * (1 + g * (1 - s))), grad * silu
