"""Record the operations that make a host wait for a device, so a CPU test can prove a step has none.

`torch.cuda.set_sync_debug_mode` needs a GPU. What makes a host wait is an answer the host needs from device data:
a scalar read (`.item()`, `bool(t)`, `int(t)`: aten `_local_scalar_dense`, `is_nonzero`), a result whose size
depends on the data (`nonzero`, `masked_select`, indexing or assigning with a boolean mask), or a copy of values to
host memory (`.tolist()`, `.numpy()`). Those are the same aten calls and tensor methods on a CPU, where they are
counted here: a dispatch mode sees every aten call, autograd's backward included; a function mode sees the tensor
methods that read values without an aten call. A copy made with `.to("cpu")` or `.cpu()` is not seen on a CPU
(it is not a copy there): that is the proxy's blind spot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
SYNCING_OPS = {aten.nonzero.default, aten._local_scalar_dense.default, aten.is_nonzero.default,
               aten.masked_select.default, aten.equal.default, aten.allclose.default}
BOOLEAN_INDEXING_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default,
                        aten._index_put_impl_.default}
READING_METHODS = {torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.item, torch.Tensor.__bool__}


def reads_data(func, args) -> bool:
    if func in SYNCING_OPS:
        return True
    if func in BOOLEAN_INDEXING_OPS:
        indices = args[1]
        return any(i is not None and i.dtype == torch.bool for i in indices)
    return False


class SyncingOps(TorchDispatchMode):
    def __init__(self, found: list[str]):
        super().__init__()
        self.found = found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if reads_data(func, args):
            self.found.append(str(func))
        return func(*args, **(kwargs or {}))


class ReadingMethods(TorchFunctionMode):
    def __init__(self, found: list[str]):
        super().__init__()
        self.found = found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in READING_METHODS:
            self.found.append(f"Tensor.{func.__name__}")
        return func(*args, **(kwargs or {}))


@contextmanager
def recorded_host_syncs() -> Iterator[list[str]]:
    """The list fills with the name of every operation inside the block that would wait for a device."""
    found: list[str] = []
    with ReadingMethods(found), SyncingOps(found):
        yield found
