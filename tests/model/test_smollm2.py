"""Real weights: the SmolLM2-135M checkpoint written by our converter gives HF's logits and HF's greedy text."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from model import load_llama, load_tokenizer

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def ours(smollm2_dir):
    return load_llama(smollm2_dir).eval()


@pytest.fixture(scope="module")
def hf(smollm2_dir):
    return LlamaForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return load_tokenizer(smollm2_dir)


@torch.no_grad()
def greedy(step, ids: list[int], new_tokens: int) -> list[int]:
    """Greedy decoding without a cache: recompute the whole prefix for every new token."""
    for _ in range(new_tokens):
        ids = ids + [int(step(torch.tensor([ids]))[0, -1].argmax())]
    return ids


def test_real_logits_equal_hf_on_a_padded_batch(ours, hf, tokenizer):
    texts = ["EU rejects German call to boycott British lamb .", PROMPT, "Peter Blackburn"]
    encoded = [tokenizer.encode(t) for t in texts]
    T = max(map(len, encoded))
    ids = torch.tensor([e + [tokenizer.pad_id] * (T - len(e)) for e in encoded])
    mask = torch.tensor([[1] * len(e) + [0] * (T - len(e)) for e in encoded])
    with torch.no_grad():
        ours_logits = ours.lm_head(ours(ids, mask))
        ref = hf(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    scale = ref[real].abs().max()
    assert (ours_logits[real] - ref[real]).abs().max() <= 1e-4 * scale


def test_greedy_generation_matches_hf_and_knows_paris(ours, hf, tokenizer):
    prompt = tokenizer.encode(PROMPT)
    ours_ids = greedy(lambda x: ours.lm_head(ours(x)), prompt, 20)
    hf_ids = greedy(lambda x: hf(input_ids=x).logits, prompt, 20)
    assert ours_ids == hf_ids
    assert "Paris" in tokenizer.decode(ours_ids[len(prompt):])
