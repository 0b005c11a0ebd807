"""Fixtures shared by several test files."""

from __future__ import annotations

from pathlib import Path

import pytest

from weights.convert_gguf import DEFAULT_OUT, convert


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct, converted from its GGUF once (some seconds) and kept in weights/."""
    return convert(out_dir=DEFAULT_OUT)
