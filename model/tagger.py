"""Token classification on top of the Llama backbone: one label per token from the final hidden state.

The vocabulary projection is never computed: a tagger needs num_labels scores per token, not 49k or 128k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.llama import Llama
from model.padding_free import RealTokens

IGNORE_INDEX = -100  # label of positions that carry no loss: padding, non-first subtokens, context tokens


def labelled_positions(labels: torch.Tensor) -> torch.Tensor:
    """(M,) long: the flat positions of `labels` (any shape) that carry a label (!= IGNORE_INDEX), in order. Their
    number is data-dependent: on a GPU, finding them waits for the device, so batches find them on the host."""
    return (labels.flatten() != IGNORE_INDEX).nonzero().squeeze(1)


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over the positions that carry a label (labels != IGNORE_INDEX), in float32: a bf16 log-softmax
    would round the loss. logits (..., num_labels) and labels (...): (B, T, L) and (B, T), or (N, L) and (N,).
    The unlabelled positions are skipped by `ignore_index`, not by selecting the labelled ones, whose number only the
    device knows."""
    return F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE_INDEX,
                           reduction=reduction)


class Tagger(nn.Module):
    """backbone -> dropout -> Linear(hidden, num_labels). Whether the backbone is bidirectional is its config's
    `causal` flag (and `bidirectional_top_layers`); `build_tagger` in `train/build.py` sets it, bidirectional by
    default."""

    def __init__(self, backbone: Llama, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.config.hidden_size, num_labels)
        # Small weights (HF's initializer_range), zero bias: the untrained head predicts near-uniform labels
        # instead of large random logits that the first steps would spend undoing.
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                tokens: RealTokens | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T, num_labels) logits. attention_mask and tokens: as `Llama.forward` takes them."""
        hidden = self.backbone(input_ids, attention_mask, tokens)
        return self.head(self.dropout(hidden))

    def loss(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        reduction: str = "mean",
        tokens: RealTokens | None = None,
        labelled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`labelled_cross_entropy` of the batch; the head runs on the labelled positions alone.

        labelled (M,): the flat (B * T) positions of the labels != IGNORE_INDEX, in order, as data.batching's
        `collate` lists them on the host; None: found here, which waits for the device."""
        hidden = self.backbone(input_ids, attention_mask, tokens)  # (B, T, C)
        if labelled is None:
            labelled = labelled_positions(labels)
        logits = self.head(self.dropout(hidden.flatten(0, 1)[labelled]))  # (M, num_labels)
        return labelled_cross_entropy(logits, labels.flatten()[labelled], reduction)
