"""``from_huggingface``: a Hugging Face dataset's own files, read and decoded in workers.

A ``datasets.Dataset`` keeps its rows in Arrow IPC stream files (``cache_files``; what
``save_to_disk`` writes), and a dataset on the Hub keeps them in Parquet shards. This
source plans *pieces* of those files in the main process (the record batches of an
Arrow file, the row groups of a Parquet file: only sizes are read), arranges them as
``from_parquet`` does (``shuffle_row_groups``, ``shard()`` at the source), and reads and
decodes each piece in a ``par_map`` worker, with the dataset's ``Features``. It runs as
a child pipeline (pieces, ``par_map``, ``flat_map``) inside the source's task, as
``chain()`` runs its inputs; a checkpoint is that child's checkpoint, which names the
piece and the row in it.

``datasets`` is optional: ``import snake`` never imports it; ``from_huggingface`` does
(in the main process, and in each worker that decodes).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, final

import attrs
import trio

from .._engine.epoch import EPOCH
from .._engine.sink import Sink
from .._engine.spec import Fused, SourceSpec
from .files import FilePlan, Piece, SourceShard, _describe_order, arrange, plan_file, read_table

if TYPE_CHECKING:
    from .._engine.context import Context

Kind = Literal["arrow", "parquet"]

INSTALL = 'pip install "snake[huggingface]" (or pip install datasets)'


def import_datasets(method: str) -> Any:
    """The ``datasets`` module, or an ``ImportError`` that says how to install it."""
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(f"{method} needs the Hugging Face datasets package: {INSTALL}") from exc
    return datasets


# -- finding the files ---------------------------------------------------------------------


@attrs.frozen
class Found:
    """What ``from_huggingface`` reads: files of one kind, their features, a name for the repr."""

    kind: Kind
    paths: tuple[str, ...]
    #: ``Features.to_dict()`` as JSON: hashable, and cheap to send to workers.
    features: str
    what: str


def _features_json(features: Any) -> str:
    return json.dumps(features.to_dict(), sort_keys=True)


def _arrow_rows(path: str) -> list[int]:
    """The row counts of the record batches of an Arrow IPC file (stream or file format)."""
    import pyarrow as pa

    source = pa.memory_map(path)
    if source.read(6) == b"ARROW1":
        reader = pa.ipc.open_file(source)
        return [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
    source.seek(0)
    return [b.num_rows for b in pa.ipc.open_stream(source)]


def _arrow_schema(path: str) -> Any:
    import pyarrow as pa

    source = pa.memory_map(path)
    if source.read(6) == b"ARROW1":
        return pa.ipc.open_file(source).schema
    source.seek(0)
    return pa.ipc.open_stream(source).schema


def _from_dataset(method: str, ds: Any, what: str) -> Found:
    """A ``datasets.Dataset``'s files, checked to hold exactly its rows and columns."""
    if getattr(ds, "_indices", None) is not None:
        raise ValueError(
            f"{method}: {what} has an indices mapping (from select, shuffle, filter, sort, ...), "
            "so its files do not hold its rows in order; call .flatten_indices() first, or "
            "save_to_disk() it and pass the path"
        )
    files = [os.path.abspath(f["filename"]) for f in ds.cache_files]
    if not files:
        raise ValueError(
            f"{method}: {what} is held in memory, not in files, so workers cannot read it; "
            "save_to_disk(path) it and pass the path (or use snake.from_iterable(dataset))"
        )
    files = list(dict.fromkeys(files))
    schema = ds.data.schema.remove_metadata()
    rows = 0
    for f in files:
        if not _arrow_schema(f).remove_metadata().equals(schema):
            break
        rows += sum(_arrow_rows(f))
    else:
        if rows == ds.data.num_rows:
            return Found("arrow", tuple(files), _features_json(ds.features), what)
    raise ValueError(
        f"{method}: {what} differs from its files (it was sliced, renamed, cast, or has columns "
        "added in memory); save_to_disk() it and pass the path"
    )


