"""What runs in a worker process for a ``par_map`` stage: the stage's function over a
unit of items. Imported by the launcher before it forks, so it must stay light: no
trio, nothing of snake's engine, not even NumPy (the shared-memory transport imports
it when a result holds arrays)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from . import shm
from .child import portable

Chunk = list[Any]
Failure = tuple[int, BaseException]


def apply(
    fn: Callable[[Any], Any],
    items: Chunk,
    start: int,
    label: str,
    skip: bool,
    mark: Callable[[int], None] | None = None,
) -> tuple[Chunk, list[Failure]]:
    """Run ``fn`` over ``items``. A failure gets the stage note with its index and is
    raised, or, when ``skip``, collected with its index while the other items go on.
    ``mark(index)`` is called as each item starts (for progress and stall reports)."""
    if not skip and (mark is None or len(items) == 1):
        if mark is not None:
            mark(start)
        it = iter(items)
        try:
            return list(map(fn, it)), []
        except Exception as exc:
            _add_note(exc, label, start + len(items) - operator.length_hint(it) - 1)
            raise
    results: Chunk = []
    failures: list[Failure] = []
    for i, x in enumerate(items):
        if mark is not None:
            mark(start + i)
        try:
            results.append(fn(x))
        except Exception as exc:
            _add_note(exc, label, start + i)
            if not skip:
                raise
            failures.append((start + i, exc))
    return results, failures


def _add_note(exc: BaseException, label: str, index: int) -> None:
    """The stage note of a failed item (``_engine.errors``, and with it attrs, imported
    only when an item fails: the launcher imports this module before it forks)."""
    from .._engine.errors import add_note

    add_note(exc, label, index)


def apply_in_worker(
    fn: Callable[[Any], Any],
    items: Chunk,
    start: int,
    label: str,
    skip: bool,
    shm_prefix: str | None,
    progress: tuple[str, int] | None,
    lent: list[tuple[str, int]],
    dests: shm.Dests | None,
) -> tuple[bool, Any, list[Failure]]:
    """What a worker process runs: ``(True, results, failures)`` or ``(False, error, [])``.

    Large numpy arrays in the results travel through shared memory (see ``shm.py``).
    With ``progress`` (a slot file and a slot), the index of each item is written
    there before the item starts, for the main process to read.
    """
    mark = None
    if progress is not None:
        slots = shm.progress_view(progress[0])
        slot = progress[1]

        def mark(index: int) -> None:
            slots[slot] = index

    try:
        results, failures = apply(fn, items, start, label, skip, mark)
    except Exception as exc:
        return False, portable(exc), []
    failures = [(i, portable(e)) for i, e in failures]
    if shm_prefix is not None:
        shm.worker_run(shm_prefix)
        if dests is not None:
            results = shm.write_slots(results, dests)
        results = shm.export(results, shm_prefix, lent)
    return True, results, failures
