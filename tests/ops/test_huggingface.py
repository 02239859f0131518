"""from_huggingface: a dataset written by ``datasets`` itself (save_to_disk's Arrow files,
Parquet shards laid out as on the Hub), read and decoded in workers; shard() at the
source, shuffled pieces, exact resume, handles, and the errors at the call."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # never the network: before datasets is imported

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snake
from snake._plan import plan
from snake.testing import check_resume

datasets = pytest.importorskip("datasets", reason="datasets is in the test extra")
Image = pytest.importorskip("PIL.Image", reason="pillow is in the test extra")

N = 230
FEATURES = {
    "id": datasets.Value("int64"),
    "image": datasets.Image(),
    "label": datasets.ClassLabel(names=["cat", "dog", "eel"]),
}


def png(i: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (2, 2), (i % 256, 255 - i % 256, 7)).save(out, format="PNG")
    return out.getvalue()


def make(n: int = N, start: int = 0) -> Any:
    """A Dataset with an Image and a ClassLabel column, in memory (from_dict)."""
    ids = list(range(start, start + n))
    return datasets.Dataset.from_dict(
        {"id": ids, "image": [{"bytes": png(i), "path": None} for i in ids], "label": [i % 3 for i in ids]},
        features=datasets.Features(FEATURES),
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """save_to_disk of 230 rows in 2 Arrow files, each with record batches of 100 and 15 rows."""
    datasets.disable_progress_bars()
    path = tmp_path_factory.mktemp("hf") / "saved"
    make().save_to_disk(str(path), num_shards=2)
    return path


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Parquet shards as on the Hub: data/train-*.parquet (150 rows), data/test-* (80)."""
    root = tmp_path_factory.mktemp("hub")
    (root / "data").mkdir()
    make(150).to_parquet(str(root / "data" / "train-00000-of-00002.parquet"), batch_size=40)
    make(0).to_parquet(str(root / "data" / "train-00001-of-00002.parquet"))
    make(80, 150).to_parquet(str(root / "data" / "test-00000-of-00001.parquet"), batch_size=40)
    return root


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [r["id"] for r in rows]


def test_rows_decoded_in_order_through_open_and_open_sync(saved: Path) -> None:
    stream = snake.from_huggingface(str(saved), workers=2)
    rows = stream.to_list()
    assert ids(rows) == list(range(N))
    r = rows[7]
    assert isinstance(r["image"], Image.Image)
    assert r["image"].size == (2, 2) and r["image"].getpixel((0, 0)) == (7, 248, 7)
    assert r["label"] == 1
    with stream.open_sync() as items:
        assert ids(list(items)) == list(range(N))


def test_decode_false_columns_and_thread_backend(saved: Path) -> None:
    rows = snake.from_huggingface(saved, columns=["image", "label"], decode=False, backend="thread").to_list()
    assert rows[3] == {"image": {"bytes": png(3), "path": None}, "label": 0}
    assert len(rows) == N


def test_a_dataset_object_and_a_dataset_dict(saved: Path, tmp_path: Path) -> None:
    ds = datasets.load_from_disk(str(saved))
    stream = snake.from_huggingface(ds, workers=1)
    assert repr(stream) == "from_huggingface(<Dataset 230 rows>, workers=1)"
    assert ids(stream.to_list()) == list(range(N))
    dd = datasets.DatasetDict({"train": ds, "test": make(5, 500)})
    dd.save_to_disk(str(tmp_path / "dd"))
    on_disk = snake.from_huggingface(tmp_path / "dd", split="test", workers=1)
    assert ids(on_disk.to_list()) == list(range(500, 505))
    loaded = datasets.load_from_disk(str(tmp_path / "dd"))
    assert ids(snake.from_huggingface(loaded, split="train", workers=1).to_list()) == list(range(N))
    with pytest.raises(ValueError, match=r"has the splits \['test', 'train'\]; pass split="):
        snake.from_huggingface(tmp_path / "dd")
    with pytest.raises(ValueError, match=r"split='dev' is not one of the splits"):
        snake.from_huggingface(loaded, split="dev")


