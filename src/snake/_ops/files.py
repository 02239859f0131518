"""File sources: ``from_parquet`` (row groups read in threads, or handed out to be read
elsewhere) and ``from_files``, with filters, source-order shuffling and source-level sharding.

pyarrow is imported when a Parquet stream runs (or is sized, or is given ``filters``),
never by ``import snake``.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, final

import attrs
import trio

from .._engine.epoch import EPOCH, epoch_generator
from .._engine.resume import Cut, Resumable
from .._engine.sink import Sink
from .._engine.spec import Chunk, Fused, SourceSpec
from .._engine.util import CHUNK_CAP, add_note, spawn

if TYPE_CHECKING:
    from .._engine.context import Context


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


# -- source-level sharding and shuffling --------------------------------------------------


@attrs.frozen
class SourceShard:
    """``shard()`` applied by the source itself: rank ``rank`` takes the ``rank``-th
    contiguous share of the (shuffled) rows or files, and reads nothing else."""

    rank: int
    world_size: int
    equal: bool = False

    def describe(self) -> str:
        extra = ", equal=True" if self.equal else ""
        return f".shard(rank={self.rank}, world_size={self.world_size}{extra})"

    def span(self, total: int) -> tuple[int, int]:
        """The positions ``[lo, hi)`` out of ``total`` this rank takes: ``total // world_size``
        each with ``equal`` (the remainder, at the end, goes to no rank), else shares that
        differ by at most one."""
        w, r = self.world_size, self.rank
        if self.equal:
            per = total // w
            return r * per, (r + 1) * per
        return r * total // w, (r + 1) * total // w


def _permutation(n: int, seed: int | None, epoch: int) -> list[int]:
    return [int(i) for i in epoch_generator(seed, epoch).permutation(n)]


def _describe_order(shuffle: bool, seed: int | None, name: str) -> str:
    if not shuffle:
        return ""
    return f", {name}=True" + (f", seed={seed}" if seed is not None else "")


# -- Parquet: filters ---------------------------------------------------------------------

_NO_FIELD = re.compile(r"No match for FieldRef\.Name\((.*?)\) in ")


@final
class ParquetFilter:
    """A validated ``filters=`` argument: the pyarrow expression, and how the user wrote it."""

    __slots__ = ("expr", "text")

    def __init__(self, expr: Any, text: str) -> None:
        self.expr = expr
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParquetFilter) and bool(self.expr.equals(other.expr))

    def __hash__(self) -> int:
        return hash(self.text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ParquetFilter, (self.expr, self.text))


def check_filters(method: str, filters: object) -> ParquetFilter | None:
    """``filters``: None, a ``pyarrow.compute.Expression``, or the list-of-tuples form that
    ``pyarrow.parquet`` accepts (``[(col, op, value), ...]``, or a list of such lists for OR)."""
    if filters is None:
        return None
    if type(filters).__name__ == "Expression" and type(filters).__module__.startswith("pyarrow"):
        import pyarrow.compute as pc

        if isinstance(filters, pc.Expression):
            text = " ".join(str(filters).split())
            return ParquetFilter(filters, f"<Expression {text}>")
    if not isinstance(filters, list):
        raise TypeError(
            f"{method}: filters={filters!r} must be a pyarrow.compute.Expression or a list "
            "of (column, op, value) tuples (or a list of such lists, OR-ed)"
        )
    if not filters:
        raise ValueError(f"{method}: filters=[] is empty; leave it out (None) to keep every row")
    import pyarrow.parquet as pq

    try:
        expr = pq.filters_to_expression(filters)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"{method}: filters={filters!r} is not a valid filter: {exc}") from None
    return ParquetFilter(expr, repr(filters))


def _filter_columns(
    filt: ParquetFilter, schema: Any, columns: tuple[str, ...] | None, path: str
) -> tuple[str, ...] | None:
    """Check that ``filt`` binds to ``schema`` (a missing column is a ``ValueError`` naming the
    column and the file) and return the columns to read so that it can be applied."""
    try:
        schema.empty_table().filter(filt.expr)
    except Exception as exc:
        match = _NO_FIELD.search(str(exc))
        if match is not None:
            raise ValueError(
                f"from_parquet: filters={filt.text} refer to the column {match.group(1)!r}, which the "
                f"Parquet file {path!r} does not have (its columns: {', '.join(schema.names)})"
            ) from None
        _file_note(exc, path)
        exc.add_note(f"snake: while applying filters={filt.text}")
        raise
    if columns is None:
        return None
    used = []
    import pyarrow as pa

    for name in schema.names:
        if name in columns:
            continue
        without = pa.schema([f for f in schema if f.name != name])
        try:
            without.empty_table().filter(filt.expr)
        except Exception:
            used.append(name)
    return columns + tuple(used)


# -- Parquet: planning and reading ---------------------------------------------------------


def _file_note(exc: BaseException, path: str) -> None:
    exc.add_note(f"snake: while reading the Parquet file {path!r}")


def _open_parquet(path: str, metadata: Any = None) -> Any:
    import pyarrow.parquet as pq

    if not os.path.exists(path):
        raise FileNotFoundError(2, "from_parquet: no such file", path)
    try:
        return pq.ParquetFile(path, metadata=metadata)
    except Exception as exc:
        _file_note(exc, path)
        raise


class FilePlan(NamedTuple):
    path: str
    metadata: Any
    #: ``(row group, rows)`` of the row groups to read, in file order.
    groups: list[tuple[int, int]]
    #: The columns to read (the projection plus what the filter uses; None: all).
    needed: tuple[str, ...] | None


class Piece(NamedTuple):
    """The rows ``[start, stop)`` of one row group."""

    file: FilePlan
    group: int
    start: int
    stop: int
    size: int


def plan_file(
    path: str, columns: tuple[str, ...] | None, filt: ParquetFilter | None, cache: dict[Any, Any]
) -> FilePlan:
    """Read a file's footer; with a filter, check it and drop the row groups whose
    statistics show that no row can match."""
    pf = _open_parquet(path)
    try:
        md = pf.metadata
        schema = pf.schema_arrow
    finally:
        pf.close()
    groups = [(g, md.row_group(g).num_rows) for g in range(md.num_row_groups)]
    needed = columns
    if filt is not None:
        if schema not in cache:
            cache[schema] = _filter_columns(filt, schema, columns, path)
        needed = cache[schema]
        import pyarrow.dataset as ds
        import pyarrow.fs as pafs

        try:
            fragment = ds.ParquetFileFormat().make_fragment(
                os.path.abspath(path), filesystem=pafs.LocalFileSystem()
            )
            keep = {rg.id for rg in fragment.subset(filter=filt.expr).row_groups}
        except Exception as exc:
            _file_note(exc, path)
            exc.add_note(f"snake: while applying filters={filt.text} to its row-group statistics")
            raise
        groups = [(g, n) for g, n in groups if g in keep]
    return FilePlan(path, md, [(g, n) for g, n in groups if n > 0], needed)


def _cut(pieces: list[Piece], shard: SourceShard) -> list[Piece]:
    """This rank's rows: ``shard.span`` of the rows of ``pieces`` laid end to end."""
    lo, hi = shard.span(sum(p.size for p in pieces))
    out = []
    pos = 0
    for p in pieces:
        start, stop = max(lo, pos), min(hi, pos + p.size)
        if start < stop:
            out.append(p._replace(start=start - pos, stop=stop - pos))
        pos += p.size
        if pos >= hi:
            break
    return out


