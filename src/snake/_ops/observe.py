"""``monitor(callback, every=...)`` and ``progress()``: pass-through inline stages.

Both are inline operators: they run in the task of the stage before them, see
each chunk as it passes and return it unchanged, so they cost no channel hop and
a few hundred nanoseconds per chunk (never per item, except summing ``nbytes``
when the items are arrays). A chunk that passes after ``every`` seconds triggers
the callback; the end of the stream triggers a last call. A stream that stalls
triggers nothing until its next chunk.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable
from typing import Any

import attrs

from .._engine.spec import Chunk, InlineSpec, Op
from .._engine.util import add_note, describe_callable

Metrics = dict[str, float]

_log = logging.getLogger("snake.progress")


def _nbytes(chunk: Chunk) -> int | None:
    """Bytes of the arrays in ``chunk`` (items that are arrays, or dicts/tuples of them);
    None if its first item holds no array."""
    first = chunk[0]
    if hasattr(first, "nbytes"):
        return sum(int(getattr(x, "nbytes", 0)) for x in chunk)
    if isinstance(first, dict):
        return sum(int(getattr(v, "nbytes", 0)) for x in chunk for v in x.values())
    if isinstance(first, tuple) and any(hasattr(v, "nbytes") for v in first):
        return sum(int(getattr(v, "nbytes", 0)) for x in chunk for v in x)
    return None


class _Meter(Op):
    """Counts items (and array bytes) and fires :meth:`fire` every ``every`` seconds."""

    __slots__ = ("bytes", "every", "has_bytes", "last", "last_bytes", "last_items", "start")

    def __init__(self, label: str, every: float) -> None:
        super().__init__(label)
        self.every = every
        self.start = 0.0
        self.last = 0.0
        self.last_items = 0
        self.bytes = 0
        self.last_bytes = 0
        self.has_bytes = False

    def __call__(self, chunk: Chunk) -> Chunk:
        now = time.perf_counter()
        if not self.start:
            self.start = self.last = now
        self.seen += len(chunk)
        n = _nbytes(chunk)
        if n is not None:
            self.has_bytes = True
            self.bytes += n
        if now - self.last >= self.every:
            self._fire(now)
        return chunk

    def flush(self) -> Chunk:
        self._fire(time.perf_counter(), final=True)
        return []

    def restore(self, entry: dict[str, Any]) -> None:
        super().restore(entry)  # the item count goes on from the checkpoint
        self.last_items = self.seen

    def metrics(self, now: float) -> Metrics:
        dt = now - self.last
        out: Metrics = {
            "items": float(self.seen),
            "items_per_s": (self.seen - self.last_items) / dt if dt > 0 else 0.0,
            "elapsed_s": now - self.start if self.start else 0.0,
        }
        if self.has_bytes:
            out["bytes"] = float(self.bytes)
            out["bytes_per_s"] = (self.bytes - self.last_bytes) / dt if dt > 0 else 0.0
        return out

    def _fire(self, now: float, final: bool = False) -> None:
        try:
            self.fire(now, final)
        except Exception as exc:
            add_note(exc, self.label, None)
            raise
        self.last, self.last_items, self.last_bytes = now, self.seen, self.bytes

    @abc.abstractmethod
    def fire(self, now: float, final: bool) -> None:
        """Report the metrics (the monitor's callback, or the progress bar)."""


class _MonitorOp(_Meter):
    __slots__ = ("callback",)

    def __init__(self, label: str, callback: Callable[[Metrics], object], every: float) -> None:
        super().__init__(label, every)
        self.callback = callback

    def fire(self, now: float, final: bool) -> None:
        self.callback(self.metrics(now))


@attrs.frozen
class Monitor(InlineSpec):
    """``monitor(callback, every=seconds)``."""

    callback: Callable[[Metrics], object]
    every: float = 10.0

    def describe(self) -> str:
        return f"monitor({describe_callable(self.callback)}, every={self.every!r})"

    def out_length(self, n: int) -> int | None:
        return n

    def make(self, label: str) -> Op:
        return _MonitorOp(label, self.callback, self.every)


class _ProgressOp(_Meter):
    __slots__ = ("bar", "desc", "total")

    def __init__(self, label: str, total: int | None, desc: str | None) -> None:
        # tqdm limits its own redraws; without tqdm, a log line every 5 s.
        super().__init__(label, 5.0)
        self.total = total
        self.desc = desc
        self.bar: Any = None

    def __call__(self, chunk: Chunk) -> Chunk:
        if self.bar is None:
            self.bar = _open_bar(self.total, self.desc, self.seen)
        if self.bar is not False:
            self.seen += len(chunk)
            self.bar.update(len(chunk))
            return chunk
        return super().__call__(chunk)

    def flush(self) -> Chunk:
        if self.bar is not None and self.bar is not False:
            self.bar.close()
            return []
        return super().flush()

    def fire(self, now: float, final: bool) -> None:
        m = self.metrics(now)
        total = f"/{self.total}" if self.total is not None else ""
        _log.info(
            "%s%d%s items, %.0f items/s%s",
            f"{self.desc}: " if self.desc else "",
            self.seen,
            total,
            m["items_per_s"],
            " (done)" if final else "",
        )


def _open_bar(total: int | None, desc: str | None, initial: int) -> Any:
    try:
        from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return False
    return tqdm(total=total, desc=desc, unit="it", smoothing=0.1, initial=initial)


@attrs.frozen
class Progress(InlineSpec):
    """``progress(total=..., desc=...)``."""

    total: int | None = None
    desc: str | None = None

    def describe(self) -> str:
        args = []
        if self.total is not None:
            args.append(f"total={self.total}")
        if self.desc is not None:
            args.append(f"desc={self.desc!r}")
        return f"progress({', '.join(args)})"

    def out_length(self, n: int) -> int | None:
        return n

    def make(self, label: str) -> Op:
        return _ProgressOp(label, self.total, self.desc)
