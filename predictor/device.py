"""Where a tagger runs and in which precision: the one policy that training, tagging and the benchmarks share."""

from __future__ import annotations

import contextlib
import re

import torch

PRECISIONS = ("auto", "float32", "bf16")

# Padded tokens per tagging forward pass where a run does not set them, by device type. A CPU tags faster with 2048
# than with 8192 (docs/performance.md#evaluation-batches-python--m-bencheval_batches): a batch's activations stay
# nearer its caches. A GPU does a pass of 2048 tokens in a few milliseconds, mostly kernel launches: on an H200,
# tagging went from 14,684 to 71,864 tokens/s between passes of 32 and 256 sentences (issue 33).
TAGGING_TOKENS = {"cpu": 2048, "cuda": 16384}


def check_device(name: str) -> None:
    """`name` must be a device this code runs on: auto, cpu, cuda, cuda:N or mps (whether this machine has it or
    not: a run trained on a GPU is tagged on a CPU)."""
    if name not in ("auto", "cpu", "mps") and not re.fullmatch(r"cuda(:\d+)?", name):
        raise ValueError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")


def resolve_device(name: str) -> torch.device:
    """`auto`: the GPU when there is one, else the CPU. A GPU this machine lacks is refused here rather than when
    the first weight moves to it."""
    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: there is no such GPU here (torch sees {torch.cuda.device_count()} CUDA "
                         "devices); use --device auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: this machine has no Apple GPU (torch.backends.mps); use --device auto or cpu")
    return device


def tagging_tokens(device: torch.device) -> int:
    """Padded tokens per tagging forward pass on `device`, when the run leaves it to the device."""
    return TAGGING_TOKENS.get(device.type, TAGGING_TOKENS["cpu"])


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast on GPUs that have it; float32 on CPUs, where bf16 matmuls are slow without AMX/AVX512-BF16."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return precision == "bf16"


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked, else nothing: float32 throughout."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
