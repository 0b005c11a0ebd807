"""The benchmarks' model FLOPs against torch's own count (`FlopCounterMode`) of real forward and backward passes:
a small Llama on the CPU, and the exact Llama-3.2-1B shape on the meta device."""

from __future__ import annotations

import pytest
import torch

from bench.flops import (attention_flops_per_token, forward_flops_per_token, linear_flops_per_token, mean_attended,
                         train_flops_per_token)
from model.config import PRESETS, LlamaConfig
from model.llama import Llama
from tests.bench.flop_count import counted_flops, random_sentences

# Grouped-query attention (4 query heads share 2 key/value heads), head_dim != hidden / heads, 3 layers.
SMALL = LlamaConfig(vocab_size=97, hidden_size=48, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=16,
                    intermediate_size=80, rope_theta=10000.0, max_position_embeddings=64, causal=False)
LENGTHS = [3, 7, 12]


@pytest.fixture(scope="module")
def small() -> Llama:
    torch.manual_seed(0)
    return Llama(SMALL).eval().requires_grad_(False)


def test_forward_of_a_small_llama(small):
    counts = counted_flops(small, random_sentences(LENGTHS, SMALL.vocab_size))
    tokens, attended = sum(LENGTHS), mean_attended(LENGTHS)
    # The projections are the mm's (one per weight per token); attention is the bmm's (q k^T, weights x v).
    assert counts.keys() == {"mm", "bmm"}
    assert counts["mm"] == linear_flops_per_token(SMALL) * tokens
    assert counts["bmm"] == pytest.approx(attention_flops_per_token(SMALL, attended) * tokens, rel=1e-12)
    assert sum(counts.values()) == pytest.approx(forward_flops_per_token(SMALL, attended) * tokens, rel=1e-12)


def test_forward_of_the_1b_shape_on_meta():
    config = PRESETS["llama-3.2-1b"].replace(causal=False)
    with torch.device("meta"):
        model = Llama(config)
    model.to("meta")  # the rotary table is built on the CPU on purpose
    lengths = [5, 20]
    total = sum(counted_flops(model, random_sentences(lengths, config.vocab_size, "meta")).values())
    assert total == pytest.approx(forward_flops_per_token(config, mean_attended(lengths)) * sum(lengths), rel=1e-12)


def test_training_step_with_a_frozen_base(small):
    # A frozen base with a trainable embedding: the backward pass runs through every activation (as with LoRA),
    # while the embedding's gradient is an index-add, not a matmul, so no weight gradient is counted.
    small.embed_tokens.weight.requires_grad_(True)
    try:
        counts = counted_flops(small.train(), random_sentences(LENGTHS, SMALL.vocab_size), backward=True)
    finally:
        small.embed_tokens.weight.requires_grad_(False)
        small.eval()
    expected = train_flops_per_token(SMALL, mean_attended(LENGTHS)) * sum(LENGTHS)
    assert sum(counts.values()) == pytest.approx(expected, rel=1e-12)


def test_mean_attended_is_the_keys_per_token():
    # Sentences of 1 and 3 tokens: 1 token sees 1 key, 3 tokens see 3 keys each: (1 + 9) / 4.
    assert mean_attended([1, 3]) == 2.5
