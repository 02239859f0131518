"""snake's own exception types. User exceptions are never wrapped in these."""

from __future__ import annotations


class WorkerCrashedError(RuntimeError):
    """A worker process died (killed, ``os._exit``, a segfault) while running items.

    The message names the stage and the items that were in flight; the
    ``__cause__`` is trio-parallel's ``BrokenWorkerError``.
    """


class RemoteError(RuntimeError):
    """A user function raised, in a worker process, an exception that cannot be pickled.

    Its message holds the original type, message and the worker's traceback text.
    """
