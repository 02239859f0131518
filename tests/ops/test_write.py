"""Stream.write_parquet: shards named as on the Hub, read back whole by from_parquet and
from_huggingface; binary columns embedded; temporary names until complete (a killed
writer leaves no final-named file); the errors at the call."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # never the network: before datasets is imported

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snake

pa = pytest.importorskip("pyarrow", reason="pyarrow is in the test extra")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is in the test extra")

FINAL = re.compile(r"^train-\d{5}-of-\d{5}\.parquet$")


def blob_row(i: int) -> dict[str, Any]:
    return {"id": i, "blob": bytes((i * 7 + k) % 251 for k in range(64 + i % 50)), "text": f"row {i}"}


def test_shards_named_as_on_the_hub_and_read_back_once(tmp_path: Path) -> None:
    paths = (
        snake.from_iterable(range(3000))
        .map(blob_row)
        .write_parquet(tmp_path, max_shard_size="10KB", row_group_rows=200, progress=False)
    )
    n = len(paths)
    assert n > 2
    assert [os.path.basename(p) for p in paths] == [f"train-{k:05d}-of-{n:05d}.parquet" for k in range(n)]
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(p) for p in paths]  # no temporary file left
    for p in paths:
        md = pq.read_metadata(p)
        assert all(md.row_group(g).num_rows <= 200 for g in range(md.num_row_groups))
    back = snake.from_parquet(str(tmp_path / "*.parquet")).to_list()
    assert back == [blob_row(i) for i in range(3000)]
    hf = snake.from_huggingface(tmp_path, workers=2).to_list()
    assert hf == back


def test_record_batches_and_split_none(tmp_path: Path) -> None:
    src = tmp_path / "src.parquet"
    pq.write_table(pa.table({"x": list(range(100))}), src, row_group_size=30)
    out = tmp_path / "out"
    paths = snake.from_parquet(str(src), rows=False, batch_rows=30).write_parquet(
        out, split=None, row_group_rows=25, progress=False
    )
    assert [os.path.basename(p) for p in paths] == ["00000-of-00001.parquet"]
    assert pq.read_table(paths[0]).column("x").to_pylist() == list(range(100))


def test_features_encode_images_and_from_huggingface_decodes_them(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="datasets is in the test extra")
    Image = pytest.importorskip("PIL.Image", reason="pillow is in the test extra")
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])}
    )
    on_disk = tmp_path / "cat.png"
    Image.new("RGB", (3, 3), (9, 8, 7)).save(on_disk)

    def row(i: int) -> dict[str, Any]:
        image = Image.new("RGB", (2, 2), (i, 0, 0)) if i % 2 else {"bytes": None, "path": str(on_disk)}
        return {"image": image, "label": "dog" if i % 3 else "cat"}

    out = tmp_path / "out"
    snake.from_iterable(range(10)).map(row).write_parquet(out, features=features, split="test", progress=False)
    on_disk.unlink()  # the shards stand alone: the file's bytes are in them
    rows = snake.from_huggingface(out, workers=1).to_list()
    assert rows[1]["image"].getpixel((0, 0)) == (1, 0, 0)
    assert rows[0]["image"].size == (3, 3) and rows[0]["image"].getpixel((0, 0)) == (9, 8, 7)
    assert [r["label"] for r in rows] == [0 if i % 3 == 0 else 1 for i in range(10)]


def test_path_only_structs_are_embedded_without_features(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"\x00\x01payload")
    out = tmp_path / "out"
    paths = snake.from_iterable([{"audio": {"bytes": None, "path": str(f)}}]).write_parquet(out, progress=False)
    f.unlink()
    assert pq.read_table(paths[0]).to_pylist() == [{"audio": {"bytes": b"\x00\x01payload", "path": "a.bin"}}]


def test_existing_shards_are_refused_or_replaced(tmp_path: Path) -> None:
    snake.from_iterable(range(2000)).map(blob_row).write_parquet(
        tmp_path, max_shard_size=20_000, row_group_rows=100, progress=False
    )
    assert len(os.listdir(tmp_path)) > 1
    with pytest.raises(FileExistsError, match=r"already holds shards of split 'train' .*overwrite=True"):
        snake.from_iterable(range(3)).map(blob_row).write_parquet(tmp_path)
    paths = snake.from_iterable(range(3)).map(blob_row).write_parquet(tmp_path, overwrite=True, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["train-00000-of-00001.parquet"] == [os.path.basename(p) for p in paths]


def test_an_exception_removes_the_temporary_files(tmp_path: Path) -> None:
    def boom(i: int) -> dict[str, Any]:
        if i == 1500:
            raise KeyError("no row 1500")
        return blob_row(i)

    with pytest.raises(KeyError, match="no row 1500"):
        snake.from_iterable(range(3000)).map(boom).write_parquet(
            tmp_path, max_shard_size=10_000, row_group_rows=100, progress=False
        )
    assert os.listdir(tmp_path) == []
    with pytest.raises(TypeError, match=r"write_parquet: item 2 is a list, not a row"):
        snake.from_iterable([{"a": 1}, {"a": 2}, [3]]).write_parquet(tmp_path, progress=False)
    with pytest.raises(TypeError, match=r"rows 2..3 have the schema \{a: string\}, which does not fit the schema \{a: int64\}"):
        snake.from_iterable([{"a": 1}, {"a": 2}, {"a": "x"}, {"a": "y"}]).write_parquet(
            tmp_path, row_group_rows=2, progress=False
        )
    assert os.listdir(tmp_path) == []


WRITER = """
import os, sys, time
import snake

