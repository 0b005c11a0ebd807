"""Fill a `Llama` from a Hugging Face checkpoint folder (config.json + safetensors, single file or sharded).

The model is first built on the meta device (no memory), then every tensor is read, converted to the target dtype
and placed one at a time, so peak memory is one copy of the weights. Loading is strict: every tensor the model
needs must be there with the right shape, and nothing else may be.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from model.config import LlamaConfig
from model.llama import Llama

CHECKPOINT_PREFIX = "model."  # HF's LlamaForCausalLM keeps the backbone under `model.`; lm_head sits beside it


def checkpoint_key_to_ours(key: str) -> str:
    """`model.layers.0.self_attn.q_proj.weight` -> `layers.0.self_attn.q_proj.weight`; `lm_head.weight` stays."""
    return key.removeprefix(CHECKPOINT_PREFIX)


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint: `model.safetensors`, or the shards an index names."""
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.exists():
        return [single]
    if not index.exists():
        raise FileNotFoundError(f"{folder}: neither model.safetensors nor model.safetensors.index.json found")
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{index}: malformed shard index ({e!r})") from None
    shards = [folder / name for name in sorted(set(weight_map.values()))]
    for shard in shards:
        if not shard.exists():
            raise FileNotFoundError(f"{shard}: shard listed in {index.name} is missing")
    return shards


def load_llama(
    path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu", **config_overrides
) -> Llama:
    """Load an HF Llama checkpoint folder. `dtype=None` keeps the stored dtype; `config_overrides` replace
    `LlamaConfig` fields (e.g. `causal=False`)."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: checkpoint folder not found")
    config = LlamaConfig.from_hf(folder).replace(**config_overrides)
    with torch.device("meta"):
        model = Llama(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if config.tie_word_embeddings:
        del expected["lm_head.weight"]  # the same tensor as embed_tokens.weight

    state: dict[str, torch.Tensor] = {}
    for file in weight_files(folder):
        state.update(_read_tensors(file, expected, state, config, dtype, device))
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(CHECKPOINT_PREFIX + m if m != "lm_head.weight" else m for m in missing[:5])
        raise ValueError(f"{folder}: {len(missing)} tensor(s) missing from the checkpoint, e.g. {shown}")

    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    return model.to(device)


def _read_tensors(
    file: Path,
    expected: dict[str, tuple[int, ...]],
    seen: dict[str, torch.Tensor],
    config: LlamaConfig,
    dtype: torch.dtype | None,
    device: str | torch.device,
) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for key in f.keys():
                name = checkpoint_key_to_ours(key)
                shape = tuple(f.get_slice(key).get_shape())
                if name == "lm_head.weight" and config.tie_word_embeddings:
                    # Some tied checkpoints store the output projection anyway; it is the embedding matrix.
                    if shape != (config.vocab_size, config.hidden_size):
                        raise ValueError(f"{file}: tensor {key} has shape {shape}, "
                                         f"expected {(config.vocab_size, config.hidden_size)}")
                    continue
                if name not in expected:
                    raise ValueError(f"{file}: unexpected tensor {key} (not part of this Llama config)")
                if name in seen or name in tensors:
                    raise ValueError(f"{file}: tensor {key} appears in more than one shard")
                if shape != expected[name]:
                    raise ValueError(f"{file}: tensor {key} has shape {shape}, expected {expected[name]}")
                tensor = f.get_tensor(key)
                tensors[name] = tensor.to(device=device, dtype=dtype or tensor.dtype)
    except SafetensorError as e:
        raise ValueError(f"{file}: unreadable safetensors file ({e})") from None
    except OSError as e:
        raise OSError(f"{file}: cannot read ({e})") from None
    return tensors
