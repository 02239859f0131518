"""Rust kernels, run with the GIL released (crate ``src/snake_ext``, module ``snake._ext``).

``fib(n)``
    Recursive Fibonacci: the seed demo's CPU kernel. O(phi**n) time, O(n)
    stack; the GIL is released for the whole computation, so
    ``par_map(snake.kernels.fib, backend="thread")`` runs on every core.
"""

from __future__ import annotations

from ._ext import fib as fib

__all__ = ["fib"]