def row(i):
    time.sleep(0.0002)
    return {"id": i, "blob": os.urandom(200)}

if __name__ == "__main__":
    snake.from_iterable(range(10**7)).map(row).write_parquet(
        sys.argv[1], max_shard_size=20_000, row_group_rows=50, progress=False
    )
"""


def test_a_killed_writer_leaves_no_partial_file_under_a_final_name(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(snake.__file__)), *sys.path])}
    proc = subprocess.Popen([sys.executable, str(script), str(out)], env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and len(os.listdir(out)) >= 3:  # two shards complete, one being written
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the writer ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    names = sorted(os.listdir(out))
    assert len(names) >= 3
    assert not [n for n in names if FINAL.match(n) or n.endswith(".parquet")]
    assert all(re.match(r"^\.train-\d{5}-[0-9a-f]{8}\.parquet\.tmp$", n) for n in names)
    for n in names[:-1]:  # the shards closed before the kill (all but the last) are whole
        assert pq.read_metadata(out / n).num_rows > 0


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (0, ValueError, r"max_shard_size=0 must be at least 1 byte"),
        ("500 MBs", ValueError, r"max_shard_size='500 MBs' is not a size: .* as in '500MB'"),
        ("", ValueError, r"max_shard_size='' is not a size"),
        (1.5, TypeError, r"max_shard_size=1.5 must be a number of bytes or a str such as '500MB'"),
        (True, TypeError, r"max_shard_size=True must be"),
    ],
)
def test_bad_max_shard_size_is_quoted(tmp_path: Path, value: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        snake.from_iterable([{"a": 1}]).write_parquet(tmp_path, max_shard_size=value)


def test_sizes_and_other_errors_at_the_call(tmp_path: Path) -> None:
    from snake._ops.write import parse_size

    assert parse_size("m", "s", "500MB") == 500 * 10**6
    assert parse_size("m", "s", "1.5GiB") == 3 * 2**29
    assert parse_size("m", "s", " 64 kib ") == 64 * 1024
    assert parse_size("m", "s", 123) == 123
    s = snake.from_iterable([{"a": 1}])
    with pytest.raises(ValueError, match=r"split='a/b' must be a name"):
        s.write_parquet(tmp_path, split="a/b")
    with pytest.raises(TypeError, match=r"features=\{'a': 1\} must be a datasets.Features"):
        s.write_parquet(tmp_path, features={"a": 1})
    with pytest.raises(ValueError, match=r"row_group_rows=0 must be >= 1"):
        s.write_parquet(tmp_path, row_group_rows=0)
    with pytest.raises(TypeError, match=r"progress=1 must be a bool"):
        s.write_parquet(tmp_path, progress=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"directory=3 must be a str path"):
        s.write_parquet(3)  # type: ignore[arg-type]
    assert s.write_parquet(tmp_path, features=pa.schema([("a", pa.int32())]), progress=False)
    assert pq.read_schema(tmp_path / "train-00000-of-00001.parquet").field("a").type == pa.int32()
    assert snake.from_iterable([]).write_parquet(tmp_path / "empty", progress=False) == []


ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "i": st.integers(-(2**40), 2**40),
            "s": st.one_of(st.none(), st.text(max_size=20)),
            "b": st.binary(max_size=300),
        }
    ),
    max_size=400,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS, row_group_rows=st.integers(1, 120), max_shard_size=st.integers(1, 30_000))
def test_law_write_then_read_gives_the_rows(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]], row_group_rows: int, max_shard_size: int
) -> None:
    """write_parquet then from_parquet gives back the rows, in order, each once, in shards
    named 0..n-1 of n, whatever the row-group and shard sizes (a plain list is the model)."""
    out = tmp_path_factory.mktemp("law")
    schema = pa.schema([("i", pa.int64()), ("s", pa.string()), ("b", pa.binary())])
    paths = snake.from_iterable(rows).write_parquet(
        out, max_shard_size=max_shard_size, row_group_rows=row_group_rows, features=schema, progress=False
    )
    n = len(paths)
    assert [os.path.basename(p) for p in paths] == [f"train-{k:05d}-of-{n:05d}.parquet" for k in range(n)]
    back = snake.from_parquet(paths).to_list() if paths else []
    assert back == rows
