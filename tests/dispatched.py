"""An independent count of operators: a TorchDispatchMode sees each operator the dispatcher hands to a kernel."""

from __future__ import annotations

from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode


class Dispatched(TorchDispatchMode):
    """Counts the operators that reach the dispatcher's Python key, by name (`aten::mm`, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.name()] += 1
        return func(*args, **(kwargs or {}))

    @property
    def aten(self) -> int:
        """How many ATen operators ran: the kernels a GPU would be handed (not the profiler's markers)."""
        return sum(n for name, n in self.counts.items() if name.startswith("aten::"))
