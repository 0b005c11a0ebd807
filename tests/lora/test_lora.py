import copy
import json
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lora import (LLAMA_TARGETS, LoRALinear, inject_lora, load_adapter, lora_modules, lora_state_dict,
                  merge_lora, read_adapter_config, save_adapter, trainable_parameters)
from lora.io import CONFIG_NAME, WEIGHTS_NAME

DIM, HIDDEN, VOCAB, LABELS = 16, 24, 50, 5


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(DIM, DIM, bias=False)
        self.k_proj = nn.Linear(DIM, DIM // 2, bias=False)
        self.v_proj = nn.Linear(DIM, DIM // 2, bias=False)
        self.o_proj = nn.Linear(DIM, DIM, bias=False)

    def forward(self, x):  # a toy mixing of all four projections, enough for gradients to reach each
        kv = torch.cat([self.k_proj(x), self.v_proj(x)], dim=-1)
        scores = torch.softmax(self.q_proj(x) @ kv.transpose(-1, -2) / DIM**0.5, dim=-1)
        return self.o_proj(scores @ kv)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate_proj = nn.Linear(DIM, HIDDEN, bias=False)
        self.up_proj = nn.Linear(DIM, HIDDEN, bias=False)
        self.down_proj = nn.Linear(HIDDEN, DIM, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(DIM)
        self.self_attn = Attention()
        self.post_attention_layernorm = nn.LayerNorm(DIM)
        self.mlp = MLP()

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class StandIn(nn.Module):
    """Module names as in HF Llama (`layers.{i}.self_attn.q_proj`) plus a tagger head at `head`."""

    def __init__(self, n_layers: int = 2):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, DIM)
        self.layers = nn.ModuleList(Layer() for _ in range(n_layers))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, LABELS)

    def forward(self, ids):
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))


def make_model(seed: int = 0) -> StandIn:
    torch.manual_seed(seed)
    return StandIn()