def arrange(
    files: list[FilePlan], shuffle: bool, seed: int | None, epoch: int, shard: SourceShard | None
) -> list[Piece]:
    """The pieces of ``files`` (their groups, each whole) in the epoch's order, cut to
    ``shard``'s rows."""
    pieces = [Piece(f, g, 0, n, n) for f in files for g, n in f.groups]
    if shuffle:
        pieces = [pieces[i] for i in _permutation(len(pieces), seed, epoch)]
    if shard is not None:
        pieces = _cut(pieces, shard)
    return pieces


def read_table(
    path: str,
    metadata: Any,
    group: int,
    start: int,
    stop: int,
    size: int,
    columns: tuple[str, ...] | None,
    needed: tuple[str, ...] | None,
    filt: ParquetFilter | None,
) -> Any:
    """Rows ``[start, stop)`` of one row group, filtered, with the ``columns`` asked for.

    Every read opens its own reader: a pyarrow ``ParquetFile`` shared by threads fails
    ("ReadRangeCache did not find matching cache entry") or deadlocks.
    """
    pf = _open_parquet(path, metadata)
    try:
        with pf:
            table = pf.read_row_group(group, columns=None if needed is None else list(needed))
        if (start, stop) != (0, size):
            table = table.slice(start, stop - start)
        if filt is not None:
            table = table.filter(filt.expr)
            if columns is not None and needed != columns:
                table = table.select(list(columns))
        return table
    except Exception as exc:
        notes = getattr(exc, "__notes__", ())
        if not any(n.startswith("snake: while reading the Parquet file") for n in notes):
            _file_note(exc, path)
        exc.add_note(f"snake: in row group {group}")
        raise


