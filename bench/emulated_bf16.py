"""bf16 training's numbers on a CPU that has no bf16 instructions, at about float32's speed.

    python -m bench.emulated_bf16 <python -m train's flags>      (runs them with --precision bf16)

Why: `--precision auto` may pick bf16 autocast on a CPU with AVX512_BF16 or AMX only if a default run in bf16
scores what float32 does (issue 33). Those CPUs run bf16 matmuls natively, with float32 accumulation; an AVX2 CPU
runs them through a reference path 25x slower than float32, so the default run would take half a day there.
This takes 1.4x float32's time (docs/results.md#bf16-on-a-cpu-issue-33).

What changes: under `EmulatedBF16`, a matrix product whose operands are bf16 (the ones autocast makes: `mm`,
`addmm`, `bmm`, `baddbmm`, and the CPU's fused attention forward and backward) is computed in float32 from the
very same bf16 operands and its result rounded to bf16, as the native kernels do. Everything else (which operators
autocast casts, the bf16 weights, the elementwise work in bf16, the float32 LoRA and head) is bf16 autocast's own
code path. One difference is left: the native attention kernel also rounds its softmax probabilities to bf16 before
multiplying them by the values; here they stay float32. Under inference_mode (tagging, evaluation) `linear` and
`scaled_dot_product_attention` reach the mode whole, not decomposed, so they are emulated whole.
tests/bench/test_emulated_bf16.py checks losses and gradients against real bf16 autocast.
"""

from __future__ import annotations

import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

import train.__main__ as train_main

aten = torch.ops.aten

# Operator -> the positions of its outputs that are bf16 when its inputs are (the others, such as attention's
# log-sum-exp, are float32 already).
PRODUCTS = {
    aten.linear.default: (0,),  # seen whole under inference_mode, which skips its decomposition into addmm or mm
    aten.matmul.default: (0,),
    aten.mm.default: (0,),
    aten.addmm.default: (0,),
    aten.bmm.default: (0,),
    aten.baddbmm.default: (0,),
    aten.scaled_dot_product_attention.default: (0,),  # whole under inference_mode, as linear
    aten._scaled_dot_product_flash_attention_for_cpu.default: (0,),
    aten._scaled_dot_product_flash_attention_for_cpu_backward.default: (0, 1, 2),
}


def _to_float32(x: object) -> object:
    return x.float() if isinstance(x, torch.Tensor) and x.dtype == torch.bfloat16 else x


def _has_bf16(args: tuple) -> bool:
    return any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args)


class EmulatedBF16(TorchDispatchMode):
    """Every bf16 matrix product in float32 from the same bf16 operands, rounded back to bf16. `emulated` counts
    them, per operator, so that a test can see none went to the native kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.emulated: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in PRODUCTS or not _has_bf16(args):
            return func(*args, **kwargs)
        self.emulated[str(func)] = self.emulated.get(str(func), 0) + 1
        out = func(*tree_map(_to_float32, args), **tree_map(_to_float32, kwargs))
        if isinstance(out, torch.Tensor):
            return out.to(torch.bfloat16)
        rounded = PRODUCTS[func]
        return tuple(o.to(torch.bfloat16) if i in rounded else o for i, o in enumerate(out))


def main(argv: list[str]) -> int:
    """`python -m train` with `argv` and --precision bf16, every bf16 product emulated."""
    if any(a == "--precision" or a.startswith("--precision=") for a in argv):
        print("error: bench.emulated_bf16 sets --precision bf16 itself; leave --precision out", file=sys.stderr)
        return 2
    with EmulatedBF16():
        return train_main.main([*argv, "--precision", "bf16"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
