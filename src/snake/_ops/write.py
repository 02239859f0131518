"""``Stream.write_parquet``: a stream's rows written to Parquet shards named as on the Hub.

The consumer (the thread that calls ``write_parquet``) turns rows into row groups and
writes them with pyarrow while the pipeline runs ahead in its helper thread. Each shard
is written under a hidden temporary name (``.train-00003-<run>.parquet.tmp``), flushed to
disk when it is full, and renamed to its final name (``train-00003-of-00008.parquet``)
only once the stream has ended and the number of shards is known: a crash at any point
leaves no file under a final name that is not complete. A failure that is not a crash
(an exception) removes the temporary files.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterable
from typing import Any

#: A row group is closed before ``row_group_rows`` rows once the bytes and strings in it
#: reach this many bytes (images, audio, long texts).
ROW_GROUP_BYTES = 64 * 2**20

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*$")


def parse_size(method: str, name: str, value: object) -> int:
    """A size in bytes: an int, or a str such as ``"500MB"`` (10**6), ``"1.5GiB"`` (2**30)."""
    if isinstance(value, bool):
        raise TypeError(f"{method}: {name}={value!r} must be a number of bytes or a str such as '500MB'")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = _SIZE.match(value)
        unit = m.group(2).upper() if m is not None else ""
        if m is None or unit not in _UNITS:
            raise ValueError(
                f"{method}: {name}={value!r} is not a size: write bytes as an int, or a number and "
                "a unit: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (of 1024), as in '500MB'"
            )
        n = int(float(m.group(1)) * _UNITS[unit])
    else:
        raise TypeError(f"{method}: {name}={value!r} must be a number of bytes or a str such as '500MB'")
    if n < 1:
        raise ValueError(f"{method}: {name}={value!r} must be at least 1 byte")
    return n


def check_features(method: str, features: object) -> Any:
    """None, a ``pyarrow.Schema`` or a ``datasets.Features``."""
    if features is None:
        return None
    kind = type(features)
    if kind.__name__ == "Schema" and kind.__module__.startswith("pyarrow"):
        return features
    if kind.__name__ == "Features" and kind.__module__.startswith("datasets"):
        return features
    raise TypeError(f"{method}: features={features!r} must be a datasets.Features, a pyarrow.Schema or None")


def check_split(method: str, split: object) -> str | None:
    if split is None:
        return None
    if not isinstance(split, str) or not re.fullmatch(r"[\w.]+", split):
        raise ValueError(f"{method}: split={split!r} must be a name of letters, digits, '_' and '.', or None")
    return split


def _embed(value: Any) -> Any:
    """A ``{'bytes': None, 'path': FILE}`` struct (an Image or Audio that ``datasets`` left
    on disk) with the file's bytes in it, its path cut to the file name."""
    if isinstance(value, dict) and value.keys() == {"bytes", "path"}:
        if value["bytes"] is None and isinstance(value["path"], str) and os.path.isfile(value["path"]):
            with open(value["path"], "rb") as f:
                return {"bytes": f.read(), "path": os.path.basename(value["path"])}
        return value
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [_embed(v) for v in value]
    return value


def _weight(row: dict[str, Any]) -> int:
    """Bytes of a row's bytes and str values (one level into dicts and lists), roughly."""
    n = 0
    for v in row.values():
        if isinstance(v, (bytes, str)):
            n += len(v)
        elif isinstance(v, dict):
            n += sum(len(x) for x in v.values() if isinstance(x, (bytes, str)))
        elif isinstance(v, list) and v and isinstance(v[0], (bytes, str, dict)):
            n += sum(len(x) if isinstance(x, (bytes, str)) else _weight(x) for x in v)
        else:
            n += 8
    return n


