"""from_parquet (row groups in threads, projection, errors naming the file), from_files, read_bytes."""

from __future__ import annotations

import os
from pathlib import Path

import funcs
import pytest
import trio
from conftest import run_async, run_sync

import snake

pa = pytest.importorskip("pyarrow", reason="pyarrow is in the test extra")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is in the test extra")


def _write(path: Path, start: int, n: int, row_group_size: int = 7) -> None:
    table = pa.table(
        {
            "id": list(range(start, start + n)),
            "label": [i % 3 for i in range(start, start + n)],
            "image": [bytes([i % 256]) * (1 + i % 5) for i in range(start, start + n)],
            "text": [f"row {i}" for i in range(start, start + n)],
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    for k in range(3):
        _write(tmp_path / f"part-{k}.parquet", 40 * k, 40)
    return tmp_path


@pytest.mark.parametrize("run", [run_async, run_sync])
def test_rows_in_file_and_row_group_order(dataset: Path, run) -> None:  # type: ignore[no-untyped-def]
    rows = run(snake.from_parquet(str(dataset / "*.parquet")))
    assert [r["id"] for r in rows] == list(range(120))
    assert rows[6] == {"id": 6, "label": 0, "image": b"\x06" * 2, "text": "row 6"}
    assert type(rows[0]["image"]) is bytes


def test_column_projection_and_record_batches(dataset: Path) -> None:
    paths = sorted(dataset.glob("*.parquet"))
    rows = snake.from_parquet(paths, columns=["id", "image"]).take(3).to_list()
    assert rows == [{"id": 0, "image": b"\x00"}, {"id": 1, "image": b"\x01\x01"}, {"id": 2, "image": b"\x02" * 3}]
    batches = snake.from_parquet(paths[:1], columns=["label"], rows=False, batch_rows=4).to_list()
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    assert [b.num_rows for b in batches] == [4, 3] * 5 + [4, 1]  # row groups of 7, 7, ..., 5
    assert batches[0].schema.names == ["label"]


def test_parallel_decode_and_shard(dataset: Path) -> None:
    s = snake.from_parquet(str(dataset / "*.parquet"), columns=["id"], readers=2).map(funcs_id)
    per_rank = [s.shard(rank=r, world_size=4, equal=True).par_map(funcs.inc, workers=2).to_list() for r in range(4)]
    assert sorted(x for r in per_rank for x in r) == list(range(1, 121))
    assert {len(x) for x in per_rank} == {30}


def funcs_id(row: dict[str, int]) -> int:
    return row["id"]


def test_repr(dataset: Path) -> None:
    s = snake.from_parquet(str(dataset / "part-0.parquet"), columns=["id"], batch_rows=8, rows=False)
    assert repr(s) == f"from_parquet({str(dataset / 'part-0.parquet')!r}, columns=['id'], batch_rows=8, rows=False)"
    assert repr(snake.from_files(str(dataset / "*.parquet"))).startswith("from_files(<3 files: ")


def test_build_time_validation(dataset: Path) -> None:
    with pytest.raises(ValueError, match=r"from_parquet: the pattern '.*\*.nope' matches no file"):
        snake.from_parquet(str(dataset / "*.nope"))
    with pytest.raises(TypeError, match="from_parquet: columns='id' must be a list"):
        snake.from_parquet(str(dataset / "*.parquet"), columns="id")
    with pytest.raises(ValueError, match="from_parquet: batch_rows=0 must be >= 1"):
        snake.from_parquet(str(dataset / "*.parquet"), batch_rows=0)
    with pytest.raises(TypeError, match="from_files: 3 must be a path"):
        snake.from_files(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("run", [run_async, run_sync])
def test_missing_file_names_the_file(dataset: Path, run) -> None:  # type: ignore[no-untyped-def]
    missing = str(dataset / "missing.parquet")
    s = snake.from_parquet([str(dataset / "part-0.parquet"), missing])
    with pytest.raises(FileNotFoundError) as info:
        run(s)
    assert info.value.filename == missing


@pytest.mark.parametrize("run", [run_async, run_sync])
def test_corrupt_file_names_the_file(dataset: Path, run) -> None:  # type: ignore[no-untyped-def]
    bad = dataset / "part-1.parquet"
    bad.write_bytes(b"this is not parquet" * 10)
    with pytest.raises(Exception) as info:  # pyarrow's own error type, unchanged
        run(snake.from_parquet(str(dataset / "*.parquet")))
    assert f"snake: while reading the Parquet file {str(bad)!r}" in info.value.__notes__


def test_truncated_row_group_names_the_file(dataset: Path) -> None:
    path = dataset / "part-2.parquet"
    data = path.read_bytes()
    # keep the footer, break the data pages
    path.write_bytes(data[:4] + b"\xff" * (len(data) // 2 - 4) + data[len(data) // 2 :])
    with pytest.raises(Exception) as info:
        snake.from_parquet(str(path)).to_list()
    assert f"snake: while reading the Parquet file {str(path)!r}" in info.value.__notes__


def test_empty_parquet_file(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": pa.array([], pa.int64())}), tmp_path / "empty.parquet")
    s = snake.from_parquet(str(tmp_path / "empty.parquet"))
    assert s.to_list() == []
    assert s.shard(rank=1, world_size=2, equal=True).repeat(2).to_list() == []


async def test_break_stops_the_readers(dataset: Path, resources) -> None:  # type: ignore[no-untyped-def]
    s = snake.from_parquet(str(dataset / "*.parquet"), batch_rows=1, readers=3).repeat()
    with trio.fail_after(10):
        async with s.open() as items:
            n = 0
            async for _ in items:
                n += 1
                if n == 300:
                    break


def test_from_files_and_read_bytes(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"{i}.bin").write_bytes(bytes([i]) * i)
    s = snake.from_files(str(tmp_path / "*.bin")).par_then(snake.read_bytes, limit=3)
    assert s.to_list() == [bytes([i]) * i for i in range(5)]
    assert len(snake.from_files(str(tmp_path / "*.bin")).shard(rank=0, world_size=2, equal=True).to_list()) == 2
    with pytest.raises(FileNotFoundError) as info:
        snake.from_files([str(tmp_path / "nope.bin")]).par_then(snake.read_bytes).to_list()
    assert info.value.filename == os.fspath(tmp_path / "nope.bin")
