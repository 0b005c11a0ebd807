"""What a trained tagger is and how it tags: the record a run directory keeps beside its training settings, so
that tagging needs nothing of training (run_dir.py writes it as tagging.json)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from data.decode import DECODERS
from predictor.device import PRECISIONS

FINETUNES = ("lora", "full")


@dataclass(frozen=True)
class TaggingSettings:
    # The network: the base checkpoint, its attention, the head, and what training changed.
    model: str  # the base checkpoint folder (absolute when a run writes it)
    causal: bool = False  # keep the decoder's causal mask (model/attention.py); bidirectional by default
    bidirectional_top_layers: int = 0  # with `causal`: the top layers see the whole window
    head_dropout: float = 0.1  # off when tagging; the exported Hugging Face config carries it
    finetune: str = "lora"  # lora: the run keeps an adapter and the head; full: every trained tensor
    # Windows (data/align.py): tokens per window, tokens between window starts, BOS first, whole documents or
    # one sentence at a time.
    max_len: int = 256
    stride: int | None = 192
    add_bos: bool = True
    document: bool = True
    # Batches and tags: padded tokens per forward pass (None: by the device, predictor.device.tagging_tokens), how
    # scores become tags (data/decode.py), the precision.
    max_tokens: int | None = None
    decode: str = "viterbi"
    precision: str = "auto"

    def __post_init__(self) -> None:
        for name, choices in (("finetune", FINETUNES), ("decode", DECODERS), ("precision", PRECISIONS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.max_tokens is not None and self.max_tokens < self.max_len:
            raise ValueError(f"max_tokens ({self.max_tokens}) must hold one window (max_len {self.max_len})")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TaggingSettings:
        """The settings of a tagging.json; a key this version does not know is an error, not ignored."""
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown tagging settings {sorted(unknown)}")
        return cls(**raw)
