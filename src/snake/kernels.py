"""Rust kernels, run with the GIL released (crate ``src/snake_ext``, module ``snake._ext``).

- ``fib(n)``: the n-th Fibonacci number by the naive recursion, the seed demo's CPU
  kernel;
- ``stack(arrays, out=None)``: equally shaped arrays stacked along a new first axis,
  like ``np.stack``, into a new array or ``out``; O(total bytes);
- ``pad_stack(arrays, pad_value=0, out=None, pad_to=None)``: variable-length arrays
  into a padded batch and their lengths; O(batch bytes).

Each kernel checks its arguments with the GIL held, then does its work with the GIL
released, so ``par_map(kernel, backend="thread")`` runs it on several cores, and an
``open_sync()`` consumer thread keeps running while ``batch()`` writes a batch.
``stack`` and ``pad_stack`` accept inputs of any memory layout (a C-contiguous input is
copied with one ``memcpy``; a non-contiguous one, transposed, strided, reversed or
broadcast, is gathered run by run, with no temporary copy) and always write a
C-contiguous output. Other threads must not write to the inputs or to ``out`` during a
call, as with NumPy's own GIL-free copies.
"""

from __future__ import annotations

from ._ext import fib as fib
from ._ext import pad_stack as pad_stack
from ._ext import stack as stack

__all__ = ["fib", "pad_stack", "stack"]
