"""Typed stub of ``snake._ext``, snake's Rust kernels (use them through ``snake.kernels``).

Every function checks its arguments with the GIL held and does its work with the GIL
released. ``stack`` and ``pad_stack`` accept input arrays of any memory layout
(C-contiguous ones are copied with one memcpy each; transposed, sliced or reversed ones are
gathered directly, without a temporary copy) and any dtype that holds no Python objects
(``pad_stack`` pads bool, int8-int64, uint8-uint64, float16/32/64 and complex64/128).
``out``, when given, must be C-contiguous, writeable, of exactly the result's shape and
dtype, and share no memory with the inputs; it is filled and returned.
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["fib", "pad_stack", "stack"]

def fib(n: int) -> int:
    """The n-th Fibonacci number by naive recursion; exponential time, GIL released.

    Raises ValueError unless 0 <= n <= 92 (fib(93) overflows int64); TypeError if n is
    not an int.
    """

def stack(
    arrays: Sequence[npt.NDArray[np.generic]],
    out: npt.NDArray[np.generic] | None = None,
    threads: int | None = None,
) -> npt.NDArray[np.generic]:
    """Stack equally shaped, equally typed arrays along a new first axis (like numpy.stack).

    Returns ``out`` if given, else a new array of shape ``(len(arrays), *arrays[0].shape)``.
    Raises ValueError on an empty sequence, a mismatched shape or dtype (naming its index)
    or an unsuitable ``out``; TypeError on a non-array element or object dtype.
    ``threads``: how many threads copy (None: one per 4 MiB of output, at most 4 and the
    cores this process may use; 1: never start a thread).
    """

def pad_stack(
    arrays: Sequence[npt.NDArray[np.generic]],
    pad_value: complex = 0,
    out: npt.NDArray[np.generic] | None = None,
    pad_to: int | None = None,
    threads: int | None = None,
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.int64]]:
    """Stack variable-length arrays (same dtype and trailing shape) into a padded batch.

    Returns ``(batch, lengths)``: batch of shape ``(len(arrays), L, *rest)`` with L =
    ``pad_to`` or the longest length, filled past each item's length with ``pad_value``
    (a bool, int, float or complex, cast to the dtype; integer and bool dtypes need a value
    they hold exactly), and the int64 lengths of shape ``(len(arrays),)``.
    Raises ValueError on an empty sequence, a 0-d array, a mismatched dtype or trailing shape
    (naming its index), ``pad_to`` below the longest length, a pad value the dtype cannot
    hold or an unsuitable ``out``; TypeError on a non-array element, object dtype or a dtype
    that cannot be padded.
    """
