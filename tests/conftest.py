"""Fixtures shared by several test files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from weights.convert_gguf import DEFAULT_OUT, convert


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct, converted from its GGUF once (some seconds) and kept in weights/."""
    return convert(out_dir=DEFAULT_OUT)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, smollm2_dir) -> Path:
    """A random 2-layer Llama that speaks SmolLM2's tokenizer: fast enough to train many steps in a test."""
    from tests.hf_reference import make_hf_checkpoint  # imports transformers: only when a test asks for it

    folder = make_hf_checkpoint(tmp_path_factory.mktemp("tiny"), vocab_size=49152, hidden_size=32,
                                intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=512)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2_dir / name, folder / name)
    return folder
