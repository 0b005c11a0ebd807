"""Our Llama against HF transformers' `LlamaForCausalLM` on random weights, and the attention properties that
prove the bidirectional path is really bidirectional."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from model.config import PRESETS, LlamaConfig
from model.llama import Llama
from model.loading import load_llama
from model.memory_saving import SiluMul, silu_mul_reference
from model import padding_free
from model.jagged_attention import jagged_attention
from model.padding_free import RealTokens, padded_attention
from model.rope import rope_inv_freq
from tests.hf_reference import load_hf, make_hf_checkpoint

LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

# Tiny configs covering GQA group sizes 1, 3 and 4; the last has Llama-3.2-1B's exact head layout
# (head_dim 64, 32 heads, 8 kv heads) and its llama3 rope scaling.
HF_CONFIGS = {
    "mha-group1": dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, rope_theta=10000.0,
                       tie_word_embeddings=False, max_position_embeddings=128),
    "gqa-group3": dict(vocab_size=300, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                       num_attention_heads=6, num_key_value_heads=2, head_dim=8, rope_theta=100000.0,
                       tie_word_embeddings=True, max_position_embeddings=128),
    "llama3.2-heads-group4": dict(vocab_size=256, hidden_size=2048, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=32, num_key_value_heads=8, head_dim=64, rope_theta=500000.0,
                                  rope_scaling=LLAMA3_SCALING, tie_word_embeddings=True,
                                  max_position_embeddings=131072),
}


@pytest.fixture(scope="module", params=sorted(HF_CONFIGS))
def checkpoint(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    return make_hf_checkpoint(folder, **HF_CONFIGS[request.param])


def right_padded_batch(vocab_size: int, lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(0, vocab_size, (len(lengths), T), generator=g)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, mask


def assert_logits_close(ours: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> None:
    real = mask.bool()
    scale = ref[real].abs().max()
    diff = (ours[real] - ref[real]).abs().max()
    assert diff <= 1e-4 * scale, f"max |ours - HF| = {diff:.3g} exceeds 1e-4 x logit scale {scale:.3g}"


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_logits_equal_hf_on_right_padded_batch(checkpoint, causal):
    ours = load_llama(checkpoint, causal=causal).eval()
    ref = load_hf(checkpoint, causal=causal)
    ids, mask = right_padded_batch(ours.config.vocab_size, [17, 9, 1, 12])
    with torch.no_grad():
        ours_logits = ours.lm_head(ours(ids, mask))
        ref_logits = ref(input_ids=ids, attention_mask=mask).logits
    assert_logits_close(ours_logits, ref_logits, mask)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_logits_equal_hf_without_mask(checkpoint, causal):
    ours = load_llama(checkpoint, causal=causal).eval()
    ref = load_hf(checkpoint, causal=causal)
    ids, mask = right_padded_batch(ours.config.vocab_size, [13, 13])
    with torch.no_grad():
        assert_logits_close(ours.lm_head(ours(ids)), ref(input_ids=ids).logits, mask)


def test_config_from_hf_matches_checkpoint(checkpoint):
    import json

    hf = json.loads((checkpoint / "config.json").read_text())
    config = LlamaConfig.from_hf(checkpoint)
    assert config.hidden_size == hf["hidden_size"]
    assert config.num_layers == hf["num_hidden_layers"]
    assert config.num_kv_heads == hf["num_key_value_heads"]
    assert config.head_dim == hf.get("head_dim", hf["hidden_size"] // hf["num_attention_heads"])
    assert config.tie_word_embeddings == hf["tie_word_embeddings"]
    assert (config.rope_scaling is not None) == ("factor" in json.dumps(hf))
    assert config.causal is True


def test_rope_frequencies_equal_hf_llama3_scaling():
    from transformers import LlamaConfig as HFLlamaConfig

    hf_config = HFLlamaConfig(**HF_CONFIGS["llama3.2-heads-group4"])
    hf_rotary = LlamaRotaryEmbedding(hf_config)
    ours = rope_inv_freq(64, 500000.0, PRESETS["llama-3.2-1b"].rope_scaling)
    torch.testing.assert_close(ours, hf_rotary.inv_freq.float(), rtol=1e-6, atol=0)
    unscaled = rope_inv_freq(64, 500000.0, None)
    assert not torch.allclose(ours, unscaled), "llama3 scaling must change the low frequencies"
    assert torch.equal(ours[:4], unscaled[:4]), "high frequencies are kept as they are"


def test_presets_have_published_shapes():
    one_b = PRESETS["llama-3.2-1b"]
    assert (one_b.hidden_size, one_b.num_layers, one_b.num_heads, one_b.num_kv_heads, one_b.head_dim) == (
        2048, 16, 32, 8, 64)
    assert one_b.intermediate_size == 8192 and one_b.vocab_size == 128256 and one_b.tie_word_embeddings
    three_b = PRESETS["llama-3.2-3b"]
    assert (three_b.hidden_size, three_b.num_layers, three_b.num_heads, three_b.num_kv_heads,
            three_b.head_dim) == (3072, 28, 24, 8, 128)
    smol = PRESETS["smollm2-135m"]
    assert (smol.hidden_size, smol.num_layers, smol.num_heads, smol.num_kv_heads, smol.intermediate_size) == (
        576, 30, 9, 3, 1536)


def test_parameter_count_of_llama_3_2_1b_shape():
    """The 1B preset instantiated on the meta device has Llama-3.2-1B's published 1.24 B parameters."""
    with torch.device("meta"):
        model = Llama(PRESETS["llama-3.2-1b"])
    assert sum(p.numel() for p in model.parameters()) == 1_235_814_400


