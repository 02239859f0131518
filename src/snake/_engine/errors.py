"""snake's own exception types. User exceptions are never wrapped in these."""

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
    """A worker process died (killed, ``os._exit``, a segfault) while running items.

    The message names the stage and the item the worker was running; the
    ``__cause__`` says which worker process it was.
    """


class RemoteError(RuntimeError):
    """A user function raised, in a worker process, an exception that cannot be pickled.

    Its message holds the original type, message and the worker's traceback text.
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

