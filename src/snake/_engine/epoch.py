"""The epoch counter of ``repeat()`` and deterministic per-item randomness.

``repeat()`` runs the stages before it once per epoch, in child pipelines opened
inside a task where :data:`EPOCH` holds the epoch number. Every task and thread
those stages start inherits it (trio copies the context of the task that starts
a child task, and ``trio.to_thread`` copies it into the thread); worker
*processes* do not, so code that runs in ``par_map(backend="process")`` passes
the epoch along with the item.
"""

from __future__ import annotations

from contextvars import ContextVar

import numpy as np

#: The epoch of the innermost ``repeat()`` around the running stage (0 outside one).
EPOCH: ContextVar[int] = ContextVar("snake_epoch", default=0)


def current_epoch() -> int:
    """The epoch (0, 1, ...) of the innermost :meth:`Stream.repeat` running the calling
    code; 0 outside one.

    A context variable: visible in the stages *before* ``repeat()`` (they run once
    per epoch), their ``par_then`` tasks and ``par_map(backend="thread")`` threads;
    not in worker processes, which should receive the epoch with the item.
    """
    return EPOCH.get()


def check_seed(method: str, seed: object, *, allow_none: bool = True) -> int | None:
    """Validate a seed argument: a non-negative int (or None where that means 'fresh entropy')."""
    if seed is None and allow_none:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{method}: seed={seed!r} must be an int{' or None' if allow_none else ''}")
    if seed < 0:
        raise ValueError(f"{method}: seed={seed!r} must be >= 0")
    return seed


def epoch_generator(seed: int | None, epoch: int) -> np.random.Generator:
    """The generator a seeded stage uses in ``epoch``; fresh entropy when ``seed`` is None."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(np.random.SeedSequence([seed, epoch]))


def rng(index: int, /, *, seed: int = 0, epoch: int | None = None) -> np.random.Generator:
    """A NumPy ``Generator`` seeded from ``(seed, epoch, index)``: per-item randomness
    that is the same in every run and whichever worker, process or thread runs the
    item.

    ``index`` is the item's position (from ``enumerate()``, say); ``epoch`` defaults
    to :func:`current_epoch` (pass it explicitly in a worker process). Different
    epochs give different streams, so augmentations change from one epoch to the
    next. Costs about 10 µs a call.

    Raises: ``TypeError: rng: index=... must be an int``, ``ValueError: rng:
    index=... must be >= 0``, ``ValueError: rng: epoch=... must be an int >= 0``,
    ``TypeError: rng: seed=... must be an int``, ``ValueError: rng: seed=... must be
    >= 0``.
    """
    check_seed("rng", seed, allow_none=False)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"rng: index={index!r} must be an int")
    if index < 0:
        raise ValueError(f"rng: index={index!r} must be >= 0")
    if epoch is None:
        epoch = EPOCH.get()
    elif isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"rng: epoch={epoch!r} must be an int >= 0")
    return np.random.default_rng(np.random.SeedSequence([seed, int(epoch), int(index)]))