def _to_items(table: Any, rows: bool, batch_rows: int) -> Chunk:
    if rows:
        return list(table.to_pylist())
    return list(table.to_batches(max_chunksize=batch_rows))


def _read_items(
    p: Piece, columns: tuple[str, ...] | None, filt: ParquetFilter | None, rows: bool, batch_rows: int
) -> Chunk:
    f = p.file
    table = read_table(f.path, f.metadata, p.group, p.start, p.stop, p.size, columns, f.needed, filt)
    return _to_items(table, rows, batch_rows)


@attrs.frozen
class _ReadOptions:
    columns: tuple[str, ...] | None
    filt: ParquetFilter | None
    rows: bool
    batch_rows: int


@final
@attrs.frozen(repr=False)
class ParquetRowGroup:
    """What ``from_parquet(..., read=False)`` yields: a frozen, picklable handle on one
    row group of one file, or on the rows ``[start, stop)`` of it that this rank
    takes. It holds no data.

    Reading opens the file again (its footer included), so a handle can be read in
    another process: the usual use is a ``par_map`` function that reads a handle and
    decodes its rows, followed by ``flat_map(list)`` (:doc:`/tutorial`, Reading row
    groups in the workers), so that the data never passes through the main process.
    :meth:`read` gives what :func:`from_parquet` with the same arguments gives for
    these rows: dicts, or record batches of up to ``batch_rows`` rows with
    ``rows=False``, filtered by ``filters`` and projected to ``columns``. Errors are
    those of ``from_parquet``: ``FileNotFoundError`` with the path as ``filename``,
    or pyarrow's error with the file and row-group notes.

    ``repr``: ``ParquetRowGroup('a.parquet', index=3, rows=0:128)``.
    """

    #: The Parquet file.
    path: str
    #: The row group's index in the file.
    index: int
    #: The first row of the row group to read.
    start: int
    #: One past the last row to read (before ``filters`` apply).
    stop: int
    _needed: tuple[str, ...] | None
    _options: _ReadOptions

    @property
    def num_rows(self) -> int:
        """``stop - start``: the rows to read, before ``filters`` apply."""
        return self.stop - self.start

    def __repr__(self) -> str:
        return f"ParquetRowGroup({self.path!r}, index={self.index}, rows={self.start}:{self.stop})"

    def table(self) -> Any:
        """The same rows as :meth:`read`, as one ``pyarrow.Table`` (filtered, projected)."""
        o = self._options
        return read_table(
            self.path, None, self.index, self.start, self.stop, -1, o.columns, self._needed, o.filt
        )

    def read(self) -> list[Any]:
        """The rows, as ``from_parquet`` with the same arguments gives them: dicts, or
        record batches of up to ``batch_rows`` rows with ``rows=False``, filtered and
        projected.
        """
        return _to_items(self.table(), self._options.rows, self._options.batch_rows)


