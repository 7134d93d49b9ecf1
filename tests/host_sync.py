"""Count the torch operations that force a host synchronization on an accelerator, on any device.

On CUDA, reading a value back to Python (``item``, ``bool(t)``, ``tolist``), copying to the host (``cpu``,
``numpy``), and data-dependent shapes (``nonzero``, boolean-mask indexing, ``unique``) each wait for the
stream to drain. Creating a tensor from host data (``torch.as_tensor(ndarray)``) copies from the host. On the
CPU none of these costs anything, but they are the same calls, so counting them with a
:class:`~torch.overrides.TorchFunctionMode` on the CPU tells whether code would synchronize on a GPU.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

#: methods and functions that read device memory on the host or need a device-dependent output shape
SYNCING = frozenset({
    "item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "__array__",
    "nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "_local_scalar_dense",
})
#: indexing entry points that synchronize when an index is a boolean tensor
INDEXING = frozenset({"__getitem__", "__setitem__", "index_put_", "index_put"})
#: tensor factories that copy host data when given something other than a tensor
FACTORIES = frozenset({"as_tensor", "tensor"})


def _has_bool_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class HostSyncCounter(TorchFunctionMode):
    """``with HostSyncCounter() as counter: ...`` then ``counter.calls`` counts the synchronizing calls by name."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", repr(func))
        if name in SYNCING:
            self.calls[name] += 1
        elif name in INDEXING and len(args) > 1 and _has_bool_index(args[1]):
            self.calls[f"{name}[bool]"] += 1
        elif name in FACTORIES and args and not isinstance(args[0], torch.Tensor):
            self.calls[f"{name}(host data)"] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.calls.values())
