"""File sources: ``from_parquet`` (row groups read in threads) and ``from_files``.

pyarrow is imported when a Parquet stream runs (or is sized), never by ``import snake``.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._chan import END
from .._util import CHUNK_CAP, add_note
from .base import Chunk, Fused, SourceSpec, timed_send

if TYPE_CHECKING:
    from .._run import Context


def resolve_paths(method: str, paths: object) -> tuple[str, ...]:
    """A glob pattern (sorted matches; none is an error) or a sequence of paths, as a tuple."""
    if isinstance(paths, (str, os.PathLike)):
        pattern = os.fspath(paths)
        if isinstance(pattern, bytes):
            raise TypeError(f"{method}: {paths!r} must be a str path or pattern")
        if glob.has_magic(pattern):
            found = tuple(sorted(glob.glob(pattern, recursive=True)))
            if not found:
                raise ValueError(f"{method}: the pattern {pattern!r} matches no file")
            return found
        return (pattern,)
    if isinstance(paths, Sequence) and not isinstance(paths, bytes):
        out = []
        for p in paths:
            if not isinstance(p, (str, os.PathLike)) or isinstance(os.fspath(p), bytes):
                raise TypeError(f"{method}: {p!r} in paths is not a str path")
            out.append(str(os.fspath(p)))
        return tuple(out)
    raise TypeError(f"{method}: {paths!r} must be a path, a glob pattern or a list of paths")


def _describe_paths(paths: tuple[str, ...]) -> str:
    if len(paths) == 1:
        return repr(paths[0])
    return f"<{len(paths)} files: {paths[0]!r}, ...>"


def _file_note(exc: BaseException, path: str) -> None:
    exc.add_note(f"snake: while reading the Parquet file {path!r}")


def _open_parquet(path: str) -> Any:
    import pyarrow.parquet as pq

    if not os.path.exists(path):
        raise FileNotFoundError(2, "from_parquet: no such file", path)
    try:
        return pq.ParquetFile(path)
    except Exception as exc:
        _file_note(exc, path)
        raise


def _read_metadata(path: str) -> Any:
    pf = _open_parquet(path)
    try:
        return pf.metadata
    finally:
        pf.close()


def _read_group(md: Any, path: str, group: int, columns: list[str] | None, batch_rows: int, rows: bool) -> Chunk:
    """One row group, as rows (dicts) or record batches of up to ``batch_rows`` rows.

    Every read opens its own reader: a pyarrow ``ParquetFile`` shared by threads fails
    ("ReadRangeCache did not find matching cache entry") or deadlocks.
    """
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path, metadata=md) as pf:
            table = pf.read_row_group(group, columns=columns)
        if rows:
            return list(table.to_pylist())
        return list(table.to_batches(max_chunksize=batch_rows))
    except Exception as exc:
        _file_note(exc, path)
        exc.add_note(f"snake: in row group {group}")
        raise


@attrs.frozen
class FromParquet(SourceSpec):
    """Reads row groups in up to ``readers`` threads at once, emitted in file and row-group
    order; at most ``readers`` row groups are held in memory besides the one being sent."""

    paths: tuple[str, ...]
    columns: tuple[str, ...] | None = None
    batch_rows: int = 1024
    rows: bool = True
    readers: int = 4

    def describe(self) -> str:
        extra = ""
        if self.columns is not None:
            extra += f", columns={list(self.columns)}"
        if self.batch_rows != 1024:
            extra += f", batch_rows={self.batch_rows}"
        if not self.rows:
            extra += ", rows=False"
        if self.readers != 4:
            extra += f", readers={self.readers}"
        return f"from_parquet({_describe_paths(self.paths)}{extra})"

    def length(self) -> int | None:
        """Rows (or record batches with ``rows=False``) in all files, from their footers."""
        total = 0
        for path in self.paths:
            md = _read_metadata(path)
            if self.rows:
                total += md.num_rows
            else:
                for g in range(md.num_row_groups):
                    n = md.row_group(g).num_rows
                    total += -(-n // self.batch_rows)
        return total

    async def run(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Chunk]) -> None:
        label = ctx.label(0)
        columns = list(self.columns) if self.columns is not None else None
        slots_send, slots_recv = trio.open_memory_channel[tuple[trio.Event, list[Chunk]]](self.readers)
        limiter = trio.Semaphore(self.readers)

        async def read(md: Any, path: str, group: int, done: trio.Event, box: list[Chunk]) -> None:
            try:
                box.append(
                    await trio.to_thread.run_sync(
                        _read_group, md, path, group, columns, self.batch_rows, self.rows
                    )
                )
            except Exception as exc:
                add_note(exc, label, None)
                raise
            done.set()

        async def launch(nursery: trio.Nursery) -> None:
            with slots_send:
                for path in self.paths:
                    try:
                        md = await trio.to_thread.run_sync(_read_metadata, path)
                    except Exception as exc:
                        add_note(exc, label, None)
                        raise
                    for group in range(md.num_row_groups):
                        await limiter.acquire()
                        done, box = trio.Event(), list[Chunk]()
                        nursery.start_soon(read, md, path, group, done, box)
                        await slots_send.send((done, box))

        counters = ctx.counters(label)
        counters.send_chan = send
        with send:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(launch, nursery)
                stopped = await self._emit(ctx, fused, send, slots_recv, limiter)
                nursery.cancel_scope.cancel()
            if stopped:
                return
            try:
                tail = fused.flush()
                if tail:
                    await timed_send(counters, send, tail)
                await timed_send(counters, send, END)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    @staticmethod
    async def _emit(
        ctx: Context,
        fused: Fused,
        send: trio.MemorySendChannel[Chunk],
        slots: trio.MemoryReceiveChannel[tuple[trio.Event, list[Chunk]]],
        limiter: trio.Semaphore,
    ) -> bool:
        """Send the row groups in order; True if the downstream went away."""
        counters = ctx.counters(ctx.label(0))
        with slots:
            async for done, box in slots:
                if fused.done:
                    return False
                await done.wait()
                items = box.pop()
                limiter.release()
                for i in range(0, len(items), CHUNK_CAP):
                    raw = items[i : i + CHUNK_CAP]
                    ctx.count_source(len(raw))
                    chunk = fused(raw)
                    if chunk:
                        try:
                            await timed_send(counters, send, chunk)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            return True
                    if fused.done:
                        return False
        return False


@attrs.frozen
class FromFiles(SourceSpec):
    paths: tuple[str, ...]

    def describe(self) -> str:
        return f"from_files({_describe_paths(self.paths)})"

    def length(self) -> int:
        return len(self.paths)

    async def run(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Chunk]) -> None:
        from .source import FromIterable

        await FromIterable(self.paths).run(ctx, fused, send)


async def read_bytes(path: str | os.PathLike[str], /) -> bytes:
    """The contents of the file at ``path``, read in a thread: ``.par_then(snake.read_bytes)``."""
    try:
        return await trio.Path(path).read_bytes()
    except OSError as exc:
        if getattr(exc, "filename", None) is None:
            exc.add_note(f"snake: while reading {os.fspath(path)!r}")
        raise