# ---- properties of the attention masks, on our model alone -------------------------------------------------

def tiny_model(**overrides) -> Llama:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                         intermediate_size=48, rope_theta=10000.0, max_position_embeddings=64).replace(**overrides)
    return Llama(config).eval()


@pytest.mark.parametrize("mask", [None, "ones"], ids=["no-mask", "all-ones-mask"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_later_token_changes_earlier_outputs_only_when_bidirectional(causal, mask):
    model = tiny_model(causal=causal)
    ids = torch.randint(0, 100, (1, 10), generator=torch.Generator().manual_seed(3))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 100
    attention_mask = torch.ones_like(ids) if mask == "ones" else None
    with torch.no_grad():
        before, after = model(ids, attention_mask), model(changed, attention_mask)
    earlier_moved = (before[0, :-1] - after[0, :-1]).abs().max()
    if causal:
        assert earlier_moved == 0
    else:
        assert earlier_moved > 1e-3


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_batch_of_one_equals_same_sequence_in_padded_batch(causal):
    model = tiny_model(causal=causal)
    ids, mask = right_padded_batch(100, [5, 11, 8], seed=4)
    with torch.no_grad():
        batched = model(ids, mask)
        for row, length in enumerate([5, 11, 8]):
            alone = model(ids[row : row + 1, :length])
            torch.testing.assert_close(batched[row, :length], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_contents_of_pad_positions_change_nothing(causal):
    model = tiny_model(causal=causal)
    ids, mask = right_padded_batch(100, [4, 9], seed=5)
    garbage = torch.where(mask.bool(), ids, torch.randint(0, 100, ids.shape))
    with torch.no_grad():
        real = mask.bool()
        assert torch.equal(model(ids, mask)[real], model(garbage, mask)[real])


def test_bidirectional_top_layers_lifts_the_mask_only_near_the_output():
    causal = tiny_model(causal=True)
    top = tiny_model(causal=True, bidirectional_top_layers=1)
    top.load_state_dict(causal.state_dict())
    assert [b.self_attn.causal for b in top.layers] == [True, False]
    ids = torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(9))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 100
    with torch.no_grad():
        assert torch.equal(causal(ids)[0, :-1], causal(changed)[0, :-1])
        assert (top(ids)[0, :-1] - top(changed)[0, :-1]).abs().max() > 1e-3


def test_tied_lm_head_is_the_embedding():
    model = tiny_model(tie_word_embeddings=True)
    assert model.lm_head.weight is model.embed_tokens.weight


def test_activation_checkpointing_gives_same_gradients():
    model = tiny_model(causal=False).train()
    ids, mask = right_padded_batch(100, [6, 4], seed=10)

    def grads():
        model.zero_grad()
        model(ids, mask).square().sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.activation_checkpointing = True
    for g_plain, g_ckpt in zip(plain, grads()):
        torch.testing.assert_close(g_plain, g_ckpt)


def saved_bytes(compute) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of `compute()`."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        compute()
    return sum(storages.values())


def test_silu_mul_equals_the_plain_formula_and_keeps_a_third_less():
    g, u = (torch.randn(5, 7, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(SiluMul.apply, (g, u))
    fast, plain = SiluMul.apply(g, u), silu_mul_reference(g, u)
    torch.testing.assert_close(fast, plain)
    grad = torch.randn(5, 7, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(fast, (g, u), grad), torch.autograd.grad(plain, (g, u), grad)):
        torch.testing.assert_close(a, b)
    assert saved_bytes(lambda: SiluMul.apply(g, u)) == 2 * g.nbytes
    assert saved_bytes(lambda: silu_mul_reference(g, u)) == 3 * g.nbytes


def test_real_tokens_round_trip_and_scatter_keeps_only_the_index():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    tokens = RealTokens.from_mask(mask, 2, 4)
    x = torch.randn(4, 3, requires_grad=True)  # the 4 real tokens
    grid = tokens.scatter(x)  # (2, 4, 3)
    assert torch.equal(grid[mask.bool()], x) and not grid[~mask.bool()].any()
    assert torch.equal(tokens.select(grid), x)
    assert saved_bytes(lambda: tokens.scatter(x)) == tokens.index.nbytes


# ---- attention on the jagged stack of real tokens (model/jagged_attention.py) against the padded grid and HF ----

def layout(lengths: list[int], jagged: bool) -> RealTokens:
    return RealTokens.from_lengths(lengths, max(lengths), jagged=jagged)


@pytest.fixture
def jagged_calls(monkeypatch) -> list[int]:
    """How many attention calls took the jagged path: the comparisons below would hold trivially if none did."""
    calls = []

    def counted(*args):
        calls.append(1)
        return jagged_attention(*args)

    monkeypatch.setattr(padding_free, "jagged_attention", counted)
    return calls


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_jagged_attention_equals_the_padded_grid_and_hf(checkpoint, causal, jagged_calls):
    """Windows of one token included; causal layers stay on the grid (model/padding_free.py says why)."""
    ours = load_llama(checkpoint, causal=causal).eval()
    ref = load_hf(checkpoint, causal=causal)
    lengths = [17, 9, 1, 12]
    ids, mask = right_padded_batch(ours.config.vocab_size, lengths)
    with torch.no_grad():
        jagged = ours(ids, mask, layout(lengths, jagged=True))
        padded = ours(ids, mask, layout(lengths, jagged=False))
        ref_logits = ref(input_ids=ids, attention_mask=mask).logits
    assert len(jagged_calls) == (0 if causal else ours.config.num_layers)
    torch.testing.assert_close(jagged, padded, rtol=1e-5, atol=1e-5)
    assert_logits_close(ours.lm_head(jagged), ref_logits, mask)


@pytest.mark.parametrize("heads", [(4, 4), (6, 2), (8, 2)], ids=["mha", "gqa-group3", "gqa-group4"])
def test_jagged_attention_and_its_gradients_equal_the_padded_grid(heads):
    nh, n_kv = heads
    lengths = [7, 1, 4, 9]
    g = torch.Generator().manual_seed(11)
    q = torch.randn(sum(lengths), nh, 8, generator=g, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(sum(lengths), n_kv, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in "kv")
    tokens = layout(lengths, jagged=True)
    jagged = jagged_attention(q, k, v, tokens.offsets, min(lengths), max(lengths))
    padded = padded_attention(tokens, q, k, v, is_causal=False)
    torch.testing.assert_close(jagged, padded)
    grad = torch.randn(padded.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(jagged, (q, k, v), grad), torch.autograd.grad(padded, (q, k, v), grad)):
        torch.testing.assert_close(a, b)


def test_jagged_attention_sees_later_tokens_of_its_row_only(jagged_calls):
    """Bidirectional: changing a row's last token moves its earlier outputs, and nothing of the other rows."""
    model = tiny_model(causal=False)
    lengths = [10, 6]
    ids, mask = right_padded_batch(100, lengths, seed=3)
    changed = ids.clone()
    changed[0, 9] = (ids[0, 9] + 1) % 100
    with torch.no_grad():
        before, after = (model(x, mask, layout(lengths, jagged=True)) for x in (ids, changed))
    assert jagged_calls
    assert (before[0, :9] - after[0, :9]).abs().max() > 1e-3
    assert torch.equal(before[1], after[1])


def test_jagged_attention_batch_equals_each_sequence_alone_and_ignores_padding(jagged_calls):
    model = tiny_model(causal=False)
    lengths = [5, 11, 1, 8]
    ids, mask = right_padded_batch(100, lengths, seed=4)
    garbage = torch.where(mask.bool(), ids, torch.randint(0, 100, ids.shape))
    with torch.no_grad():
        batched = model(ids, mask, layout(lengths, jagged=True))
        assert torch.equal(batched[mask.bool()], model(garbage, mask, layout(lengths, jagged=True))[mask.bool()])
        for row, length in enumerate(lengths):
            torch.testing.assert_close(batched[row, :length], model(ids[row : row + 1, :length])[0],
                                       rtol=1e-5, atol=1e-5)
    assert jagged_calls


@pytest.mark.parametrize("causal, jagged", [(True, False), (False, False), (False, True)],
                         ids=["causal", "bidirectional", "bidirectional-jagged"])
def test_padding_reaches_no_gradient(causal, jagged, jagged_calls):
    """Backward too, a padded batch is its sequences run alone: its gradients are finite and the sum of theirs, on the
    padded grid and on the jagged stack."""
    model = tiny_model(causal=causal)
    lengths = [3, 8, 5]
    ids, mask = right_padded_batch(100, lengths, seed=6)
    weights = torch.randn(*ids.shape, model.config.hidden_size, generator=torch.Generator().manual_seed(7))
    (model(ids, mask, layout(lengths, jagged)) * weights).sum().backward()  # every output, padding's zeros too
    batched = {name: p.grad for name, p in model.named_parameters()}
    assert bool(jagged_calls) == jagged
    model.zero_grad()
    for row, length in enumerate(lengths):
        (model(ids[row : row + 1, :length]) * weights[row : row + 1, :length]).sum().backward()
    for name, p in model.named_parameters():
        assert torch.isfinite(batched[name]).all(), name
        torch.testing.assert_close(batched[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_cpu_batch_keeps_the_padded_grid_by_default(jagged_calls):
    """jagged=None picks by device: the grid on a CPU, where it measured faster (docs/performance.md)."""
    model = tiny_model(causal=False)
    ids, mask = right_padded_batch(100, [4, 2], seed=8)
    with torch.no_grad():
        model(ids, mask, layout([4, 2], jagged=None))
    assert jagged_calls == []
