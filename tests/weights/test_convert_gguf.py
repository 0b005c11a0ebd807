"""The GGUF -> HF converter: permutation, dequantization, config, tensors, tokenizer files, HF loading."""

import json

import numpy as np
import pytest
import tokenizers
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import quantize
from safetensors import safe_open
from transformers import LlamaForCausalLM

from model.tokenizer import load_tokenizer
from weights import convert_gguf
from weights.convert_gguf import (
    convert,
    default_gguf_path,
    dequantize_tensor,
    hf_tensor_name,
    is_complete,
    unpermute_rope_rows,
)


def llama_cpp_permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py's LlamaModel.permute (HF rotate-half rows -> interleaved pairs)."""
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def hand_dequantize_q4_1(raw: np.ndarray) -> np.ndarray:
    """Q4_1 by the spec: 20-byte blocks of f16 scale d, f16 min m, 16 bytes holding 32 nibbles
    (low nibbles are elements 0..15, high nibbles 16..31); value = d * q + m."""
    blocks = raw.reshape(-1, 20)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    q = np.concatenate([blocks[:, 4:] & 0x0F, blocks[:, 4:] >> 4], axis=1).astype(np.float32)
    return (d * q + m).reshape(raw.shape[0], -1)


def hand_dequantize_q8_0(raw: np.ndarray) -> np.ndarray:
    """Q8_0 by the spec: 34-byte blocks of f16 scale d and 32 int8 q; value = d * q."""
    blocks = raw.reshape(-1, 34)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
    return (d * q).reshape(raw.shape[0], -1)


def hand_dequantize_q5_0(raw: np.ndarray) -> np.ndarray:
    """Q5_0 by the spec (ggml's block_q5_0): 22-byte blocks of f16 scale d, a little-endian uint32 qh whose bit j
    is element j's fifth bit, and 16 bytes of low nibbles (elements 0..15) and high nibbles (16..31);
    value = d * (q - 16)."""
    blocks = raw.reshape(-1, 22)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    qh = blocks[:, 2:6].copy().view("<u4")
    fifth_bits = (qh >> np.arange(32, dtype=np.uint32)) & 1
    nibbles = np.concatenate([blocks[:, 6:] & 0x0F, blocks[:, 6:] >> 4], axis=1).astype(np.int32)
    return (d * ((nibbles | (fifth_bits.astype(np.int32) << 4)) - 16)).reshape(raw.shape[0], -1)


@pytest.fixture(scope="module")
def checkpoint(smollm2_dir):
    return smollm2_dir


@pytest.fixture(scope="module")
def reader():
    return GGUFReader(default_gguf_path())


@pytest.fixture(scope="module")
def config(checkpoint):
    return json.loads((checkpoint / "config.json").read_text())


@pytest.fixture(scope="module")
def gguf_tensors(reader):
    return {t.name: t for t in reader.tensors}


def test_unpermute_inverts_llama_cpp_permute():
    rng = np.random.default_rng(0)
    for n_head, head_dim, cols in [(9, 64, 576), (3, 64, 576), (2, 8, 5)]:
        weight = rng.standard_normal((n_head * head_dim, cols)).astype(np.float32)
        permuted = llama_cpp_permute(weight, n_head)
        assert not np.array_equal(permuted, weight)
        assert np.array_equal(unpermute_rope_rows(permuted, n_head), weight)
        assert np.array_equal(llama_cpp_permute(unpermute_rope_rows(weight, n_head), n_head), weight)


