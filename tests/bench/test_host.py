"""The operator count of bench/host.py against an independent count of the same calls: a TorchDispatchMode that
sees each operator the dispatcher hands to a kernel, on programs where that is exactly what the profiler's
outermost operators are; and the count of a whole training step, ours and the peer's, on the tiny shape."""

from __future__ import annotations

import argparse

import torch
from torch._inductor import config as inductor_config
from torch._inductor import metrics as inductor_metrics

from bench import gpu as gpu_bench
from bench.host import dispatched_ops
from bench.systems import training_step
from tests.dispatched import Dispatched

CPU = torch.device("cpu")


def primitive_program() -> None:
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    for _ in range(5):
        a = torch.mm(a, b).tanh().mul(0.5).add(b)
    a.sum()


def test_counts_each_operator_dispatched_once():
    with Dispatched() as mode:
        primitive_program()
    assert sum(mode.counts.values()) == 2 + 5 * 4 + 1  # two randn, four per round, one sum
    assert dispatched_ops(primitive_program) == sum(mode.counts.values())


def test_an_operator_called_by_another_is_not_counted_again():
    x, w = torch.randn(4, 8), torch.randn(3, 8)
    with Dispatched() as mode:
        torch.nn.functional.linear(x, w)
    assert sum(mode.counts.values()) >= 2  # linear runs as a transpose and a matmul below it
    assert dispatched_ops(lambda: torch.nn.functional.linear(x, w)) == 1


def test_a_compiled_function_counts_its_fused_kernels_as_launches():
    """Inductor's own count of the kernels it generated is the oracle: the matmul stays an ATen call (to the BLAS),
    the elementwise tail fuses; the eager program dispatches each operator on its own."""
    a, b = torch.randn(8, 8), torch.randn(8, 8)

    def program(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.mm(a, b).tanh().mul(0.5).add(b)

    torch._dynamo.reset()
    inductor_metrics.reset()
    compiled = torch.compile(program, backend="inductor")
    with inductor_config.patch({"cpp.enable_kernel_profile": True}):
        compiled(a, b)
    fused = inductor_metrics.generated_kernel_count
    assert fused >= 1
    assert dispatched_ops(lambda: program(a, b)) == 4
    assert dispatched_ops(lambda: compiled(a, b)) == 1 + fused


def test_a_training_step_is_counted_the_same_each_time_for_both_systems():
    args = argparse.Namespace(seed=0, activation_checkpointing=False)
    [batch] = gpu_bench.synthetic_batches(gpu_bench.TINY, 256, 1, 0, CPU)
    for system in ("ours", "hf"):
        model = gpu_bench.build(system, gpu_bench.TINY, args, CPU, bf16=False)
        step = training_step(system, model.train(), bf16=False)
        step(batch)  # the optimizer's state is made on the first step
        first, second = (dispatched_ops(lambda: step(batch)) for _ in range(2))
        with Dispatched() as mode:
            step(batch)
        kernels = sum(mode.counts.values())
        # The same step dispatches the same operators; the kernel-level count differs from the outermost one only
        # where a composite runs as several kernels (linear: transpose and matmul) or a cast is a no-op.
        assert first == second, system
        assert 0.8 * kernels < first < 1.25 * kernels, (system, first, kernels)
