"""Rust kernels, run with the GIL released (crate ``src/snake_ext``, module ``snake._ext``).

Each kernel checks its arguments with the GIL held, then does its work with the GIL
released, so ``par_map(kernel, backend="thread")`` runs it on every core and an
``open_sync()`` consumer thread keeps running while a batch is written.

``fib(n)``
    Recursive Fibonacci: the seed demo's CPU kernel. O(phi**n) time, O(n)
    stack; the GIL is released for the whole computation.

``stack(arrays, out=None)``
    Stack N arrays of one shape and one dtype into a new first axis, like
    ``np.stack(arrays)``: returns an array of shape ``(N, *shape)``. O(total bytes)
    time; the copy runs with the GIL released. Any dtype that holds no Python objects.
    ``out``, if given, must be C-contiguous, writeable, of exactly that shape and
    dtype and share no memory with the inputs; it is filled and returned, which avoids
    the page faults of a fresh allocation (``Stream.batch()`` passes buffers from its
    pool). Raises ``ValueError`` on an empty sequence, a shape or dtype that differs
    from ``arrays[0]``'s (the message names the index, the shape and the dtype) or an
    unsuitable ``out``; ``TypeError`` on an element that is not an ndarray or on object
    dtype.

``pad_stack(arrays, pad_value=0, out=None, pad_to=None) -> (batch, lengths)``
    Stack arrays of shapes ``(n_i, *rest)`` (one dtype, one ``rest``) into a batch of
    shape ``(N, L, *rest)``, L being ``pad_to`` or the longest n_i: item i fills
    ``batch[i, :n_i]`` and ``pad_value`` the rest; ``lengths`` is the int64 array of
    the n_i. O(batch bytes) time, GIL released for the copy and the padding. Pads bool,
    int8-int64, uint8-uint64, float16/32/64 and complex64/128; integer and bool dtypes
    need a pad value they hold exactly. ``out`` as for ``stack``. Raises ``ValueError``
    on an empty sequence, a 0-d array, a dtype or trailing shape that differs from
    ``arrays[0]``'s (naming the index), ``pad_to`` below the longest length, a pad
    value the dtype cannot hold or an unsuitable ``out``; ``TypeError`` on a non-array,
    object dtype or a dtype that cannot be padded.

Contiguity: ``stack`` and ``pad_stack`` accept inputs of any memory layout. A
C-contiguous input is copied with one ``memcpy``; a non-contiguous one (transposed,
sliced with a step, reversed, broadcast) is gathered by the kernel run by run, with no
temporary copy. The output is always C-contiguous. Other threads must not write to the
inputs or to ``out`` during a call, as with NumPy's own GIL-free copies.
"""

from __future__ import annotations

from ._ext import fib as fib
from ._ext import pad_stack as pad_stack
from ._ext import stack as stack

__all__ = ["fib", "pad_stack", "stack"]
