"""What one call costs the host beside the FLOPs: the operators it dispatches, the times it waits for the GPU.

Operators, counted by torch.profiler, are the launch count a GPU pays for: the host spends a few microseconds on every
operator it hands a GPU, so a step of many small operators is bound by launches, not by FLOPs. The count is of the
ATen operators the profiler records that no other ATen operator called: each call from Python, or from an autograd
node in the backward pass, into the dispatcher. An operator that another one calls (`aten::linear` calling
`aten::addmm`) is its caller's business and is not counted again; views and no-op casts are counted, as their
dispatch costs the host time all the same. A compiled graph (torch.compile) launches fused kernels that are no ATen
operators: they are counted too, by the names inductor gives them (`triton_*` on a GPU, which the profiler always
sees; `*cpp_fused_*` on a CPU, which it sees when `torch._inductor.config.cpp.enable_kernel_profile` was set before
compiling).

A host sync (`.item()`, `bool(tensor)`, `nonzero()`, a copy to the CPU) stops the host from queueing work until the
GPU has caught up, so the GPU idles while the host catches up in turn. `torch.cuda.set_sync_debug_mode("warn")`
warns at each one, which `host_syncs` counts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def is_compiled_kernel(name: str) -> bool:
    """Whether a profiler event is a kernel that inductor generated (one launch, however many operators it fuses)."""
    return name.startswith("triton_") or "cpp_fused_" in name


def dispatched_ops(call: Callable[[], object]) -> int:
    """How many ATen operators `call()` dispatches that no other ATen operator called, and how many compiled kernels
    it launches."""
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        call()
    count = 0
    for event in profiler.events():
        if is_compiled_kernel(event.name):
            count += 1
            continue
        if not event.name.startswith("aten::"):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        count += parent is None
    return count


def host_syncs(call: Callable[[], object]) -> int:
    """How many times `call()` makes the host wait for the GPU (CUDA only)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            call()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)
