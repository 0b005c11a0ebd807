"""Attention over the jagged stack of a batch's real tokens, without going back to a padded grid.

The (N, heads, hd) stack and the rows' offsets are what flash-attention's "varlen" kernels take (cu_seqlens): each
query attends to the keys of its own row, and no work is spent on padding. PyTorch reaches those kernels through
SDPA on a nested tensor of jagged layout (NJT): on CUDA it dispatches to the flash or the memory-efficient varlen
kernel; on a CPU to the math kernel, one sentence at a time. The formula is `padded_attention`'s
(model/padding_free.py); only where the rows' boundaries are kept differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def jagged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: torch.Tensor, min_len: int,
                     max_len: int) -> torch.Tensor:
    """Bidirectional attention within each row. q (N, nh, hd), k and v (N, n_kv, hd), offsets (B + 1,) with
    row b at offsets[b] : offsets[b + 1] -> (N, nh, hd).

    min_len and max_len are the shortest and the longest row, from the host: a nested tensor that lacks them
    computes them from the offsets, which waits for the device."""
    # The jagged kernels take no groups (SDPA's enable_gqa is for dense tensors), so each key/value head is
    # repeated for its group of nh / n_kv query heads.
    groups = q.shape[1] // k.shape[1]
    k, v = (t.repeat_interleave(groups, dim=1) for t in (k, v))  # (N, nh, hd)
    q, k, v = (torch.nested.nested_tensor_from_jagged(t, offsets, min_seqlen=min_len, max_seqlen=max_len)
               .transpose(1, 2) for t in (q, k, v))  # (B, nh, j, hd), j the jagged row length
    y = F.scaled_dot_product_attention(q, k, v)  # (B, nh, j, hd)
    return y.transpose(1, 2).values()  # (N, nh, hd)