def _pick_split(method: str, splits: Sequence[str], split: str | None, what: str) -> str:
    if split is None:
        if len(splits) == 1:
            return splits[0]
        raise ValueError(f"{method}: {what} has the splits {sorted(splits)}; pass split= to choose one")
    if split not in splits:
        raise ValueError(f"{method}: split={split!r} is not one of the splits of {what}: {sorted(splits)}")
    return split


def _parquet_files(method: str, path: str, split: str | None) -> tuple[tuple[str, ...], str | None]:
    """The Parquet shards of one split of a directory laid out as on the Hub, found as
    ``datasets`` finds them (``train-00000-of-00002.parquet``, ``data/train/0.parquet``,
    ...), and that split (None: the directory has no split names)."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        patterns = get_data_patterns(path)
        found = DataFilesDict.from_patterns(patterns, base_path=path)
    except Exception as exc:  # EmptyDatasetError, FileNotFoundError: no data files at all
        raise ValueError(f"{method}: {path!r} holds no Parquet files ({exc})") from None
    by_split = {str(k): [f for f in v if str(f).endswith(".parquet")] for k, v in found.items()}
    by_split = {k: v for k, v in by_split.items() if v}
    if not by_split:
        raise ValueError(f"{method}: {path!r} holds no Parquet files")
    names = sorted(by_split)
    chosen = _pick_split(method, names, split, repr(path))
    return tuple(sorted(str(f) for f in by_split[chosen])), chosen


def resolve(method: str, source: object, split: str | None) -> Found:
    """What to read, from a ``Dataset``, a ``DatasetDict``, a ``save_to_disk`` directory or a
    directory of Parquet shards."""
    if split is not None and not isinstance(split, str):
        raise TypeError(f"{method}: split={split!r} must be a str or None")
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not isinstance(path, str):
            raise TypeError(f"{method}: {source!r} must be a str path")
        if not os.path.isdir(path):
            raise FileNotFoundError(2, f"{method}: no such directory", path)
        datasets = import_datasets(method)
        what = repr(path)
        if os.path.exists(os.path.join(path, "dataset_dict.json")):
            with open(os.path.join(path, "dataset_dict.json")) as f:
                splits = json.load(f)["splits"]
            chosen = _pick_split(method, splits, split, what)
            ds = datasets.load_from_disk(os.path.join(path, chosen))
            return _from_dataset(method, ds, what)
        if os.path.exists(os.path.join(path, "state.json")):
            if split is not None:
                raise ValueError(f"{method}: split={split!r} given, but {what} holds one Dataset, not splits")
            return _from_dataset(method, datasets.load_from_disk(path), what)
        paths, _ = _parquet_files(method, path, split)
        import pyarrow.parquet as pq

        features = datasets.Features.from_arrow_schema(pq.read_schema(paths[0]))
        return Found("parquet", paths, _features_json(features), what)
    datasets = import_datasets(method)
    if isinstance(source, datasets.DatasetDict):
        chosen = _pick_split(method, list(source), split, "the DatasetDict")
        ds = source[chosen]
        return _from_dataset(method, ds, f"<Dataset {chosen!r}, {ds.num_rows} rows>")
    if isinstance(source, datasets.Dataset):
        if split is not None:
            raise ValueError(f"{method}: split={split!r} applies to a DatasetDict or a directory, not a Dataset")
        return _from_dataset(method, source, f"<Dataset {source.num_rows} rows>")
    if isinstance(source, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        raise TypeError(
            f"{method}: {type(source).__name__} streams from its source and has no files of its own; "
            "use snake.from_iterable(dataset), or load it without streaming=True"
        )
    raise TypeError(
        f"{method}: {source!r} must be a datasets.Dataset, a DatasetDict, or the path of a "
        "directory (save_to_disk's, or Parquet shards)"
    )


def check_columns(method: str, columns: object, found: Found) -> tuple[str, ...] | None:
    if columns is None:
        return None
    if isinstance(columns, str) or not isinstance(columns, Sequence):
        raise TypeError(f"{method}: columns={columns!r} must be a list of column names")
    names = list(json.loads(found.features))
    for c in columns:
        if not isinstance(c, str):
            raise TypeError(f"{method}: columns={columns!r} must be a list of column names")
        if c not in names:
            raise ValueError(f"{method}: columns={list(columns)!r}: {c!r} is not a column of {found.what} ({names})")
    return tuple(columns)


# -- pieces --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _features(features: str, columns: tuple[str, ...] | None) -> Any:
    datasets = import_datasets("from_huggingface")
    f = datasets.Features.from_dict(json.loads(features))
    if columns is not None:
        f = datasets.Features({c: f[c] for c in columns})
    return f


def _read_arrow(path: str, index: int, start: int, stop: int, columns: tuple[str, ...] | None) -> Any:
    import pyarrow as pa

    try:
        source = pa.memory_map(path)
        if source.read(6) == b"ARROW1":
            batch = pa.ipc.open_file(source).get_batch(index)
        else:
            source.seek(0)
            reader = pa.ipc.open_stream(source)
            for _ in range(index + 1):
                batch = reader.read_next_batch()
        table = pa.Table.from_batches([batch.slice(start, stop - start)])
        return table if columns is None else table.select(list(columns))
    except Exception as exc:
        exc.add_note(f"snake: while reading the Arrow file {path!r}, record batch {index}")
        raise


@final
@attrs.frozen(repr=False)
class HuggingFacePiece:
    """What ``from_huggingface(..., read=False)`` yields: a frozen, picklable handle on
    the rows ``[start, stop)`` of one record batch of an Arrow file of the dataset (or
    of one row group of a Parquet shard). It holds no data.

    :meth:`read` opens the file again (Arrow files are memory-mapped) and gives what
    :func:`from_huggingface` with the same arguments gives for these rows: dicts,
    decoded with the dataset's ``Features`` unless ``decode=False``. Read handles in
    ``par_map`` workers, with your own work on the rows after the decoding, so that
    neither the files nor the decoded rows pass through the main process.

    ``repr``: ``HuggingFacePiece('data-00000-of-00001.arrow', index=3, rows=0:100)``.
    """

    #: The Arrow or Parquet file.
    path: str
    #: ``"arrow"`` or ``"parquet"``.
    kind: Kind
    #: The record batch's (row group's) index in the file.
    index: int
    #: The first row of it to read.
    start: int
    #: One past the last row to read.
    stop: int
    _columns: tuple[str, ...] | None
    _features: str
    _decode: bool

    @property
    def num_rows(self) -> int:
        """``stop - start``: the rows this handle reads."""
        return self.stop - self.start

    def __repr__(self) -> str:
        return f"HuggingFacePiece({self.path!r}, index={self.index}, rows={self.start}:{self.stop})"

    def table(self) -> Any:
        """The rows as one ``pyarrow.Table`` (projected to ``columns``, not decoded)."""
        if self.kind == "arrow":
            return _read_arrow(self.path, self.index, self.start, self.stop, self._columns)
        return read_table(self.path, None, self.index, self.start, self.stop, -1, self._columns, self._columns, None)

    def read(self) -> list[dict[str, Any]]:
        """The rows, as dicts, decoded by the dataset's ``Features`` (an ``Image`` column
        gives ``PIL.Image.Image``, an ``Audio`` column a dict with the samples)
        unless ``decode=False`` (then as stored: an ``Image`` is ``{'bytes': ...,
        'path': ...}``)."""
        rows: list[dict[str, Any]] = self.table().to_pylist()
        if not self._decode:
            return rows
        features = _features(self._features, self._columns)
        return [features.decode_example(row) for row in rows]


def read_piece(piece: HuggingFacePiece) -> list[dict[str, Any]]:
    """The ``par_map`` function of ``from_huggingface``: a piece's decoded rows."""
    return piece.read()