def test_unpermute_restores_rotate_half_pairs():
    """One head of 4 rows: llama.cpp stores the rotary pairs (r0, r2), (r1, r3) next to each other."""
    stored = np.array([[0.0], [2.0], [1.0], [3.0]])
    assert unpermute_rope_rows(stored, n_head=1)[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_q4_1_block_is_d_times_q_plus_m():
    d, m = np.float16(0.5), np.float16(-1.25)
    q = np.array([(7 * j + 3) % 16 for j in range(32)], dtype=np.uint8)
    packed = (q[:16] | (q[16:] << 4)).astype(np.uint8)
    block = np.concatenate([np.frombuffer(d.tobytes() + m.tobytes(), dtype=np.uint8), packed])[None, :]
    values = dequantize_tensor("test.q4_1", GGMLQuantizationType.Q4_1, block)
    assert values.dtype == np.float32
    assert values.ravel().tolist() == [0.5 * int(x) - 1.25 for x in q]


def test_q8_0_block_is_d_times_q():
    d = np.float16(0.25)
    q = np.arange(-16, 16, dtype=np.int8)
    block = np.concatenate([np.frombuffer(d.tobytes(), dtype=np.uint8), q.view(np.uint8)])[None, :]
    values = dequantize_tensor("test.q8_0", GGMLQuantizationType.Q8_0, block)
    assert values.ravel().tolist() == [0.25 * int(x) for x in q]


def test_q5_0_rows_equal_a_hand_dequantization():
    """A type this GGUF file does not hold, quantized by gguf itself from real-looking rows."""
    rows = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    raw = quantize(rows, GGMLQuantizationType.Q5_0)
    assert raw.shape == (3, 44) and raw.dtype == np.uint8
    values = dequantize_tensor("test.q5_0", GGMLQuantizationType.Q5_0, raw)
    assert values.dtype == np.float32 and values.shape == rows.shape
    assert np.array_equal(values, hand_dequantize_q5_0(raw))
    assert not np.array_equal(values, rows) and np.abs(values - rows).max() < 0.2  # quantized, yet close


def test_bf16_is_the_top_half_of_float32():
    rows = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    raw = quantize(rows, GGMLQuantizationType.BF16)
    expected = torch.from_numpy(rows).to(torch.bfloat16).float().numpy()
    assert np.array_equal(dequantize_tensor("test.bf16", GGMLQuantizationType.BF16, raw), expected)


def test_type_gguf_cannot_dequantize_names_the_tensor():
    """Q8_K only holds llama.cpp's intermediate dot products, never stored weights; gguf has no dequantizer for it."""
    with pytest.raises(ValueError, match=r"tensor 'blk\.0\.attn_q\.weight' has type Q8_K, which gguf .* cannot"):
        dequantize_tensor("blk.0.attn_q.weight", GGMLQuantizationType.Q8_K, np.zeros((1, 292), np.uint8))


def test_unknown_tensor_name_is_an_error():
    with pytest.raises(ValueError, match="blk.0.attn_qkv.weight"):
        hf_tensor_name("blk.0.attn_qkv.weight")


def test_tensor_types_in_the_file_are_the_ones_tested(gguf_tensors):
    assert {t.tensor_type.name for t in gguf_tensors.values()} == {"F32", "Q4_1", "Q8_0"}


def test_config_comes_from_gguf_metadata(config, reader, gguf_tensors):
    def meta(key):
        return reader.fields[key].contents()

    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert config["hidden_size"] == meta("llama.embedding_length")
    assert config["intermediate_size"] == meta("llama.feed_forward_length")
    assert config["num_hidden_layers"] == meta("llama.block_count")
    assert config["num_attention_heads"] == meta("llama.attention.head_count")
    assert config["num_key_value_heads"] == meta("llama.attention.head_count_kv")
    assert config["head_dim"] * config["num_attention_heads"] == config["hidden_size"]
    assert config["head_dim"] == meta("llama.rope.dimension_count")
    assert config["max_position_embeddings"] == meta("llama.context_length")
    assert config["vocab_size"] == meta("llama.vocab_size") == len(meta("tokenizer.ggml.tokens"))
    assert np.float32(config["rms_norm_eps"]) == np.float32(meta("llama.attention.layer_norm_rms_epsilon"))
    assert config["rope_theta"] == meta("llama.rope.freq_base")
    assert config["tie_word_embeddings"] is ("output.weight" not in gguf_tensors) is True
    assert config["bos_token_id"] == meta("tokenizer.ggml.bos_token_id")
    assert config["eos_token_id"] == meta("tokenizer.ggml.eos_token_id")
    assert config["pad_token_id"] == meta("tokenizer.ggml.padding_token_id")
    assert (config["hidden_act"], config["rope_scaling"], config["torch_dtype"]) == ("silu", None, "float32")
    assert config["attention_bias"] is False and config["mlp_bias"] is False


def test_all_tensors_present_with_hf_shapes(checkpoint, config):
    d, f, hd = config["hidden_size"], config["intermediate_size"], config["head_dim"]
    q, kv = config["num_attention_heads"] * hd, config["num_key_value_heads"] * hd
    expected = {"model.embed_tokens.weight": (config["vocab_size"], d), "model.norm.weight": (d,)}
    for i in range(config["num_hidden_layers"]):
        layer = f"model.layers.{i}"
        expected |= {
            f"{layer}.self_attn.q_proj.weight": (q, d),
            f"{layer}.self_attn.k_proj.weight": (kv, d),
            f"{layer}.self_attn.v_proj.weight": (kv, d),
            f"{layer}.self_attn.o_proj.weight": (d, q),
            f"{layer}.mlp.gate_proj.weight": (f, d),
            f"{layer}.mlp.up_proj.weight": (f, d),
            f"{layer}.mlp.down_proj.weight": (d, f),
            f"{layer}.input_layernorm.weight": (d,),
            f"{layer}.post_attention_layernorm.weight": (d,),
        }
    with safe_open(checkpoint / "model.safetensors", framework="np") as f:
        assert set(f.keys()) == set(expected)
        for name, shape in expected.items():
            array = f.get_slice(name)
            assert tuple(array.get_shape()) == shape, name
            assert array.get_dtype() == "F32", name


def test_tensors_equal_a_hand_dequantization(checkpoint, config, gguf_tensors):
    """Spot-check real tensors against the spec formulas: Q4_1 (v, q with the permutation undone), Q8_0, F32."""
    with safe_open(checkpoint / "model.safetensors", framework="np") as f:
        v = f.get_tensor("model.layers.3.self_attn.v_proj.weight")
        q = f.get_tensor("model.layers.3.self_attn.q_proj.weight")
        k = f.get_tensor("model.layers.3.self_attn.k_proj.weight")
        embed_rows = f.get_slice("model.embed_tokens.weight")[:64]
        norm = f.get_tensor("model.layers.3.input_layernorm.weight")
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    assert np.array_equal(v, hand_dequantize_q4_1(gguf_tensors["blk.3.attn_v.weight"].data))
    assert np.array_equal(llama_cpp_permute(q, n_head), hand_dequantize_q4_1(gguf_tensors["blk.3.attn_q.weight"].data))
    assert np.array_equal(llama_cpp_permute(k, n_kv), hand_dequantize_q4_1(gguf_tensors["blk.3.attn_k.weight"].data))
    assert np.array_equal(embed_rows, hand_dequantize_q8_0(gguf_tensors["token_embd.weight"].data[:64]))
    assert np.array_equal(norm, gguf_tensors["blk.3.attn_norm.weight"].data)


def test_tokenizer_files(checkpoint, reader):
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    hf = tokenizers.Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    assert hf.get_vocab_size() == len(tokens)
    assert hf.decode(hf.encode("Hello, world!", add_special_tokens=False).ids) == "Hello, world!"
    tokenizer_config = json.loads((checkpoint / "tokenizer_config.json").read_text())
    assert tokenizer_config["bos_token"] == "<|im_start|>"
    assert tokenizer_config["eos_token"] == tokenizer_config["pad_token"] == "<|im_end|>"
    assert tokenizer_config["add_bos_token"] is False


def test_added_tokens_are_the_control_tokens(reader):
    """llama.h's token types: 1 NORMAL, 3 CONTROL; SmolLM2's GGUF holds only these two."""
    token_types = reader.fields["tokenizer.ggml.token_type"].contents()
    assert set(token_types) == {1, 3}
    tokenizer_json, tokenizer_config = convert_gguf.hf_tokenizer_files(reader)
    control = [i for i, t in enumerate(token_types) if t == 3]
    assert [entry["id"] for entry in tokenizer_json["added_tokens"]] == control
    assert all(entry["special"] and not entry["normalized"] for entry in tokenizer_json["added_tokens"])
    assert [int(i) for i in tokenizer_config["added_tokens_decoder"]] == control


def test_byte_token_type_is_refused():
    with pytest.raises(ValueError, match=r"x\.gguf: token 2 'b' has token type 6, not expected.*CONTROL"):
        convert_gguf._vocab_and_added_tokens(["a", "<s>", "b"], [1, 3, 6], "x.gguf")


@pytest.fixture(scope="module")
def hf_model(checkpoint):
    model, info = LlamaForCausalLM.from_pretrained(checkpoint, output_loading_info=True)
    return model.eval(), info


def test_hf_llama_loads_the_folder(hf_model, config):
    model, info = hf_model
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.config.num_key_value_heads == config["num_key_value_heads"]


def test_rotary_rows_are_in_hf_order(hf_model, checkpoint, config):
    """The model predicts English well only with q/k rows in HF order: put llama.cpp's order back and it degrades."""
    model, _ = hf_model
    tokenizer = load_tokenizer(checkpoint)
    text = (
        "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday. January, February, March, "
        "April, May, June, July, August, September, October, November, December."
    )
    ids = torch.tensor([tokenizer.encode(text)])
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
        originals = {}
        for layer in model.model.layers:
            attention = layer.self_attn
            for proj, n_head in (
                (attention.q_proj, config["num_attention_heads"]),
                (attention.k_proj, config["num_key_value_heads"]),
            ):
                originals[proj] = proj.weight.clone()
                proj.weight.copy_(torch.from_numpy(llama_cpp_permute(proj.weight.numpy(), n_head)))
        scrambled_loss = model(ids, labels=ids).loss.item()
        for proj, weight in originals.items():
            proj.weight.copy_(weight)
    assert loss < 1.5
    assert scrambled_loss > loss + 1.0


def test_complete_folder_is_kept_and_incomplete_refused(tmp_path, capsys):
    done = tmp_path / "done"
    done.mkdir()
    for name in convert_gguf.CHECKPOINT_FILES:
        (done / name).write_text("kept")
    assert convert(out_dir=done) == done
    convert_gguf.main(["--out", str(done)])
    assert "already a complete checkpoint" in capsys.readouterr().out
    assert (done / "config.json").read_text() == "kept"

    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not a complete checkpoint.*--force"):
        convert(out_dir=half)
    with pytest.raises(FileExistsError, match="not a complete checkpoint.*--force"):
        convert(out_dir=half, force=True)
    assert [p.name for p in half.iterdir()] == ["config.json"]


def test_failed_conversion_leaves_no_folder(tmp_path, monkeypatch):
    def write_then_die(reader, out_dir):
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(convert_gguf, "GGUFReader", lambda path: None)
    monkeypatch.setattr(convert_gguf, "write_checkpoint", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        convert(default_gguf_path(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_a_converted_checkpoint_whole(tmp_path, monkeypatch):
    def write_fresh(reader, out_dir):
        for name in convert_gguf.CHECKPOINT_FILES:
            (out_dir / name).write_text("fresh")

    monkeypatch.setattr(convert_gguf, "GGUFReader", lambda path: None)
    monkeypatch.setattr(convert_gguf, "write_checkpoint", write_fresh)
    out = tmp_path / "out"
    out.mkdir()
    for name in convert_gguf.CHECKPOINT_FILES:
        (out / name).write_text("old")
    convert(default_gguf_path(), out, force=True)
    assert is_complete(out) and sorted(p.name for p in out.iterdir()) == sorted(convert_gguf.CHECKPOINT_FILES)
    assert (out / "config.json").read_text() == "fresh"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    reference = tmp_path / "reference.txt"
    reference.write_text("")  # created with this process's umask, as a plain new file
    assert (out / "config.json").stat().st_mode == reference.stat().st_mode


def test_force_never_replaces_a_folder_it_did_not_write(tmp_path, monkeypatch, capsys):
    """--force replaces a complete converted checkpoint, nothing else: not one with the user's files beside it, not a
    half folder, not a folder of other things (`--out .`); each is refused and left as it was."""
    monkeypatch.setattr(convert_gguf, "GGUFReader", lambda path: None)
    monkeypatch.setattr(convert_gguf, "write_checkpoint", lambda reader, out_dir: None)
    extra = tmp_path / "extra"
    extra.mkdir()
    for name in convert_gguf.CHECKPOINT_FILES:
        (extra / name).write_text("mine")
    (extra / "notes.txt").write_text("mine")
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text("mine")
    checkout = tmp_path / "checkout"
    (checkout / "train").mkdir(parents=True)
    (checkout / "README.md").write_text("mine")
    before = {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    for out in (extra, half, checkout):
        with pytest.raises(FileExistsError, match=str(out)):
            convert(default_gguf_path(), out, force=True)
        with pytest.raises(SystemExit) as exit_code:
            convert_gguf.main(["--out", str(out), "--force"])
        assert exit_code.value.code == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert (checkout / "train").is_dir()
