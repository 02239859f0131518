"""from_parquet (row groups in threads, projection, filters, errors naming the file), from_files,
read_bytes; source-level shard() and source-order shuffling."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import funcs
import pytest
import trio
from conftest import run_async, run_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snake
from snake._plan import plan

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
    assert rows == [
        {"id": 0, "image": b"\x00"},
        {"id": 1, "image": b"\x01\x01"},
        {"id": 2, "image": b"\x02" * 3},
    ]
    batches = snake.from_parquet(paths[:1], columns=["label"], rows=False, batch_rows=4).to_list()
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    assert [b.num_rows for b in batches] == [4, 3] * 5 + [4, 1]  # row groups of 7, 7, ..., 5
    assert batches[0].schema.names == ["label"]


def test_parallel_decode_and_shard(dataset: Path) -> None:
    s = snake.from_parquet(str(dataset / "*.parquet"), columns=["id"], readers=2).map(funcs_id)
    per_rank = [
        s.shard(rank=r, world_size=4, equal=True).par_map(funcs.inc, workers=2).to_list() for r in range(4)
    ]
    assert sorted(x for r in per_rank for x in r) == list(range(1, 121))
    assert {len(x) for x in per_rank} == {30}


def funcs_id(row: dict[str, int]) -> int:
    return row["id"]


def test_repr(dataset: Path) -> None:
    s = snake.from_parquet(str(dataset / "part-0.parquet"), columns=["id"], batch_rows=8, rows=False)
    assert (
        repr(s)
        == f"from_parquet({str(dataset / 'part-0.parquet')!r}, columns=['id'], batch_rows=8, rows=False)"
    )
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


async def test_break_stops_the_readers(dataset: Path, no_leaks: None) -> None:
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
    assert (
        len(snake.from_files(str(tmp_path / "*.bin")).shard(rank=0, world_size=2, equal=True).to_list()) == 2
    )
    with pytest.raises(FileNotFoundError) as info:
        snake.from_files([str(tmp_path / "nope.bin")]).par_then(snake.read_bytes).to_list()
    assert info.value.filename == os.fspath(tmp_path / "nope.bin")


# -- filters ----------------------------------------------------------------------------------

_OPS: dict[str, Any] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
}

_predicate = st.tuples(
    st.sampled_from(["id", "label"]),
    st.sampled_from(sorted(_OPS)),
    st.integers(-5, 125),
).map(lambda t: (t[0], t[1], [t[2], t[2] // 2, 3] if t[1] in ("in", "not in") else t[2]))


def _matches(row: dict[str, Any], dnf: list[list[tuple[str, str, Any]]]) -> bool:
    return any(all(_OPS[op](row[col], value) for col, op, value in conj) for conj in dnf)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dnf=st.lists(st.lists(_predicate, min_size=1, max_size=3), min_size=1, max_size=2),
    columns=st.sampled_from([None, ["id"], ["text"], ["label", "image"]]),
    flat=st.booleans(),
)
def test_filters_match_filtering_in_python(dataset: Path, dnf: Any, columns: Any, flat: bool) -> None:
    everything = snake.from_parquet(str(dataset / "*.parquet")).to_list()
    want = [row for row in everything if _matches(row, dnf)]
    if columns is not None:
        want = [{c: row[c] for c in columns} for row in want]
    filters = dnf[0] if flat and len(dnf) == 1 else dnf  # [(...)] is the AND of its tuples
    got = snake.from_parquet(str(dataset / "*.parquet"), columns=columns, filters=filters).to_list()
    assert got == want


def test_expression_filter_and_record_batches(dataset: Path) -> None:
    pc = pytest.importorskip("pyarrow.compute", reason="pyarrow is in the test extra")
    expr = (pc.field("label") == 2) & ~pc.field("id").isin([2, 5, 8])
    s = snake.from_parquet(str(dataset / "*.parquet"), columns=["id"], filters=expr, rows=False, batch_rows=2)
    ids = [i for b in s.to_list() for i in b.column("id").to_pylist()]
    assert ids == [i for i in range(120) if i % 3 == 2 and i not in (2, 5, 8)]
    assert ", columns=['id'], filters=<Expression ((label == 2) and invert(is_in(id, " in repr(s)
    assert repr(s).endswith(")>, batch_rows=2, rows=False)")


def test_row_group_statistics_prune_reads(dataset: Path) -> None:
    # ids are sorted, row groups of 7: only row groups 0 and 1 of part-0 can hold id < 10
    handles = snake.from_parquet(str(dataset / "*.parquet"), filters=[("id", "<", 10)], read=False).to_list()
    assert [(Path(h.path).name, h.index) for h in handles] == [("part-0.parquet", 0), ("part-0.parquet", 1)]
    assert [r["id"] for h in handles for r in h.read()] == list(range(10))
    nothing = snake.from_parquet(str(dataset / "*.parquet"), filters=[("id", ">", 1000)], read=False)
    assert nothing.to_list() == []


@pytest.mark.parametrize(
    "filters", [[("nope", "=", 1)], [[("id", ">", 1)], [("nope", "in", [1, 2])]], "expression"]
)
def test_filter_on_a_missing_column_names_column_and_file(dataset: Path, filters: Any) -> None:
    if filters == "expression":
        pc = pytest.importorskip("pyarrow.compute", reason="pyarrow is in the test extra")
        filters = pc.field("nope") > 3
    first = str(dataset / "part-0.parquet")
    with pytest.raises(ValueError) as info:
        snake.from_parquet(str(dataset / "*.parquet"), filters=filters).to_list()
    msg = str(info.value)
    assert "'nope'" in msg and repr(first) in msg and "(its columns: id, label, image, text)" in msg, msg


def test_filter_build_time_validation(dataset: Path) -> None:
    glob = str(dataset / "*.parquet")
    with pytest.raises(
        TypeError, match=r"from_parquet: filters='id > 3' must be a pyarrow.compute.Expression"
    ):
        snake.from_parquet(glob, filters="id > 3")
    with pytest.raises(ValueError, match=r"from_parquet: filters=\[\('id', '~', 3\)\] is not a valid filter"):
        snake.from_parquet(glob, filters=[("id", "~", 3)])
    with pytest.raises(ValueError, match=r"from_parquet: filters=\[\] is empty"):
        snake.from_parquet(glob, filters=[])
    with pytest.raises(ValueError, match=r"shard\(equal=True\) needs the number of rows of from_parquet"):
        snake.from_parquet(glob, filters=[("id", "<", 3)]).shard(rank=0, world_size=2, equal=True)


def test_filter_type_mismatch_names_the_file(dataset: Path) -> None:
    with pytest.raises(Exception) as info:  # pyarrow's error, unchanged
        snake.from_parquet(str(dataset / "*.parquet"), filters=[("text", "<", 3)]).to_list()
    assert (
        f"snake: while reading the Parquet file {str(dataset / 'part-0.parquet')!r}" in info.value.__notes__
    )


# -- source-level sharding and shuffling --------------------------------------------------


def _epoch_id(row: dict[str, Any]) -> tuple[int, int]:
    return snake.current_epoch(), row["id"]


def _epoch_path(path: str) -> tuple[int, str]:
    return snake.current_epoch(), path


def _write_sizes(root: Path, sizes: list[int], row_group_size: int) -> int:
    start = 0
    for k, n in enumerate(sizes):
        _write(root / f"part-{k}.parquet", start, n, row_group_size=row_group_size)
        start += n
    return start


def _span_counts(total: int, world: int, equal: bool) -> list[int]:
    if equal:
        return [total // world] * world
    return [(r + 1) * total // world - r * total // world for r in range(world)]


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 30), min_size=1, max_size=3),
    row_group_size=st.integers(1, 12),
    world=st.integers(1, 6),
    equal=st.booleans(),
    shuffle=st.booleans(),
    read=st.booleans(),
)
def test_source_shard_every_row_once_per_epoch(
    sizes: list[int], row_group_size: int, world: int, equal: bool, shuffle: bool, read: bool
) -> None:
    epochs = 2
    with tempfile.TemporaryDirectory() as tmp:
        total = _write_sizes(Path(tmp), sizes, row_group_size)
        source = snake.from_parquet(
            str(Path(tmp) / "*.parquet"), shuffle_row_groups=shuffle, seed=7 if shuffle else None, read=read
        )
        per_epoch: list[list[int]] = [[] for _ in range(epochs)]
        counts = _span_counts(total, world, equal)
        for rank in range(world):
            sharded = source.shard(rank=rank, world_size=world, equal=equal)
            assert len(plan(sharded._specs).specs) == 1  # sharded by the source, not by a stage after it
            if read:
                tagged = sharded.map(_epoch_id)
            else:
                tagged = sharded.map(_read_tagged).flat_map(list)
            got = tagged.repeat(epochs).to_list()
            assert len(got) == epochs * counts[rank]
            for epoch, row_id in got:
                per_epoch[epoch].append(row_id)
            if read:
                assert _length(sharded) == counts[rank]
    for ids in per_epoch:
        assert len(ids) == len(set(ids))  # no row twice
        if equal:
            assert len(ids) == total // world * world
        else:
            assert sorted(ids) == list(range(total))  # every row once


def _read_tagged(handle: snake.ParquetRowGroup) -> list[tuple[int, int]]:
    return [(snake.current_epoch(), r["id"]) for r in handle.read()]


@settings(max_examples=25, deadline=None)
@given(n_files=st.integers(0, 12), world=st.integers(1, 5), equal=st.booleans(), shuffle=st.booleans())
def test_from_files_source_shard_every_file_once(
    n_files: int, world: int, equal: bool, shuffle: bool
) -> None:
    paths = [f"f{i}.bin" for i in range(n_files)]
    if not paths:
        return
    source = snake.from_files(paths, shuffle=shuffle, seed=3 if shuffle else None)
    seen: list[list[str]] = [[], []]
    counts = _span_counts(n_files, world, equal)
    for rank in range(world):
        sharded = source.shard(rank=rank, world_size=world, equal=equal)
        assert len(plan(sharded._specs).specs) == 1  # sharded by the source
        got = sharded.map(_epoch_path).repeat(2).to_list()
        assert len(got) == 2 * counts[rank]
        for epoch, path in got:
            seen[epoch].append(path)
    for names in seen:
        assert len(names) == len(set(names)) == sum(counts)
        if not equal:
            assert sorted(names) == sorted(paths)


def test_filters_with_source_shard_every_match_once(dataset: Path) -> None:
    s = snake.from_parquet(str(dataset / "*.parquet"), columns=["id"], filters=[("label", "=", 1)])
    per_rank = [[r["id"] for r in s.shard(rank=r, world_size=3).to_list()] for r in range(3)]
    assert sorted(i for ids in per_rank for i in ids) == [i for i in range(120) if i % 3 == 1]
    assert all(per_rank)


def test_source_order_shuffle_is_deterministic_and_changes_per_epoch(dataset: Path) -> None:
    def order(seed: int, epochs: int = 1) -> list[list[int]]:
        s = snake.from_parquet(str(dataset / "*.parquet"), columns=["id"], shuffle_row_groups=True, seed=seed)
        rows = s.map(_epoch_id).repeat(epochs).to_list()
        return [[i for e, i in rows if e == epoch] for epoch in range(epochs)]

    first = order(5, epochs=3)
    assert first == order(5, epochs=3)  # same seed, same orders
    assert first[0] == order(5)[0]  # epoch 0 of a repeat is the run without one
    assert len({tuple(ids) for ids in first}) == 3  # each epoch its own order
    assert order(6)[0] != first[0]
    for ids in first:
        assert sorted(ids) == list(range(120)) and ids != list(range(120))
        # rows within a row group keep their order: runs of consecutive ids, cut at groups of 7
        starts = [ids[k] for k in range(len(ids)) if k == 0 or ids[k] != ids[k - 1] + 1]
        assert all((s % 40) % 7 == 0 for s in starts)
    files = snake.from_files(str(dataset / "*.parquet"), shuffle=True, seed=1).map(_epoch_path).repeat(4)
    by_epoch = [tuple(p for e, p in files.to_list() if e == k) for k in range(4)]
    assert by_epoch == [tuple(p for e, p in files.to_list() if e == k) for k in range(4)]
    assert len(set(by_epoch)) > 1


def test_more_ranks_than_row_groups(tmp_path: Path) -> None:
    _write(tmp_path / "one.parquet", 0, 3, row_group_size=10)  # one row group of 3 rows
    s = snake.from_parquet(str(tmp_path / "one.parquet"), columns=["id"])
    per_rank = [s.shard(rank=r, world_size=5).map(funcs_id).to_list() for r in range(5)]
    assert per_rank == [[], [0], [], [1], [2]]
    equal = [s.shard(rank=r, world_size=5, equal=True).repeat(3).to_list() for r in range(5)]
    assert equal == [[]] * 5  # 3 // 5 == 0 rows each: a clean, empty stream
    handles = [s.shard(rank=r, world_size=2).to_list() for r in range(2)]
    assert [r["id"] for rows in handles for r in rows] == [0, 1, 2]


def test_source_shard_reads_only_its_row_groups(dataset: Path) -> None:
    s = snake.from_parquet(str(dataset / "*.parquet"), read=False)
    handles = [s.shard(rank=r, world_size=4).to_list() for r in range(4)]
    # 120 rows in 18 row groups of 7, 7, 7, 7, 7, 5 rows: 30 rows a rank
    assert [sum(h.num_rows for h in hs) for hs in handles] == [30, 30, 30, 30]
    # rank 1 takes rows 30-59: the end of part-0's group 4 (shared with rank 0), its group 5,
    # and part-1's groups 0-2, whose group 2 (rows 54-60) it shares with rank 2
    assert [len(hs) for hs in handles] == [5, 5, 6, 5]
    assert [(Path(h.path).name, h.index, h.start, h.stop) for h in handles[1]] == [
        ("part-0.parquet", 4, 2, 7),
        ("part-0.parquet", 5, 0, 5),
        ("part-1.parquet", 0, 0, 7),
        ("part-1.parquet", 1, 0, 7),
        ("part-1.parquet", 2, 0, 6),
    ]


def test_source_shard_build_time_rules(dataset: Path) -> None:
    glob = str(dataset / "*.parquet")
    with pytest.raises(
        ValueError, match=r"shard: from_parquet\(.*shuffle_row_groups=True\) shuffles with fresh"
    ):
        snake.from_parquet(glob, shuffle_row_groups=True).shard(rank=0, world_size=2)
    with pytest.raises(ValueError, match=r"shard: from_files\(.*shuffle=True\) shuffles with fresh"):
        snake.from_files(glob, shuffle=True).map(str).shard(rank=0, world_size=2)
    assert snake.from_parquet(glob, shuffle_row_groups=True).shard().to_list()  # one rank: any order is fine
    with pytest.raises(ValueError, match="from_parquet: seed=1 only applies with shuffle_row_groups=True"):
        snake.from_parquet(glob, seed=1)
    with pytest.raises(ValueError, match="from_files: seed=1 only applies with shuffle=True"):
        snake.from_files(glob, seed=1)
    with pytest.raises(TypeError, match="from_parquet: shuffle_row_groups=1 must be a bool"):
        snake.from_parquet(glob, shuffle_row_groups=1)  # type: ignore[arg-type]
    s = snake.from_parquet(glob, columns=["id"]).shard(rank=1, world_size=2, equal=True)
    assert repr(s).endswith(", columns=['id']).shard(rank=1, world_size=2, equal=True)")
    # a second shard() is by item, on this rank's rows
    twice = s.shard(rank=0, world_size=2)
    assert repr(twice).endswith(".shard(rank=1, world_size=2, equal=True).shard(rank=0, world_size=2)")
    assert [r["id"] for r in twice.to_list()] == list(range(60, 120, 2))


@pytest.mark.parametrize("arranged", [False, True])
def test_missing_and_corrupt_files_when_sharded_or_shuffled(dataset: Path, arranged: bool) -> None:
    missing = str(dataset / "missing.parquet")
    s = snake.from_parquet(
        [str(dataset / "part-0.parquet"), missing], shuffle_row_groups=arranged, seed=0 if arranged else None
    )
    if arranged:
        s = s.shard(rank=1, world_size=2)
    with pytest.raises(FileNotFoundError) as info:
        s.to_list()
    assert info.value.filename == missing
    bad = dataset / "part-1.parquet"
    bad.write_bytes(b"PAR1 but not parquet" * 10)
    s = snake.from_parquet(str(dataset / "*.parquet"), filters=[("id", ">", 3)], read=not arranged)
    if arranged:
        s = s.shard(rank=0, world_size=3, equal=False)
    with pytest.raises(Exception) as err:  # pyarrow's own error type, unchanged
        s.to_list()
    assert f"snake: while reading the Parquet file {str(bad)!r}" in err.value.__notes__


def test_handle_of_a_file_gone_since_names_it(dataset: Path) -> None:
    handle = snake.from_parquet(str(dataset / "part-2.parquet"), read=False).take(1).to_list()[0]
    os.remove(handle.path)
    with pytest.raises(FileNotFoundError) as info:
        handle.read()
    assert info.value.filename == handle.path


def read_ids(handle: snake.ParquetRowGroup) -> list[int]:
    return [r["id"] * 10 for r in handle.read()]


def test_row_groups_read_in_worker_processes(dataset: Path) -> None:
    s = (
        snake.from_parquet(
            str(dataset / "*.parquet"), columns=["id"], read=False, shuffle_row_groups=True, seed=2
        )
        .shard(rank=0, world_size=2, equal=True)
        .par_map(read_ids, workers=2)
        .flat_map(list)
    )
    got = s.to_list()
    rows = snake.from_parquet(str(dataset / "*.parquet"), columns=["id"], shuffle_row_groups=True, seed=2)
    assert got == [r["id"] * 10 for r in rows.shard(rank=0, world_size=2, equal=True).to_list()]
    assert len(got) == 60
    h = snake.from_parquet(str(dataset / "part-0.parquet"), read=False).to_list()[1]
    assert repr(h) == f"ParquetRowGroup({str(dataset / 'part-0.parquet')!r}, index=1, rows=0:7)"
    assert pickle.loads(pickle.dumps(h)) == h


def _length(stream: snake.Stream[Any]) -> int | None:
    """The length ``shard(equal=True)`` and ``progress()`` see."""
    return plan(stream._specs).length()


def test_known_lengths(dataset: Path) -> None:
    glob = str(dataset / "*.parquet")
    assert _length(snake.from_parquet(glob).shard(rank=2, world_size=7, equal=True)) == 17
    assert _length(snake.from_parquet(glob).shard(rank=2, world_size=7)) == 17
    assert _length(snake.from_parquet(glob).shard(rank=6, world_size=7)) == 18
    assert _length(snake.from_parquet(glob, read=False)) == 18
    assert _length(snake.from_parquet(glob, rows=False, batch_rows=4)) == 36
    assert _length(snake.from_parquet(glob, filters=[("id", "<", 3)])) is None
    assert _length(snake.from_parquet(glob, filters=[("id", "<", 3)], read=False)) == 1
    sharded_shuffled = snake.from_parquet(glob, shuffle_row_groups=True, seed=0).shard(rank=0, world_size=2)
    assert _length(sharded_shuffled) == 60
    assert (
        _length(
            snake.from_parquet(glob, read=False, shuffle_row_groups=True, seed=0).shard(rank=0, world_size=2)
        )
        is None
    )
    assert _length(snake.from_files(glob).shard(rank=0, world_size=2)) == 1
    # sized after a source-level shard: an item-level shard(equal=True) works on top
    assert (
        len(
            snake.from_parquet(glob)
            .shard(rank=0, world_size=2)
            .shard(rank=0, world_size=4, equal=True)
            .to_list()
        )
        == 15
    )
