"""The tiny Llama shape that tests build in memory: small enough to run many times in a test, with every feature of
the real ones (grouped-query attention, a gated MLP, rotary positions)."""

from __future__ import annotations

import torch

from model.config import LlamaConfig
from model.llama import Llama
from model.tagger import Tagger

TINY = LlamaConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                   intermediate_size=48, rope_theta=10000.0, max_position_embeddings=64, causal=False)


def tiny_tagger(seed: int = 0, **changes) -> Tagger:
    """A bidirectional tagger of the `TINY` shape (`changes` replace its fields) with 9 labels, no dropout, random
    weights drawn from `seed`."""
    torch.manual_seed(seed)
    return Tagger(Llama(TINY.replace(**changes)), num_labels=9, dropout=0.0)
