"""Where a tagger runs and in which precision: the one policy that training, tagging and the benchmarks share."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import torch

PRECISIONS = ("auto", "float32", "bf16")

# Padded tokens per tagging forward pass where a run does not set them, by device type. A CPU tags faster with 2048
# than with 8192 (docs/performance.md#evaluation-batches-python--m-bencheval_batches): a batch's activations stay
# nearer its caches. A GPU does a pass of 2048 tokens in a few milliseconds, mostly kernel launches: on an H200,
# tagging went from 14,684 to 71,864 tokens/s between passes of 32 and 256 sentences (issue 33).
TAGGING_TOKENS = {"cpu": 2048, "cuda": 16384}

CPUINFO = Path("/proc/cpuinfo")
# The flags Linux gives x86 bf16 matmul instructions, which oneDNN uses: AVX512_BF16 (Cooper Lake, Zen 4 and later)
# and AMX (Sapphire Rapids and later). Elsewhere torch multiplies bf16 by a reference path, 25x float32's time on
# an AVX2 EPYC (docs/performance.md#the-older-measurement).
BF16_INSTRUCTIONS = ("avx512_bf16", "amx_bf16")


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


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str] | None:
    """The instruction-set flags this CPU lists in /proc/cpuinfo (x86 "flags", ARM "Features"); None where it lists
    none, or there is no such file (macOS, Windows): then nothing is known."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = {word for line in text.splitlines() if line.partition(":")[0].strip() in ("flags", "Features")
             for word in line.partition(":")[2].split()}
    return flags or None


def cpu_multiplies_in_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether this CPU has bf16 matmul instructions (`BF16_INSTRUCTIONS`); False where that is unknown."""
    return bool((cpu_flags(cpuinfo) or set()) & set(BF16_INSTRUCTIONS))


def use_bf16(precision: str, device: torch.device) -> bool:
    """`auto`: bf16 autocast on GPUs that have it and on CPUs with bf16 matmul instructions, where it trains 1.7x
    and tags 2.4x as fast as float32 and scores as well (docs/results.md#bf16-on-a-cpu-issue-33); float32
    elsewhere, where bf16 would crawl."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        return device.type == "cpu" and cpu_multiplies_in_bf16()
    return precision == "bf16"


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked, else nothing: float32 throughout."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