def test_parquet_shards_with_the_hub_layout(hub: Path, tmp_path: Path) -> None:
    train = snake.from_huggingface(hub, split="train", workers=2)
    rows = train.to_list()
    assert ids(rows) == list(range(150))
    assert isinstance(rows[0]["image"], Image.Image) and rows[4]["label"] == 1  # features from the schema
    assert ids(snake.from_huggingface(hub, split="test", workers=1).to_list()) == list(range(150, 230))
    assert plan(train._specs).length() == 150
    with pytest.raises(ValueError, match="pass split="):
        snake.from_huggingface(hub)

    with pytest.raises(ValueError, match="holds no Parquet files"):
        (tmp_path / "notes.txt").write_text("no data here")
        snake.from_huggingface(tmp_path)


def test_shard_at_the_source_gives_every_row_once(saved: Path) -> None:
    base = snake.from_huggingface(saved, workers=2, shuffle_row_groups=True, seed=4)
    parts = [base.shard(rank=r, world_size=3).to_list() for r in range(3)]
    assert sorted(i for p in parts for i in ids(p)) == list(range(N))
    assert [len(p) for p in parts] == [76, 77, 77]
    s = base.shard(rank=1, world_size=3)
    assert repr(s) == "from_huggingface(" + repr(str(saved)) + ", workers=2, shuffle_row_groups=True, seed=4)" + (
        ".shard(rank=1, world_size=3)"
    )
    p = plan(s._specs)
    assert len(p.specs) == 1 and "rank 1 reads only the row groups" in p.notes[0]
    assert p.length() == 77
    equal = [base.shard(rank=r, world_size=3, equal=True).to_list() for r in range(3)]
    assert [len(e) for e in equal] == [76, 76, 76]


def test_shuffled_pieces_keep_rows_within_a_piece_and_change_by_epoch(saved: Path) -> None:
    stream = snake.from_huggingface(saved, workers=1, shuffle_row_groups=True, seed=1).repeat(2)
    rows = ids(stream.to_list())
    first, second = rows[:N], rows[N:]
    assert sorted(first) == sorted(second) == list(range(N))
    assert first != second
    starts = {0, 100, 115, 215}
    runs = [i for i in range(N) if first[i] in starts]
    assert all(first[k : k + 15] == list(range(first[k], first[k] + 15)) for k in runs)


def test_exact_resume(saved: Path) -> None:
    check_resume(
        snake.from_huggingface(saved, workers=2, shuffle_row_groups=True, seed=3).map(ids_of).shard(
            rank=0, world_size=1
        ),
        at=[0, 1, 99, 100, 101, 150, N - 1, N],
    )
    check_resume(
        snake.from_huggingface(saved, workers=1, shuffle_row_groups=True, seed=3).shard(rank=1, world_size=2)
        .map(ids_of)
        .shuffle(16, seed=2),
        at=[0, 7, 60, 114, 115],
        through=("open", "open_sync"),
    )


def ids_of(row: dict[str, Any]) -> int:
    return int(row["id"])


def test_handles_read_in_workers(saved: Path) -> None:
    stream = snake.from_huggingface(saved, read=False, columns=["id", "image"])
    handles = stream.to_list()
    assert [h.num_rows for h in handles] == [100, 15, 100, 15]
    assert repr(handles[1]).endswith("index=1, rows=0:15)")
    h = pickle.loads(pickle.dumps(handles[1]))
    assert [r["id"] for r in h.read()] == list(range(100, 115))
    assert h.table().column_names == ["id", "image"]
    sizes = stream.par_map(image_sizes, workers=2).flat_map(list).to_list()
    assert sizes == [(2, 2)] * N


def image_sizes(piece: snake.HuggingFacePiece) -> list[tuple[int, int]]:
    return [tuple(r["image"].size) for r in piece.read()]  # type: ignore[misc]


