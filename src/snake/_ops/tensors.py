"""``to_torch``: NumPy batches become torch tensors without a copy.

torch is optional and imported only when a stream calls ``to_torch`` (never by
``import snake``). Conversion is ``torch.from_numpy``: the tensor shares the
array's memory and holds a reference to it, so a pooled batch buffer is not
reused while a tensor made from it lives (the pool checks reference counts).
Pinning and the host-to-device copy run in a thread stage, off the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from .inline import Map
from .parallel import ParMap

_INSTALL_HINT = (
    "to_torch needs PyTorch, which snake does not install: install the build for your "
    "machine (see https://pytorch.org/get-started/locally/; for CPU only: "
    "pip install torch --index-url https://download.pytorch.org/whl/cpu)"
)


def import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return torch


def check_device(torch: Any, device: object, pin_memory: bool) -> Any:
    """``torch.device(device)``, with snake's error message; None stays None."""
    if device is None:
        dev = None
    else:
        if not isinstance(device, (str, torch.device)):
            raise TypeError(f"to_torch: device={device!r} must be a str, a torch.device or None")
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"to_torch: device={device!r} is not a torch device ({exc})") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"to_torch: device={device!r} needs CUDA, and torch.cuda.is_available() is False"
            )
    if pin_memory and not torch.cuda.is_available():
        raise ValueError("to_torch: pin_memory=True needs CUDA, and torch.cuda.is_available() is False")
    return dev


def _convertible(arr: np.ndarray[Any, Any]) -> bool:
    # Like torch's default_convert: arrays of strings or objects stay NumPy.
    return arr.dtype.kind not in "OSUV"


def convert(torch: Any, obj: Any) -> Any:
    """NumPy arrays (and scalars) in ``obj`` as tensors; dicts, lists and
    (named)tuples are walked; everything else is returned unchanged."""
    if isinstance(obj, np.ndarray):
        if not _convertible(obj):
            return obj
        if not obj.flags.writeable:
            # torch warns on every read-only array and would let a tensor write into
            # it; a copy is the honest answer for the rare read-only batch.
            obj = obj.copy()
        return torch.from_numpy(obj)
    if isinstance(obj, np.generic):
        return torch.as_tensor(obj) if _convertible(np.asarray(obj)) else obj
    if isinstance(obj, Mapping):
        out = {k: convert(torch, v) for k, v in obj.items()}
        if type(obj) is dict:
            return out
        cls: Any = type(obj)
        try:
            return cls(out)
        except TypeError:
            return out
    if isinstance(obj, tuple):
        items = [convert(torch, v) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, list):
        return [convert(torch, v) for v in obj]
    return obj


def move(torch: Any, obj: Any, device: Any, pin_memory: bool) -> Any:
    """Pin and/or move every tensor in ``obj``."""
    if isinstance(obj, torch.Tensor):
        if pin_memory:
            obj = obj.pin_memory()
        if device is not None:
            # From pinned memory the copy is asynchronous; torch's caching host
            # allocator keeps the pinned block alive until the copy is done.
            obj = obj.to(device, non_blocking=pin_memory)
        return obj
    if isinstance(obj, dict):
        return {k: move(torch, v, device, pin_memory) for k, v in obj.items()}
    if isinstance(obj, tuple):
        items = [move(torch, v, device, pin_memory) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, list):
        return [move(torch, v, device, pin_memory) for v in obj]
    return obj


@attrs.frozen
class ToTensors:
    """The function of the ``to_torch`` stage (conversion, then pinning and moving)."""

    device: Any = None
    pin_memory: bool = False

    def __call__(self, obj: Any) -> Any:
        torch = import_torch()
        out = convert(torch, obj)
        if self.device is not None or self.pin_memory:
            out = move(torch, out, self.device, self.pin_memory)
        return out

    def args(self) -> str:
        parts = []
        if self.device is not None:
            parts.append(f"device={str(self.device)!r}")
        if self.pin_memory:
            parts.append("pin_memory=True")
        return ", ".join(parts)


@attrs.frozen
class ToTorchInline(Map):
    """``to_torch()`` with no move: ``from_numpy`` costs microseconds, so inline."""

    def describe(self) -> str:
        assert isinstance(self.fn, ToTensors)
        return f"to_torch({self.fn.args()}){self.errors.describe()}"


@attrs.frozen
class ToTorchThread(ParMap):
    """``to_torch(device=..., pin_memory=...)``: pinning and copies in one thread."""

    def describe(self) -> str:
        assert isinstance(self.fn, ToTensors)
        return f"to_torch({self.fn.args()}){self.errors.describe()}"
