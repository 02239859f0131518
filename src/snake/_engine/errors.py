"""snake's own exception types. User exceptions are never wrapped in these, except an
unpicklable exception from a worker process (:class:`RemoteError`).
"""

from __future__ import annotations

import logging
from typing import Literal

import attrs


def add_note(exc: BaseException, label: str, index: int | None) -> None:
    """Attach the standard snake note (stage and item index) to a user exception."""
    note = f"snake: raised in stage {label}"
    if index is not None:
        note += f" on item index {index}"
    notes = getattr(exc, "__notes__", None)
    if notes is not None and any(n.startswith("snake: raised in") for n in notes):
        return
    exc.add_note(note)


class WorkerCrashedError(RuntimeError):
    """A worker process of a ``par_map(backend="process")`` stage died (killed,
    ``os._exit``, a segfault) while running an item, as many times as ``retries``
    allowed.

    The message names the stage and the item the worker was running, the number of
    attempts when there was more than one, and how the worker ended::

        a worker process of stage #1 par_map(fn, workers=2, retries=1) died while
        running item index 3 (2 attempts) (Fatal Python error: Segmentation fault)

    (one line). A fatal signal (a segfault, an abort in C code) is reported as
    Python's ``faulthandler`` reports it; a worker that ended without one
    (``os._exit``, a kill signal, the kernel's out-of-memory killer) is said to have
    left no Python error. It has the note ``snake: raised in stage #1 par_map(...)
    on item index 3``. Its ``__cause__`` is snake's error for the worker's death in
    the last attempt, whose message names the worker process by its pid and, after
    a fatal signal, holds the Python stack of every thread of the worker at that
    moment (``worker process 30266 died:`` then ``Fatal Python error: Segmentation
    fault`` and the stack). Under ``on_error("skip")`` the item is dropped instead.
    An item that runs past ``par_map(timeout=...)`` raises ``TimeoutError``, not
    this.
    """


class RemoteError(RuntimeError):
    """A function in a worker process raised an exception that cannot be pickled.

    The message holds the original type and message, then the worker's traceback
    text: ``TypeName: message``, a new line, ``Traceback (most recent call last):
    ...``.
    """


# -- on_error policies ------------------------------------------------------------------

logger = logging.getLogger("snake.errors")

ErrorMode = Literal["raise", "skip"]


@attrs.frozen
class ErrorPolicy:
    """What a stage does when its function raises for an item (``on_error``)."""

    #: ``"raise"`` (the default) fails the pipeline; ``"skip"`` drops the item.
    mode: ErrorMode = "raise"
    #: With ``"skip"``: the most items that may be dropped, as a count (int) or as
    #: a fraction (float in (0, 1)) of the items the stage has received so far
    #: (at least one). ``None``: no limit.
    max_errors: int | float | None = None

    def describe(self) -> str:
        if self.mode == "raise" and self.max_errors is None:
            return ""
        extra = "" if self.max_errors is None else f", max_errors={self.max_errors!r}"
        return f".on_error({self.mode!r}{extra})"


class ErrorBudget:
    """One stage run's accounting of the errors its policy lets it skip."""

    __slots__ = ("label", "policy", "skipped")

    def __init__(self, policy: ErrorPolicy, label: str) -> None:
        self.policy = policy
        self.label = label
        #: Items dropped so far.
        self.skipped = 0

    @property
    def skips(self) -> bool:
        return self.policy.mode == "skip"

    def absorb(self, exc: BaseException, index: int | None, received: int) -> bool:
        """True if the item that raised ``exc`` is dropped; False if ``exc`` must propagate.

        ``exc`` already carries the stage note. ``received`` is how many items the
        stage has received so far (for fractional budgets).
        """
        if self.policy.mode != "skip" or not isinstance(exc, Exception):
            return False
        limit = self.policy.max_errors
        if isinstance(limit, float):
            allowed = max(1, int(limit * max(received, 1)))
        else:
            allowed = limit if limit is not None else -1
        if allowed >= 0 and self.skipped + 1 > allowed:
            exc.add_note(
                f"snake: stage {self.label} skipped {self.skipped} failing items already; "
                f"max_errors={limit!r} allows no more (of {received} received)"
            )
            return False
        self.skipped += 1
        where = self.label if index is None else f"{self.label} item index {index}"
        logger.warning("snake: skipped %s after %s: %s", where, type(exc).__qualname__, exc)
        return True