@attrs.frozen
class FromParquet(SourceSpec):
    """Reads row groups in up to ``readers`` threads at once, emitted in order (file and
    row-group order, or the epoch's shuffled order); at most ``readers`` row groups are
    held in memory besides the one being sent. With ``read=False``, emits
    :class:`ParquetRowGroup` handles instead of reading."""

    paths: tuple[str, ...]
    columns: tuple[str, ...] | None = None
    batch_rows: int = 1024
    rows: bool = True
    readers: int = 4
    filt: ParquetFilter | None = None
    shuffle: bool = False
    seed: int | None = None
    read: bool = True
    shard: SourceShard | None = None

    def describe(self) -> str:
        extra = ""
        if self.columns is not None:
            extra += f", columns={list(self.columns)}"
        if self.filt is not None:
            extra += f", filters={self.filt.text}"
        if self.batch_rows != 1024:
            extra += f", batch_rows={self.batch_rows}"
        if not self.rows:
            extra += ", rows=False"
        if self.readers != 4:
            extra += f", readers={self.readers}"
        extra += _describe_order(self.shuffle, self.seed, "shuffle_row_groups")
        if not self.read:
            extra += ", read=False"
        shard = self.shard.describe() if self.shard is not None else ""
        return f"from_parquet({_describe_paths(self.paths)}{extra}){shard}"

    @property
    def arranged(self) -> bool:
        """True if the row groups are shuffled or sharded: all footers are read first."""
        return self.shuffle or self.shard is not None

    def _plan_files(self, paths: Sequence[str], cache: dict[Any, Any]) -> list[FilePlan]:
        return [plan_file(p, self.columns, self.filt, cache) for p in paths]

    def _arrange(self, files: list[FilePlan], epoch: int, shuffle: bool = True) -> list[Piece]:
        return arrange(files, self.shuffle and shuffle, self.seed, epoch, self.shard)

    def length(self) -> int | None:
        """Rows (record batches with ``rows=False``, handles with ``read=False``) this stream
        produces, from the footers; None where filters or the epoch's order decide it."""
        if self.read and self.filt is not None:
            return None
        if self.shuffle and self.shard is not None and not (self.read and self.rows):
            return None
        pieces = self._arrange(self._plan_files(self.paths, {}), 0, shuffle=False)
        if not self.read:
            return len(pieces)
        if self.rows:
            return sum(p.stop - p.start for p in pieces)
        return sum(-(-(p.stop - p.start) // self.batch_rows) for p in pieces)

    def check_resumable(self) -> None:
        """Raise ``ValueError`` if this source cannot start again from a checkpoint."""
        if self.shuffle and self.seed is None:
            raise ValueError(
                f"from_parquet: {self.describe()} shuffles its row groups with fresh entropy, "
                "a new order every run, so a checkpoint cannot be resumed; pass seed="
            )

    def _handle(self, p: Piece) -> ParquetRowGroup:
        options = _ReadOptions(self.columns, self.filt, self.rows, self.batch_rows)
        return ParquetRowGroup(p.file.path, p.group, p.start, p.stop, p.file.needed, options)

    async def run(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Chunk]) -> None:
        label = ctx.label(0)
        epoch = EPOCH.get()
        cache: dict[Any, Any] = {}

        async def plan(paths: Sequence[str]) -> list[Piece]:
            try:
                files = await trio.to_thread.run_sync(self._plan_files, paths, cache)
            except Exception as exc:
                add_note(exc, label, None)
                raise
            return self._arrange(files, epoch)

        if not self.read:
            from .source import FromIterable

            with send:  # FromIterable closes it too; closing twice is harmless
                pieces = await plan(self.paths)
                await FromIterable([self._handle(p) for p in pieces]).run(ctx, fused, send)
            return
        res = _PiecesResume()
        entry = ctx.resumable(label, res)
        start, skip, again = res.start(entry)

        slots_send, slots_recv = trio.open_memory_channel[tuple[trio.Event, list[Chunk], int]](self.readers)
        limiter = trio.Semaphore(self.readers)

        async def read(p: Piece, done: trio.Event, box: list[Chunk]) -> None:
            try:
                box.append(
                    await trio.to_thread.run_sync(
                        _read_items, p, self.columns, self.filt, self.rows, self.batch_rows
                    )
                )
            except Exception as exc:
                add_note(exc, label, None)
                raise
            done.set()

        async def launch(nursery: trio.Nursery) -> None:
            with slots_send:
                batches = [self.paths] if self.arranged else [(p,) for p in self.paths]
                ordinal = 0
                for paths in batches:
                    for piece in await plan(paths):
                        k, ordinal = ordinal, ordinal + 1
                        if k < start and k not in again:
                            continue  # resumed: the consumer had its rows
                        await limiter.acquire()
                        done, box = trio.Event(), list[Chunk]()
                        spawn(nursery, read, piece, done, box)
                        await slots_send.send((done, box, k))

        with send:
            sink = Sink(ctx, fused, send)
            async with trio.open_nursery() as nursery:
                spawn(nursery, launch, nursery)
                await self._emit(sink, slots_recv, limiter, res, start, skip, again)
                nursery.cancel_scope.cancel()
            await sink.finish()

    @staticmethod
    async def _emit(
        sink: Sink,
        slots: trio.MemoryReceiveChannel[tuple[trio.Event, list[Chunk], int]],
        limiter: trio.Semaphore,
        res: _PiecesResume,
        start: int,
        skip: int,
        again: dict[int, list[int]],
    ) -> None:
        """Send the row groups on, in order, until they end or the sink stops. Resumed:
        first the rows a buffering stage held (pieces before ``start``), then piece
        ``start`` from row ``skip`` on."""
        with slots:
            async for done, box, k in slots:
                if sink.stopped:
                    return
                await done.wait()
                items = box.pop()
                limiter.release()
                if k in again:  # rows a buffering stage held come first
                    await sink.put([items[o] for o in again[k]])
                if k < start:
                    continue
                res.pieces.append((k, res.out - (skip if k == start else 0), len(items)))
                if k == start and skip:
                    items = items[skip:]
                res.out += len(items)
                for i in range(0, len(items), CHUNK_CAP):
                    await sink.put(items[i : i + CHUNK_CAP])
                    if sink.stopped:
                        return


class _PiecesResume(Resumable):
    """Checkpoints of ``from_parquet`` reading rows: for each piece (row group, or the
    rows of one a shard takes) since the consumer's position, its number in the
    epoch's order, its first row's number and its rows. A checkpoint names the piece
    and the row in it; a resumed source reads no piece before it."""

    __slots__ = ("again", "base", "out", "pieces")

    def __init__(self) -> None:
        self.pieces: list[tuple[int, int, int]] = []
        self.out = 0
        #: Where a resumed source started: (piece, row in it).
        self.base = (0, 0)
        #: Resumed: the rows that came again first, by number: (piece, row in it).
        self.again: dict[int, tuple[int, int]] = {}

    def start(self, entry: dict[str, Any] | None) -> tuple[int, int, dict[int, list[int]]]:
        """(the first piece to read, rows of it to skip, the rows a buffering stage held
        of earlier pieces: piece -> offsets)."""
        if entry is None:
            return 0, 0, {}
        piece, skip = int(entry.get("piece", 0)), int(entry.get("offset", 0))
        self.base = (piece, skip)
        self.out = int(entry["resume"])
        again: dict[int, list[int]] = {}
        for p, k, o in entry.get("refill", ()):
            again.setdefault(int(k), []).append(int(o))
            self.again[int(p)] = (int(k), int(o))
        return piece, skip, again

    def _locate(self, r: int) -> tuple[int, int]:
        if r in self.again:
            return self.again[r]
        for k, first, n in reversed(self.pieces):
            if first <= r:
                return (k, r - first) if r < first + n else (k + 1, 0)
        return self.base

    def cut(self, r: int) -> Cut:
        piece, offset = self._locate(r)
        return Cut(r, {"piece": piece, "offset": offset})

    def refill_state(self, outs: list[int], ins: list[int]) -> list[list[int]]:
        return [[p, *self._locate(p)] for p in outs]

    def prune(self, r: int) -> None:
        keep = [p for p in self.pieces if p[1] + p[2] > r]
        if len(keep) < len(self.pieces):
            self.pieces = keep


@attrs.frozen
class FromFiles(SourceSpec):
    paths: tuple[str, ...]
    shuffle: bool = False
    seed: int | None = None
    shard: SourceShard | None = None

    def describe(self) -> str:
        extra = _describe_order(self.shuffle, self.seed, "shuffle")
        shard = self.shard.describe() if self.shard is not None else ""
        return f"from_files({_describe_paths(self.paths)}{extra}){shard}"

    @property
    def arranged(self) -> bool:
        return self.shuffle or self.shard is not None

    def check_resumable(self) -> None:
        """Raise ``ValueError`` if this source cannot start again from a checkpoint."""
        if self.shuffle and self.seed is None:
            raise ValueError(
                f"from_files: {self.describe()} shuffles with fresh entropy, a new order every "
                "run, so a checkpoint cannot be resumed; pass seed="
            )

    def length(self) -> int:
        if self.shard is None:
            return len(self.paths)
        lo, hi = self.shard.span(len(self.paths))
        return hi - lo

    async def run(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Chunk]) -> None:
        from .source import FromIterable

        paths = list(self.paths)
        if self.shuffle:
            paths = [paths[i] for i in _permutation(len(paths), self.seed, EPOCH.get())]
        if self.shard is not None:
            lo, hi = self.shard.span(len(paths))
            paths = paths[lo:hi]
        await FromIterable(paths).run(ctx, fused, send)


async def read_bytes(path: str | os.PathLike[str], /) -> bytes:
    """The contents of the file at ``path``, read in a trio worker thread: for
    ``.par_then(snake.read_bytes, limit=N)`` after :func:`from_files`.

    An ``OSError`` without a file name gets the note ``snake: while reading
    'PATH'``.
    """
    try:
        return await trio.Path(path).read_bytes()
    except OSError as exc:
        if getattr(exc, "filename", None) is None:
            exc.add_note(f"snake: while reading {os.fspath(path)!r}")
        raise