def randomize_lora(model: nn.Module, seed: int = 1) -> None:
    """B starts at 0; give it values so the adapter actually changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in lora_modules(model):
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.1)


IDS = torch.randint(0, VOCAB, (3, 7), generator=torch.Generator().manual_seed(0))


# ---- LoRALinear -------------------------------------------------------------------------------

def test_layer_shapes_init_and_shared_weight():
    base = nn.Linear(DIM, 8)
    layer = LoRALinear(base, r=4, alpha=8)
    assert layer.lora_A.shape == (4, DIM) and layer.lora_B.shape == (8, 4)
    assert torch.all(layer.lora_B == 0) and layer.lora_A.abs().sum() > 0
    bound = 1 / DIM**0.5  # kaiming_uniform_(a=sqrt(5)) on fan_in = DIM, as nn.Linear initializes
    assert layer.lora_A.abs().max() <= bound
    assert layer.weight is base.weight and layer.bias is base.bias  # no copy
    assert not layer.weight.requires_grad and not layer.bias.requires_grad
    assert layer.scaling == 2.0


def test_zero_B_leaves_output_unchanged():
    base = nn.Linear(DIM, 8)
    x = torch.randn(2, 5, DIM)
    expected = base(x)
    assert torch.equal(LoRALinear(base, r=4, alpha=8, dropout=0.0)(x), expected)


def test_forward_matches_formula():
    base = nn.Linear(DIM, 8)
    layer = LoRALinear(base, r=4, alpha=12)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(2, 5, DIM)
    expected = x @ base.weight.T + base.bias + 3.0 * (x @ layer.lora_A.T @ layer.lora_B.T)
    torch.testing.assert_close(layer(x), expected)


def test_merge_equals_the_separate_update():
    base = nn.Linear(DIM, 8)
    w0 = base.weight.detach().clone()
    layer = LoRALinear(base, r=4, alpha=8, dropout=0.1).eval()
    nn.init.normal_(layer.lora_B)
    x = torch.randn(2, 5, DIM)
    unmerged = layer(x)
    layer.merge()
    assert layer.merged
    torch.testing.assert_close(layer(x), unmerged, rtol=1e-5, atol=1e-5)
    layer.merge()  # idempotent: the update must not be added twice
    torch.testing.assert_close(layer(x), unmerged, rtol=1e-5, atol=1e-5)
    # W + (alpha / r) B A (Hu et al. 2021, sec. 4.1), in float64
    expected = w0.double() + 2.0 * layer.lora_B.detach().double() @ layer.lora_A.detach().double()
    torch.testing.assert_close(layer.weight.double(), expected, rtol=0, atol=1e-6)


def test_dropout_only_in_train_mode():
    layer = LoRALinear(nn.Linear(DIM, 8), r=4, alpha=8, dropout=0.5)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(4, 10, DIM)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    layer.train()
    torch.manual_seed(0)
    a = layer(x)
    torch.manual_seed(1)
    b = layer(x)
    assert not torch.allclose(a, b)
    # With B = 0 dropout has nothing to act on: the base path never sees dropout.
    plain = LoRALinear(nn.Linear(DIM, 8), r=4, alpha=8, dropout=0.5).train()
    assert torch.equal(plain(x), F.linear(x, plain.weight, plain.bias))
    # The wrapper takes the mode of the linear it wraps (inject_lora into an eval-mode model).
    assert not LoRALinear(nn.Linear(DIM, 8).eval(), r=4, alpha=8, dropout=0.5).training


def test_bf16_weights_and_autocast():
    torch.manual_seed(0)
    base = nn.Linear(DIM, 8)
    ref = LoRALinear(copy.deepcopy(base), r=4, alpha=8)
    nn.init.normal_(ref.lora_B)
    x = torch.randn(2, 5, DIM)
    expected = ref(x)

    bf16 = copy.deepcopy(ref).to(torch.bfloat16)
    torch.testing.assert_close(bf16(x.bfloat16()).float(), expected, rtol=0.05, atol=0.05)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ref(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)

    mixed = copy.deepcopy(ref)  # bf16 frozen weight, float32 adapter
    mixed.weight.data = mixed.weight.data.bfloat16()
    mixed.bias.data = mixed.bias.data.bfloat16()
    out = mixed(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)


def test_merge_in_bf16_computes_delta_in_float32():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(DIM, 8), r=4, alpha=8)
    nn.init.normal_(layer.lora_B)
    layer = layer.to(torch.bfloat16)
    expected = (layer.weight.float() + layer.delta_weight()).bfloat16()
    layer.merge()
    assert torch.equal(layer.weight, expected)


def test_layer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(4, 4), r=0, alpha=1)
    with pytest.raises(ValueError, match="dropout"):
        LoRALinear(nn.Linear(4, 4), r=2, alpha=1, dropout=1.0)
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(4, 4, 1), r=2, alpha=1)


# ---- inject_lora ------------------------------------------------------------------------------

def test_inject_replaces_targets_and_keeps_outputs():
    model = make_model()
    expected = model(IDS)
    summary = inject_lora(model, r=4, alpha=8, dropout=0.0)
    names = [name for name, _ in lora_modules(model)]
    assert len(names) == 2 * len(LLAMA_TARGETS)
    assert "layers.1.mlp.down_proj" in names and "layers.0.self_attn.q_proj" in names
    assert isinstance(model.head, nn.Linear)
    torch.testing.assert_close(model(IDS), expected, rtol=0, atol=0)

    lora_numel = sum(m.lora_A.numel() + m.lora_B.numel() for _, m in lora_modules(model))
    head_numel = sum(p.numel() for p in model.head.parameters())
    assert summary.trainable == lora_numel + head_numel
    assert summary.total == sum(p.numel() for p in model.parameters())
    assert summary.lora_modules == len(names)
    assert f"{summary.trainable:,}" in str(summary) and f"{summary.total:,}" in str(summary)
    # Backbone state-dict keys survive wrapping.
    assert "layers.0.self_attn.q_proj.weight" in model.state_dict()


def test_only_lora_and_head_receive_gradients():
    model = make_model()
    inject_lora(model, r=4, alpha=8, dropout=0.05)
    randomize_lora(model)
    model(IDS).sum().backward()
    for name, p in model.named_parameters():
        if name.endswith(("lora_A", "lora_B")) or name.startswith("head."):
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_trainable_parameters_are_the_adapters_and_the_head_by_name():
    model = make_model()
    inject_lora(model, targets=("q_proj", "down_proj"), r=4, alpha=8)
    trainable = trainable_parameters(model)
    expected = [f"layers.{i}.{module}.lora_{ab}" for i in (0, 1) for module in ("self_attn.q_proj", "mlp.down_proj")
                for ab in "AB"]
    assert sorted(trainable) == sorted([*expected, "head.weight", "head.bias"])
    assert all(trainable[name] is model.get_parameter(name) for name in trainable)


def test_inject_subset_of_targets_and_no_trainable_head():
    model = make_model()
    inject_lora(model, targets=("q_proj", "v_proj"), r=2, alpha=2, trainable=())
    assert [n for n, _ in lora_modules(model)] == ["layers.0.self_attn.q_proj", "layers.0.self_attn.v_proj",
                                                    "layers.1.self_attn.q_proj", "layers.1.self_attn.v_proj"]
    assert not any(p.requires_grad for p in model.head.parameters())


def test_inject_errors_name_targets_and_modules():
    with pytest.raises(ValueError, match=r"wq.*layers\.0\.self_attn\.q_proj"):
        inject_lora(make_model(), targets=("wq",))
    with pytest.raises(ValueError, match="classifier"):
        inject_lora(make_model(), trainable=("classifier",))
    model = make_model()
    inject_lora(model)
    with pytest.raises(ValueError, match="already"):
        inject_lora(model)
    with pytest.raises(ValueError, match="inject_lora first"):
        merge_lora(make_model())


def test_merge_lora_model_level():
    model = make_model()
    inject_lora(model, r=4, alpha=8, dropout=0.1)
    randomize_lora(model)
    model.eval()
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    unmerged = model(IDS)
    assert merge_lora(model) == 2 * len(LLAMA_TARGETS)
    torch.testing.assert_close(model(IDS), unmerged, rtol=1e-5, atol=1e-5)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, w0[k])}
    assert changed == {f"{name}.weight" for name, _ in lora_modules(model)}  # only the adapted weights


def test_lora_state_dict_has_only_adapter_and_head():
    model = make_model()
    inject_lora(model, r=4, alpha=8)
    sd = lora_state_dict(model)
    adapters = {f"{n}.{ab}" for n, _ in lora_modules(model) for ab in ("lora_A", "lora_B")}
    assert set(sd) == adapters | {"head.weight", "head.bias"}
    assert set(lora_state_dict(model, extra=())) == adapters
    with pytest.raises(ValueError, match="classifier"):
        lora_state_dict(model, extra=("classifier",))


# ---- save / load ------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    model = make_model()
    inject_lora(model, r=4, alpha=8, dropout=0.1)
    randomize_lora(model)
    with torch.no_grad():
        model.head.weight.add_(1.0)
    model.eval()
    expected = model(IDS)
    save_adapter(model, tmp_path / "adapter")
    config = read_adapter_config(tmp_path / "adapter")
    assert (config.r, config.alpha, config.dropout, config.extra) == (4, 8.0, 0.1, ("head",))
    assert config.targets == LLAMA_TARGETS

    fresh = make_model()  # same backbone, no LoRA yet: load_adapter wraps it per the config
    load_adapter(fresh, tmp_path / "adapter")
    fresh.eval()
    torch.testing.assert_close(fresh(IDS), expected, rtol=0, atol=0)
    assert len(lora_modules(fresh)) == len(lora_modules(model))
    assert fresh.head.weight.requires_grad and not fresh.layers[0].self_attn.q_proj.weight.requires_grad

    already = make_model()  # already wrapped with the same settings: just filled
    inject_lora(already, r=4, alpha=8, dropout=0.0)
    load_adapter(already, tmp_path / "adapter")
    torch.testing.assert_close(already.eval()(IDS), expected, rtol=0, atol=0)


def test_load_rejects_mismatched_shape_missing_and_unexpected_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    model = make_model()
    inject_lora(model, r=4, alpha=8)
    directory = save_adapter(model, tmp_path / "a")
    path = directory / WEIGHTS_NAME
    tensors = load_file(path)

    bad = dict(tensors, **{"head.weight": torch.zeros(LABELS + 1, DIM)})
    save_file(bad, path)
    with pytest.raises(ValueError, match=r"adapter\.safetensors.*'head\.weight'.*\(6, 16\).*\(5, 16\)"):
        load_adapter(make_model(), directory)

    missing = {k: v for k, v in tensors.items() if k != "layers.1.mlp.up_proj.lora_B"}
    save_file(missing, path)
    with pytest.raises(ValueError, match=r"adapter\.safetensors.*missing.*layers\.1\.mlp\.up_proj\.lora_B"):
        load_adapter(make_model(), directory)

    save_file(dict(tensors, stray=torch.zeros(1)), path)
    with pytest.raises(ValueError, match=r"adapter\.safetensors.*unexpected.*'stray'"):
        load_adapter(make_model(), directory)

    save_file(tensors, path)
    path.write_bytes(path.read_bytes()[:-8])  # cut short, as by a full disk or an interrupted copy
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: unreadable safetensors file \(.*\)"):
        load_adapter(make_model(), directory)

    save_file(tensors, path)
    other_rank = make_model()
    inject_lora(other_rank, r=8, alpha=8)
    with pytest.raises(ValueError, match=r"adapter_config\.json.*r=4.*r=8"):
        load_adapter(other_rank, directory)

    merged = make_model()
    inject_lora(merged, r=4, alpha=8)
    merge_lora(merged)
    with pytest.raises(ValueError, match="load the adapter before merging"):
        load_adapter(merged, directory)


def test_read_config_errors_name_the_file(tmp_path):
    (tmp_path / CONFIG_NAME).write_text('{"r": 4,\n "alpha": }')
    with pytest.raises(ValueError, match=r"adapter_config\.json:2: not valid JSON"):
        read_adapter_config(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"r": 4, "alpha": 8}))
    with pytest.raises(ValueError, match=r"adapter_config\.json: expected exactly the keys"):
        read_adapter_config(tmp_path)
    latin_1 = '{"r": 4, "alpha": 8,\n "targets": ["q_proj"], "extra": ["tête"]}'.encode("latin-1")
    (tmp_path / CONFIG_NAME).write_bytes(latin_1)
    with pytest.raises(ValueError, match=r"adapter_config\.json:2: not valid UTF-8 \(byte 0xea at column 37\)"):
        read_adapter_config(tmp_path)


# ---- parity with PEFT ---------------------------------------------------------------------------

def test_parity_with_peft():
    import peft

    r, alpha = 4, 12
    ours = make_model()
    theirs = copy.deepcopy(ours)
    inject_lora(ours, r=r, alpha=alpha, dropout=0.0)
    randomize_lora(ours)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(LLAMA_TARGETS))
    theirs = peft.get_peft_model(theirs, config)
    with torch.no_grad():
        for name, m in lora_modules(ours):
            peft_layer = theirs.base_model.model.get_submodule(name)
            peft_layer.lora_A["default"].weight.copy_(m.lora_A)
            peft_layer.lora_B["default"].weight.copy_(m.lora_B)
    ours.eval()
    theirs.eval()
    expected = theirs(IDS)
    torch.testing.assert_close(ours(IDS), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(expected, make_model().eval()(IDS), atol=1e-3)  # the adapter mattered
    theirs.merge_adapter()
    merge_lora(ours)
    for name, m in lora_modules(ours):
        torch.testing.assert_close(m.weight, theirs.base_model.model.get_submodule(name).base_layer.weight,
                                   rtol=1e-6, atol=1e-6)


# ---- the real backbone --------------------------------------------------------------------------

def test_on_tiny_real_llama():
    from model import Llama, LlamaConfig

    config = LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                         intermediate_size=48, max_position_embeddings=64)
    torch.manual_seed(0)
    llama = Llama(config).eval()
    original = {k: v.clone() for k, v in llama.state_dict().items()}
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    expected = llama(ids)

    summary = inject_lora(llama, r=4, alpha=8, trainable=())
    assert summary.lora_modules == config.num_layers * len(LLAMA_TARGETS)
    assert isinstance(llama.lm_head, nn.Linear)  # not a target
    torch.testing.assert_close(llama(ids), expected, rtol=0, atol=0)
    # A checkpoint for the plain backbone still loads: only the adapter keys are new.
    missing, unexpected = llama.load_state_dict(original, strict=False)
    assert unexpected == [] and all(k.endswith(("lora_A", "lora_B")) for k in missing)

    randomize_lora(llama)
    adapted = llama(ids)
    assert not torch.allclose(adapted, expected, atol=1e-4)
    adapted.sum().backward()
    assert all((p.grad is not None) == p.requires_grad for p in llama.parameters())
    merge_lora(llama)
    torch.testing.assert_close(llama(ids), adapted, rtol=1e-4, atol=1e-5)
