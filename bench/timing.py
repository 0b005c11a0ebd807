"""The benchmarks' clock: warm-up calls run before it starts, and on a GPU it waits for the kernels queued.

A GPU runs a kernel after the Python call that queued it has returned, so a clock read at once would time the
queueing. The clock starts once the warm-up's kernels are done and stops once the timed calls' kernels are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import torch

Item = TypeVar("Item")
Result = TypeVar("Result")


def synchronize(device: torch.device) -> None:
    """Wait for the kernels queued on a GPU; a CPU has run them already."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    call: Callable[[Item], Result], warmup: Iterable[Item], timed: Iterable[Item], device: torch.device
) -> tuple[float, list[Result]]:
    """`call` on each warm-up item off the clock (first calls pay for allocation, kernel choice, compilation), then
    on each timed item: the seconds these took, and their results."""
    for item in warmup:
        call(item)
    synchronize(device)
    start = time.perf_counter()
    results = [call(item) for item in timed]
    synchronize(device)
    return time.perf_counter() - start, results
