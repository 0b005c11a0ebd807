"""Model hyper-parameters: one dataclass, read from a Hugging Face `config.json` or a named preset."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.files import read_json


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3's rotary frequency scaling ("llama3" rope type).

    Long wavelengths (low frequencies) are divided by `factor`, short ones are kept, and the band in between is
    interpolated smoothly, so a model trained at `original_max_position_embeddings` reaches a longer context.
    """

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 128256
    hidden_size: int = 2048
    num_layers: int = 16
    num_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 64
    intermediate_size: int = 8192
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 131072
    tie_word_embeddings: bool = True
    causal: bool = True
    # With `causal=True`, lift the causal mask in the top k layers only ("Looking Right is Sometimes Right",
    # Dukić & Šnajder 2024). Ignored when `causal=False` (every layer is bidirectional then).
    bidirectional_top_layers: int = 0

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if not 0 <= self.bidirectional_top_layers <= self.num_layers:
            raise ValueError(f"bidirectional_top_layers={self.bidirectional_top_layers} not in [0, {self.num_layers}]")

    def layer_is_causal(self, layer: int) -> bool:
        return self.causal and layer < self.num_layers - self.bidirectional_top_layers

    def replace(self, **changes: Any) -> LlamaConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown LlamaConfig field(s): {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf(cls, source: str | Path | dict[str, Any]) -> LlamaConfig:
        """Read an HF `config.json` (a path to it, its folder, or the parsed dict).

        Accepts both the transformers 4 layout (`rope_theta`, `rope_scaling`) and the transformers 5 one
        (`rope_parameters`). `is_causal: false` in the file selects bidirectional attention.
        """
        where = "config dict"
        if isinstance(source, dict):
            hf = source
        else:
            path = Path(source)
            if path.is_dir():
                path = path / "config.json"
            where = str(path)
            hf = read_json(path)
        try:
            return cls._parse_hf(hf)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: malformed Llama config: {e!r}") from None

    @classmethod
    def _parse_hf(cls, hf: dict[str, Any]) -> LlamaConfig:
        if hf.get("model_type", "llama") != "llama":
            raise ValueError(f"model_type is {hf['model_type']!r}, expected 'llama'")
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act {hf['hidden_act']!r} is not supported (SwiGLU needs 'silu')")
        for flag in ("attention_bias", "mlp_bias"):
            if hf.get(flag):
                raise ValueError(f"{flag}=true is not supported")
        rope = dict(hf.get("rope_parameters") or {})
        rope_theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
        if not rope and hf.get("rope_scaling"):
            rope = dict(hf["rope_scaling"])
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type == "llama3":
            scaling = RopeScaling(
                factor=float(rope["factor"]),
                low_freq_factor=float(rope["low_freq_factor"]),
                high_freq_factor=float(rope["high_freq_factor"]),
                original_max_position_embeddings=int(rope["original_max_position_embeddings"]),
            )
        elif rope_type == "default":
            scaling = None
        else:
            raise ValueError(f"rope type {rope_type!r} is not supported (only 'default' and 'llama3')")
        heads = int(hf["num_attention_heads"])
        hidden = int(hf["hidden_size"])
        return cls(
            vocab_size=int(hf["vocab_size"]),
            hidden_size=hidden,
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=int(hf.get("head_dim") or hidden // heads),
            intermediate_size=int(hf["intermediate_size"]),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope_theta),
            rope_scaling=scaling,
            max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            causal=bool(hf.get("is_causal", True)),
        )


_LLAMA3_SCALING = RopeScaling(
    factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
)

PRESETS: dict[str, LlamaConfig] = {
    "llama-3.2-1b": LlamaConfig(
        vocab_size=128256, hidden_size=2048, num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64,
        intermediate_size=8192, rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=_LLAMA3_SCALING,
        max_position_embeddings=131072, tie_word_embeddings=True,
    ),
    "llama-3.2-3b": LlamaConfig(
        vocab_size=128256, hidden_size=3072, num_layers=28, num_heads=24, num_kv_heads=8, head_dim=128,
        intermediate_size=8192, rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=_LLAMA3_SCALING,
        max_position_embeddings=131072, tie_word_embeddings=True,
    ),
    "smollm2-135m": LlamaConfig(
        vocab_size=49152, hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64,
        intermediate_size=1536, rms_norm_eps=1e-5, rope_theta=100000.0, rope_scaling=None,
        max_position_embeddings=8192, tie_word_embeddings=True,
    ),
}