def test_break_releases_everything(saved: Path, no_leaks: None) -> None:
    with snake.from_huggingface(saved, workers=2).open_sync() as items:
        for k, _ in enumerate(items):
            if k == 3:
                break


def test_progress_knows_the_total(saved: Path) -> None:
    s = snake.from_huggingface(saved, workers=1).progress()
    assert s._specs[-1].total == N  # type: ignore[attr-defined]


def test_errors_at_the_call(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"<Dataset 5 rows> is held in memory, not in files"):
        snake.from_huggingface(make(5))
    ds = datasets.load_from_disk(str(saved))
    with pytest.raises(ValueError, match=r"has an indices mapping .*flatten_indices\(\)"):
        snake.from_huggingface(ds.shuffle(seed=0))
    with pytest.raises(ValueError, match="differs from its files"):
        snake.from_huggingface(ds.rename_column("id", "idx"))
    with pytest.raises(ValueError, match="differs from its files"):
        snake.from_huggingface(ds.select(range(10)))
    with pytest.raises(TypeError, match="has no files of its own"):
        snake.from_huggingface(ds.to_iterable_dataset())
    with pytest.raises(TypeError, match=r"from_huggingface: 3 must be a datasets.Dataset"):
        snake.from_huggingface(3)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        snake.from_huggingface(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"columns=\['nope'\]: 'nope' is not a column"):
        snake.from_huggingface(ds, columns=["nope"])
    with pytest.raises(TypeError, match=r"columns='id' must be a list"):
        snake.from_huggingface(ds, columns="id")
    with pytest.raises(ValueError, match=r"seed=1 only applies with shuffle_row_groups=True"):
        snake.from_huggingface(ds, seed=1)
    with pytest.raises(TypeError, match=r"decode=1 must be a bool"):
        snake.from_huggingface(ds, decode=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"workers=0 must be >= 1"):
        snake.from_huggingface(ds, workers=0)
    with pytest.raises(ValueError, match=r"backend='ray' must be one of"):
        snake.from_huggingface(ds, backend="ray")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"split='train' applies to a DatasetDict"):
        snake.from_huggingface(ds, split="train")
    fresh = snake.from_huggingface(ds, shuffle_row_groups=True, workers=1)
    with fresh.open_sync() as items:
        next(iter(items))
        state = items.state_dict()
    with pytest.raises(ValueError, match="fresh entropy, a new order every run, .* pass seed="):
        fresh.open_sync(state_dict=state)


def test_import_snake_does_not_import_datasets_and_a_missing_one_says_how_to_install() -> None:
    code = (
        "import sys, snake\n"
        "assert 'datasets' not in sys.modules\n"
        "sys.modules['datasets'] = None\n"
        "try:\n"
        "    snake.from_huggingface('.')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(snake.__file__)), *sys.path])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert 'from_huggingface needs the Hugging Face datasets package: pip install "snake[huggingface]"' in out.stdout


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    world_size=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    equal=st.booleans(),
    cols=st.sampled_from([None, ["id"], ["label", "id"]]),
)
def test_law_shards_partition_the_dataset(
    saved: Path, world_size: int, seed: int, equal: bool, cols: list[str] | None
) -> None:
    """Every rank's rows, laid together, are the dataset's rows (the first total // world_size
    * world_size of the shuffled order with equal=True), each once, as a plain model says."""
    base = snake.from_huggingface(saved, columns=cols, backend="thread", workers=2, shuffle_row_groups=True, seed=seed)
    whole = base.to_list()
    assert sorted(ids(whole)) == list(range(N))
    parts = [base.shard(rank=r, world_size=world_size, equal=equal).to_list() for r in range(world_size)]
    per = N // world_size
    model = [whole[r * per : (r + 1) * per] if equal else whole[r * N // world_size : (r + 1) * N // world_size]
             for r in range(world_size)]
    assert parts == model
