"""When a buffer handed out may be written again: nobody else refers to it.

snake reuses the memory it hands out (batch buffers, shared-memory segments, batch
slabs) instead of allocating it again, because faulting in fresh pages can cost as
much as the copy itself. A buffer is reused only once no array, view or buffer export
of it is alive; that is decided by reference count, without any help from the
consumer. Every array handed out is a view of an *owner* array that only the pool
keeps (in a list or a dict), and every view made from it, directly or not, holds a
reference to it; so while the consumer can see any of it, the owner's reference count
is above what the pool's own container accounts for.

That count is measured once, on a probe, through the same code as every check
(:func:`is_free`), so the rule holds on any CPython whatever it counts for a
container's element. What the rule cannot see is memory addressed without a Python
reference (a raw pointer from ``ctypes.data`` kept after the array is dropped). On
Pythons without ``sys.getrefcount`` (PyPy) nothing is ever reused.
"""

from __future__ import annotations

import platform
import sys
from typing import Any

import numpy as np

__all__ = ["CAN_REUSE", "is_free"]


def _refs(holder: Any, key: Any) -> int:
    # The only code that counts an owner's references: the free count is measured with it.
    return sys.getrefcount(holder[key])


#: Whether this Python can tell that nothing but the pool refers to a buffer.
CAN_REUSE = platform.python_implementation() == "CPython" and hasattr(sys, "getrefcount")
#: The count of an owner that only its container holds, as ``_refs`` sees it.
_FREE_REFS = _refs([np.empty(0, np.uint8)], 0) if CAN_REUSE else -1
assert not CAN_REUSE or _FREE_REFS == _refs({"k": np.empty(0, np.uint8)}, "k")


def is_free(holder: Any, key: Any) -> bool:
    """Whether nothing but ``holder`` (a list or a dict) refers to ``holder[key]``: no
    array, view or buffer export of it is alive. Always False where this cannot be told."""
    return CAN_REUSE and _refs(holder, key) == _FREE_REFS
