"""Loading HF checkpoints: sharded files, dtypes, and a clear error for every kind of broken checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

from model.loading import load_llama
from tests.hf_reference import make_hf_checkpoint

TINY = dict(vocab_size=120, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=64)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("tiny"), **TINY)


@pytest.fixture
def broken(tiny_checkpoint, tmp_path):
    """A fresh copy of the tiny checkpoint that a test may damage."""
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    return folder


def test_sharded_checkpoint_loads_like_the_single_file(tiny_checkpoint, tmp_path):
    hf = LlamaForCausalLM.from_pretrained(tiny_checkpoint)
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    single, sharded = load_llama(tiny_checkpoint), load_llama(tmp_path)
    for (name, a), (_, b) in zip(single.state_dict().items(), sharded.state_dict().items()):
        assert torch.equal(a, b), name


def test_dtype_and_overrides(tiny_checkpoint):
    model = load_llama(tiny_checkpoint, dtype=torch.bfloat16, causal=False)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.rotary.inv_freq.dtype == torch.float32
    assert model.config.causal is False and not any(b.self_attn.causal for b in model.layers)
    assert model.lm_head.weight is model.embed_tokens.weight
    assert not any(p.is_meta for p in model.parameters())


def test_tied_checkpoint_that_also_stores_lm_head_loads(broken):
    tensors = load_file(broken / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    save_file(tensors, broken / "model.safetensors")
    model = load_llama(broken)
    assert model.lm_head.weight is model.embed_tokens.weight


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_llama(tmp_path / "nowhere")


def test_missing_config_is_named(broken):
    (broken / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_llama(broken)


def test_malformed_config_json_is_named(broken):
    (broken / "config.json").write_text("{ not json")
    with pytest.raises(ValueError, match=r"config\.json:1: not valid JSON"):
        load_llama(broken)


def test_config_missing_a_field_is_named(broken):
    config = json.loads((broken / "config.json").read_text())
    del config["num_hidden_layers"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: malformed Llama config.*num_hidden_layers"):
        load_llama(broken)


def test_unsupported_rope_type_is_named(broken):
    config = json.loads((broken / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    config.pop("rope_parameters", None)
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="yarn"):
        load_llama(broken)


def test_missing_weights_file_is_named(broken):
    (broken / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_llama(broken)


def test_missing_shard_is_named(tiny_checkpoint, tmp_path):
    LlamaForCausalLM.from_pretrained(tiny_checkpoint).save_pretrained(tmp_path, max_shard_size="20KB")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=shard.name):
        load_llama(tmp_path)


def test_missing_tensor_is_named(broken):
    tensors = load_file(broken / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, broken / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        load_llama(broken)


def test_unexpected_tensor_is_named(broken):
    tensors = load_file(broken / "model.safetensors")
    tensors["model.layers.1.self_attn.q_proj.bias"] = torch.zeros(32)
    save_file(tensors, broken / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected tensor model\.layers\.1\.self_attn\.q_proj\.bias"):
        load_llama(broken)


def test_wrong_shape_is_named_with_file_and_tensor(broken):
    tensors = load_file(broken / "model.safetensors")
    tensors["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(8, 32)
    save_file(tensors, broken / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor model\.layers\.0\.self_attn\.k_proj\.weight "
                                         r"has shape \(8, 32\), expected \(16, 32\)"):
        load_llama(broken)


def test_corrupt_safetensors_file_is_named(broken):
    path = broken / "model.safetensors"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # a download or copy cut short
    with pytest.raises(ValueError, match="model.safetensors: unreadable safetensors file"):
        load_llama(broken)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage!")
    with pytest.raises(ValueError, match="model.safetensors: unreadable safetensors file"):
        load_llama(broken)


def test_unknown_override_is_rejected(tiny_checkpoint):
    with pytest.raises(TypeError, match="bidirectional"):
        load_llama(tiny_checkpoint, bidirectional=True)
