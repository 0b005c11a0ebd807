"""Token classification on top of the Llama backbone: one label per token from the final hidden state.

The vocabulary projection is never computed: a tagger needs num_labels scores per token, not 49k or 128k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.llama import Llama

IGNORE_INDEX = -100  # label of positions that carry no loss: padding, non-first subtokens, context tokens


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over the positions that carry a label (labels != IGNORE_INDEX), in float32: a bf16 log-softmax
    would round the loss. logits (..., num_labels) and labels (...): (B, T, L) and (B, T), or (N, L) and (N,)."""
    labelled = labels != IGNORE_INDEX
    return F.cross_entropy(logits[labelled].float(), labels[labelled], reduction=reduction)


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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T, num_labels) logits."""
        hidden = self.backbone(input_ids, attention_mask)
        return self.head(self.dropout(hidden))

    def loss(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """`labelled_cross_entropy` of the batch; the head runs on the labelled positions alone."""
        hidden = self.backbone(input_ids, attention_mask)
        labelled = labels != IGNORE_INDEX
        logits = self.head(self.dropout(hidden[labelled]))  # (N, num_labels)
        return labelled_cross_entropy(logits, labels[labelled], reduction)