def _rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return rows


@attrs.frozen
class _Pieces(SourceSpec):
    """The handles of a dataset's pieces, in the epoch's order, cut to the shard's rows."""

    found: Found
    columns: tuple[str, ...] | None
    decode: bool
    shuffle: bool
    seed: int | None
    shard: SourceShard | None

    def describe(self) -> str:
        return f"<pieces of {self.found.what}>"

    def plan_files(self) -> list[FilePlan]:
        if self.found.kind == "parquet":
            return [plan_file(p, None, None, {}) for p in self.found.paths]
        out = []
        for p in self.found.paths:
            if not os.path.exists(p):
                raise FileNotFoundError(2, "from_huggingface: no such file", p)
            groups = [(i, n) for i, n in enumerate(_arrow_rows(p)) if n > 0]
            out.append(FilePlan(p, None, groups, None))
        return out

    def pieces(self, epoch: int, shuffle: bool = True) -> list[Piece]:
        return arrange(self.plan_files(), self.shuffle and shuffle, self.seed, epoch, self.shard)

    def handle(self, p: Piece) -> HuggingFacePiece:
        f = self.found
        return HuggingFacePiece(p.file.path, f.kind, p.group, p.start, p.stop, self.columns, f.features, self.decode)

    async def run(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Any]) -> None:
        from .source import FromIterable

        epoch = EPOCH.get()
        with send:  # FromIterable closes it too; closing twice is harmless
            try:
                pieces = await trio.to_thread.run_sync(self.pieces, epoch)
            except Exception as exc:
                exc.add_note(f"snake: while planning {ctx.label(0)}")
                raise
            await FromIterable([self.handle(p) for p in pieces]).run(ctx, fused, send)


