"""Int8 tagging on a CPU: the seven projections of every transformer block as int8 matmuls.

The projections hold nearly all of a tagger's FLOPs. Each weight is stored once in int8 with a scale per output row;
at every call each token's activations get a scale of their own ("vector-wise" quantization, Dettmers et al. 2022,
"LLM.int8()", arXiv:2208.07339), the matmul runs on int8 with int32 sums (`torch._int_mm`)
and the result is scaled back to float32:

    y = x W^T + b  ~  (s_x s_w^T) * (round(x / s_x) @ round(W / s_w)^T) + b,   s_x = max|x_t| / 127 per token t,
                                                                              s_w = max|W_o| / 127 per output o.

A scale per token, not one per batch, is what keeps the F1: torch.ao's dynamic quantization (one 7-bit scale for all
tokens of a batch) lost 2.6 F1 on CoNLL-2003 and 11.6 on WNUT-17; this loses 0.03 to 0.22 and 0.56
(docs/performance.md). Attention, the norms, the embedding and the head stay in float32. Since the loss is above
the 0.1 allowed, int8 is a choice (`--int8`, `load_tagger(..., int8=True)`), not the default.

It pays only on a CPU with int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX on x86; the dot-product or
int8 matrix extension on ARM). Without them, as on an AVX2-only x86, `torch._int_mm` falls back to plain loops: 2.2
to 2.7 GOP/s on the AVX2 EPYC of this project against 63 to 120 GFLOP/s for float32, 40x slower. There int8 is
refused rather than run, and so it is where the CPU's instructions cannot be read (neither Linux's /proc/cpuinfo nor
macOS's sysctl tells): a slow path is never taken on a guess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from lora.inject import LLAMA_TARGETS
from model.tagger import Tagger
from predictor.device import CPUINFO, cpu_flags

INT8_ON_CPU = False  # the default of tagging on a CPU: in int8 F1 falls by up to 0.22 (0.56 on WNUT-17)
# The names Linux gives int8 dot products in /proc/cpuinfo: x86 "flags", then ARM "Features".
INT8_INSTRUCTIONS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
MACOS_INT8_FEATURES = ("hw.optional.arm.FEAT_DotProd", "hw.optional.arm.FEAT_I8MM")  # sysctl names, Apple silicon


def int8_is_fast(cpuinfo: Path = CPUINFO, system: str = sys.platform) -> bool | None:
    """Whether this CPU has int8 dot-product instructions (module docstring): on Linux from the x86 flags or ARM
    features listed in /proc/cpuinfo, on macOS from sysctl. None where neither tells: the caller refuses int8."""
    if system == "darwin":
        return _macos_int8_is_fast()
    flags = cpu_flags(cpuinfo)
    return None if flags is None else bool(flags & set(INT8_INSTRUCTIONS))


def _macos_int8_is_fast() -> bool | None:
    """Apple silicon's answer to `sysctl -n` for each feature (1 or 0); None where sysctl knows neither (an Intel
    Mac, whose VNNI it does not name this way)."""
    answers = []
    for name in MACOS_INT8_FEATURES:
        try:
            done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            answers.append(done.stdout.strip() == "1")
    return any(answers) if answers else None


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, n) float -> (rows, n) int8 and the (rows, 1) float32 scales that bring it back: x ~ q * scale."""
    scale = x.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / 127
    return (x / scale).round().clamp(-127, 127).to(torch.int8), scale


class Int8Linear(nn.Module):
    """A linear layer computed in int8: weights quantized once per output row, activations at every call per
    token (formula in the module docstring)."""

    def __init__(self, linear: nn.Module):
        super().__init__()
        if getattr(linear, "merged", True) is False:
            raise ValueError("quantize a LoRA layer after merging it (merge_lora): its update would be lost")
        weight, scale = quantize_rows(linear.weight.detach())  # (out, in) int8, (out, 1)
        self.register_buffer("weight_t", weight.t().contiguous())  # (in, out): the layout _int_mm takes
        self.register_buffer("weight_scale", scale.t().contiguous())  # (1, out)
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # (N, in): the padding-free stack of tokens
        q, scale = quantize_rows(rows)
        y = torch._int_mm(q, self.weight_t).float().mul_(scale).mul_(self.weight_scale)  # (N, out) int32 -> float32
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_int8(tagger: Tagger) -> Tagger:
    """Put an Int8Linear in place of each projection of the tagger's transformer blocks (a LoRA layer must be merged
    first). The tied vocabulary projection, which a tagger never calls, and the head stay as they are. CPU only."""
    if next(tagger.parameters()).device.type != "cpu":
        raise ValueError("int8 tagging runs on a CPU; load the run with device='cpu'")
    layers = tagger.backbone.layers
    for name, module in list(layers.named_modules()):
        parent, _, attr = name.rpartition(".")
        if attr in LLAMA_TARGETS:
            setattr(layers.get_submodule(parent), attr, Int8Linear(module))
    return tagger


def use_int8(int8: bool | None, device: torch.device) -> bool:
    """Whether to tag in int8: as asked, or (None) the CPU default."""
    if int8 and device.type != "cpu":
        raise ValueError(f"int8 tagging runs on a CPU, not on {device}")
    fast = int8_is_fast() if int8 else None
    if int8 and fast is False:
        raise ValueError(f"int8 tagging needs a CPU with int8 dot-product instructions ({', '.join(INT8_INSTRUCTIONS)}"
                         f" in {CPUINFO}); this one has none, and int8 matmuls would run about 40x slower than "
                         "float32 here: tag without --int8")
    if int8 and fast is None:
        raise ValueError(f"int8 tagging cannot tell whether this CPU has int8 dot-product instructions (neither "
                         f"{CPUINFO} nor sysctl says so); without them int8 matmuls run about 40x slower than "
                         "float32: tag without --int8")
    return INT8_ON_CPU and device.type == "cpu" if int8 is None else int8