class ShardWriter:
    """Rows in, row groups out, shards rolled over at ``max_bytes``, renamed at the end."""

    def __init__(
        self, directory: str, split: str | None, max_bytes: int, row_group_rows: int, features: Any, overwrite: bool
    ) -> None:
        import pyarrow as pa

        self.pa = pa
        self.directory = directory
        self.prefix = f"{split}-" if split is not None else ""
        self.max_bytes = max_bytes
        self.row_group_rows = row_group_rows
        self.overwrite = overwrite
        self.run = uuid.uuid4().hex[:8]
        self.hf = features if features is not None and not isinstance(features, pa.Schema) else None
        self.schema: Any = None
        if features is not None:
            self.schema = features if isinstance(features, pa.Schema) else features.arrow_schema
        self.rows: list[dict[str, Any]] = []
        self.weight = 0
        #: Rows written, items received.
        self.count = 0
        self.seen = 0
        #: Completed shards' temporary paths, and the open one's writer and file.
        self.done: list[str] = []
        self.writer: Any = None
        self.file: Any = None
        self.final = re.compile(rf"^{re.escape(self.prefix)}\d{{5}}-of-\d{{5}}\.parquet$")

    def existing(self) -> list[str]:
        """Files under a final name of this split already in the directory."""
        return sorted(n for n in os.listdir(self.directory) if self.final.match(n))

    def _temp(self, k: int) -> str:
        return os.path.join(self.directory, f".{self.prefix}{k:05d}-{self.run}.parquet.tmp")

    def add(self, item: Any) -> None:
        self.seen += 1
        if isinstance(item, dict):
            row = {k: _embed(v) for k, v in item.items()} if self.hf is None else item
            self.rows.append(row)
            self.weight += _weight(row)
            if len(self.rows) >= self.row_group_rows or self.weight >= ROW_GROUP_BYTES:
                self.flush()
            return
        if isinstance(item, (self.pa.RecordBatch, self.pa.Table)):
            self.flush()
            table = self.pa.Table.from_batches([item]) if isinstance(item, self.pa.RecordBatch) else item
            for start in range(0, table.num_rows, self.row_group_rows):
                self._write(table.slice(start, self.row_group_rows))
            return
        raise TypeError(
            f"write_parquet: item {self.seen - 1} is a {type(item).__name__}, not a row (a dict of column "
            "values) or a pyarrow RecordBatch or Table"
        )

    def flush(self) -> None:
        """Write the rows held as one row group."""
        if not self.rows:
            return
        rows, self.rows, self.weight = self.rows, [], 0
        if self.hf is not None:
            rows = [self.hf.encode_example(r) for r in rows]
        pa = self.pa
        try:
            table = pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            try:
                got = _schema_text(pa.Table.from_pylist(rows).schema)
            except Exception:
                got = "(none that pyarrow can infer)"
            raise self._mismatch(len(rows), got, exc) from None
        self._write(table)

    def _mismatch(self, n: int, got: str, exc: Exception) -> TypeError:
        return TypeError(
            f"write_parquet: rows {self.count}..{self.count + n - 1} have the schema {got}, which does "
            f"not fit the schema {_schema_text(self.schema)} of the rows before them or of features= "
            f"(pass features= to set the columns' types): {exc}"
        )

    def _write(self, table: Any) -> None:
        pa = self.pa
        if self.hf is not None:
            from datasets.table import embed_table_storage

            table = embed_table_storage(table)
        if self.schema is None:
            self.schema = table.schema
        elif not table.schema.equals(self.schema):
            try:
                table = table.cast(self.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError) as exc:
                raise self._mismatch(table.num_rows, _schema_text(table.schema), exc) from None
        if self.writer is None:
            import pyarrow.parquet as pq

            self.file = open(self._temp(len(self.done)), "wb")  # noqa: SIM115 -- closed in _close_shard
            self.writer = pq.ParquetWriter(self.file, self.schema)
        self.writer.write_table(table, row_group_size=table.num_rows)
        self.count += table.num_rows
        if self.file.tell() >= self.max_bytes:
            self._close_shard()

    def _close_shard(self) -> None:
        self.writer.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.done.append(self.file.name)
        self.writer = self.file = None

    def finish(self) -> list[str]:
        """Write what is held, close the last shard, rename every shard to its final name."""
        self.flush()
        if self.writer is not None:
            self._close_shard()
        n = len(self.done)
        old = set(self.existing()) if self.overwrite else set()
        out = []
        for k, temp in enumerate(self.done):
            name = f"{self.prefix}{k:05d}-of-{n:05d}.parquet"
            os.replace(temp, os.path.join(self.directory, name))
            old.discard(name)
            out.append(os.path.join(self.directory, name))
        for name in old:  # an earlier write's shards of this split, under other counts
            os.remove(os.path.join(self.directory, name))
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return out

    def abort(self) -> None:
        """Remove every temporary file (after an exception)."""
        if self.writer is not None:
            with contextlib.suppress(Exception):  # the file is removed below
                self.writer.close()
            self.file.close()
            self.done.append(self.file.name)
            self.writer = self.file = None
        for temp in self.done:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temp)


def _schema_text(schema: Any) -> str:
    return "{" + ", ".join(f"{f.name}: {f.type}" for f in schema) + "}"


def write_rows(items: Iterable[Any], writer: ShardWriter) -> list[str]:
    """Write ``items`` through ``writer``; its shards' final paths."""
    try:
        for item in items:
            writer.add(item)
        return writer.finish()
    except BaseException:
        writer.abort()
        raise