@attrs.frozen
class FromHuggingFace(SourceSpec):
    """Reads and decodes a dataset's pieces in ``workers`` ``par_map`` workers, in order."""

    found: Found
    columns: tuple[str, ...] | None = None
    decode: bool = True
    workers: int = 1
    backend: Literal["process", "thread"] = "process"
    shuffle: bool = False
    seed: int | None = None
    read: bool = True
    split: str | None = None
    shard: SourceShard | None = None

    def describe(self) -> str:
        extra = ""
        if self.split is not None:
            extra += f", split={self.split!r}"
        if self.columns is not None:
            extra += f", columns={list(self.columns)}"
        if not self.decode:
            extra += ", decode=False"
        if self.read:
            extra += f", workers={self.workers}"
            if self.backend != "process":
                extra += f", backend={self.backend!r}"
        extra += _describe_order(self.shuffle, self.seed, "shuffle_row_groups")
        if not self.read:
            extra += ", read=False"
        shard = self.shard.describe() if self.shard is not None else ""
        return f"from_huggingface({self.found.what}{extra}){shard}"

    def _pieces(self) -> _Pieces:
        return _Pieces(self.found, self.columns, self.decode, self.shuffle, self.seed, self.shard)

    def length(self) -> int | None:
        """Rows (handles with ``read=False``) this stream produces."""
        pieces = self._pieces()
        if not self.read:
            if self.shuffle and self.shard is not None:
                return None
            return len(pieces.pieces(0, shuffle=False))
        return sum(p.stop - p.start for p in pieces.pieces(0, shuffle=False))

    def check_resumable(self) -> None:
        """Raise ``ValueError`` if this source cannot start again from a checkpoint."""
        if self.shuffle and self.seed is None:
            raise ValueError(
                f"from_huggingface: {self.describe()} shuffles its row groups with fresh entropy, "
                "a new order every run, so a checkpoint cannot be resumed; pass seed="
            )

    def child(self) -> tuple[Any, ...]:
        """The child pipeline: pieces, read and decoded in workers, then their rows."""
        from .inline import FlatMap
        from .parallel import ParMap

        return (self._pieces(), ParMap(read_piece, self.workers, self.backend), FlatMap(_rows))

    async def run(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Any]) -> None:
        if not self.read:
            await self._pieces().run(ctx, fused, send)
            return
        from .combine import _forwarding, _InTurn, _open_child, _resume_point

        res = _InTurn("input")
        entry = ctx.resumable(ctx.label(0), res)
        _, state = _resume_point(entry, "input", res)
        with send:
            sink = Sink(ctx, fused, send)
            forward = _forwarding(res, sink)
            async with _open_child(self.child(), f"snake: in {ctx.label(0)}", state) as items:
                res.started(0, items._ctx)
                await forward(items)
            await sink.finish()
