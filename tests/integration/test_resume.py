"""Checkpoints end to end: every kind of stage resumed exactly, random pipelines, a
process restart in the middle of an epoch, ranks that resume on their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import funcs
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TESTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snake
from snake.testing import check_resume, pipelines


@pytest.fixture(autouse=True)
def _no_tqdm_monitor_thread() -> Any:
    # tqdm starts a thread of its own to watch its bars; the laws count threads.
    tqdm = pytest.importorskip("tqdm", reason="progress() draws with tqdm, which the test extra installs")
    old, tqdm.tqdm.monitor_interval = tqdm.tqdm.monitor_interval, 0
    yield
    tqdm.tqdm.monitor_interval = old


def _length(x: Any) -> int:
    return int(x) % 5


def _row_id(row: dict[str, Any]) -> int:
    return int(row["id"])


def _handle_index(h: snake.ParquetRowGroup) -> int:
    return h.index


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("shards")
    for f in range(3):
        ids = np.arange(f * 40, f * 40 + 40)
        pq.write_table(pa.table({"id": ids}), d / f"part-{f}.parquet", row_group_size=7)
    return str(d / "*.parquet")


def _streams(shards: str) -> dict[str, snake.Stream[Any]]:
    n = snake.from_iterable(range(60))
    return {
        "map filter flat_map": n.map(funcs.inc).filter(funcs.is_even).flat_map(funcs.repeat_n),
        "enumerate take skip": n.enumerate().skip(5).take(40),
        "on_error skip, inline and in workers": n.map(funcs.fail_on_multiples_of_10)
        .on_error("skip")
        .par_map(funcs.fail_on_7, workers=2)
        .on_error("skip"),
        "shard equal": n.shard(rank=1, world_size=4, equal=True),
        "shuffle then batch": n.shuffle(9, seed=1).batch(4, collate=None),
        "par_map then shuffle (refill)": n.par_map(funcs.inc, workers=2).shuffle(11, seed=2),
        "flat_map then shuffle (select)": n.flat_map(funcs.repeat_n).shuffle(6, seed=3),
        "two shuffles": n.shuffle(5, seed=1).shuffle(4, seed=2),
        "unordered par_then": n.par_then(funcs.ajitter, limit=4, ordered=False).map(funcs.inc),
        "unordered before a shuffle": n.par_map(funcs.inc, workers=2, ordered=False).shuffle(7, seed=4),
        "prefetch monitor progress": n.prefetch(8).monitor(lambda m: None, every=0).progress(),
        "pad_batch": n.map(funcs.repeat_n).pad_batch(4),
        "bucket_by_length": n.bucket_by_length([2, 4], [3, 2, 2], length=_length, pad_value=-1),
        "shuffle then bucket_by_length": n.shuffle(7, seed=5).bucket_by_length([2], [3, 2], length=_length),
        "arrays into batches from workers": snake.from_iterable(range(24)).par_map(funcs.make_array, workers=2).batch(5),
        "chain": snake.chain(n.take(20), snake.from_iterable(range(100, 130)).shuffle(5, seed=1)),
        "zip": snake.zip(n, snake.from_iterable(range(100, 150)).filter(funcs.is_even)),
        "mix": snake.mix([n.take(30), snake.from_iterable(range(100, 130))], weights=[1, 2], seed=3),
        "repeat": snake.from_iterable(range(15)).shuffle(4, seed=1).repeat(3).batch(4, collate=None),
        "parquet rows": snake.from_parquet(shards).map(_row_id).shuffle(10, seed=1),
        "parquet shuffled, sharded": snake.from_parquet(shards, shuffle_row_groups=True, seed=2)
        .shard(rank=0, world_size=2)
        .map(_row_id),
        "parquet filtered": snake.from_parquet(shards, filters=[("id", ">", 33)], readers=2).map(_row_id),
        "parquet handles": snake.from_parquet(shards, read=False).map(_handle_index),
        "files": snake.from_files(str(Path(shards).parent / "*"), shuffle=True, seed=4).map(os.path.basename),
    }


def test_every_kind_of_stage_resumes_exactly(shards: str) -> None:
    for name, stream in _streams(shards).items():
        try:
            check_resume(stream)
        except AssertionError as exc:
            exc.add_note(f"case: {name}")
            raise


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    p=pipelines(
        maps=[funcs.inc, funcs.double],
        predicates=[funcs.is_even],
        flat_maps=[funcs.repeat_n],
        async_maps=[funcs.ajitter],
        backends=["thread", "process"],
        max_items=30,
    ),
    k=st.integers(0, 30),
)
def test_random_pipelines_resume_from_any_point(p: Any, k: int) -> None:
    p.check_resume(at=[k])


_RESTART = """
import json, sys
sys.path.insert(0, {tests!r})
import funcs, snake

def stream():
    return (
        snake.from_iterable([(i, 0.005) for i in range(200)])
        .par_map(funcs.sleep_then_return_pair, workers=2)  # slow items: workers busy
        .shuffle(16, seed=3)
        .batch(5, collate=None)
    )

if __name__ == "__main__":
    path, k = sys.argv[1], int(sys.argv[2])
    if k >= 0:  # the first run: k batches, then save the state and stop
        with stream().open_sync() as items:
            got = [next(items) for _ in range(k)]
            with open(path, "w") as f:
                json.dump({{"state": items.state_dict(), "got": got}}, f)
    else:  # a new interpreter resumes from the file
        with open(path) as f:
            state = json.load(f)["state"]
        with stream().open_sync(state_dict=state) as items:
            print(json.dumps(list(items)))
"""


def test_a_new_interpreter_resumes_from_a_json_file(tmp_path: Path) -> None:
    script = tmp_path / "restart.py"
    script.write_text(_RESTART.format(tests=str(TESTS)))
    path = tmp_path / "state.json"

    def run(k: int) -> str:
        proc = subprocess.run(
            [sys.executable, str(script), str(path), str(k)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    run(7)
    saved = json.loads(path.read_text())
    rest = json.loads(run(-1))
    items = [x for b in saved["got"] + rest for x in b]
    full = [x for b in _restart_reference() for x in b]
    assert items == full  # every item once, in the uninterrupted run's order


def _restart_reference() -> list[Any]:
    stream = (
        snake.from_iterable([(i, 0.0) for i in range(200)])
        .par_map(funcs.sleep_then_return_pair, workers=2)
        .shuffle(16, seed=3)
        .batch(5, collate=None)
    )
    return stream.to_list()


def test_ranks_that_resume_on_their_own_still_see_every_item_once() -> None:
    seen: list[int] = []
    for rank, k in enumerate((3, 11, 0)):
        stream = snake.from_iterable(range(100)).shuffle(10, seed=7).shard(rank=rank, world_size=3).map(funcs.inc)
        with stream.open_sync() as items:
            seen += [next(items) for _ in range(k)]
            state = json.loads(json.dumps(items.state_dict()))
        with stream.open_sync(state_dict=state) as items:
            seen += list(items)
    assert sorted(seen) == [x + 1 for x in range(100)]  # each item on one rank, once


def test_a_checkpoint_with_workers_busy_runs_their_items_again(tmp_path: Path) -> None:
    # Every item takes 50 ms in a worker: at the checkpoint, both workers are busy.
    stream = snake.from_iterable([(i, 0.05) for i in range(40)]).par_map(funcs.sleep_then_return_pair, workers=2)
    with stream.open_sync() as items:
        first = [next(items) for _ in range(5)]
        state = items.state_dict()
        stats = items.statistics()
    assert stats.stage(1).items_in > 5  # items were in flight past the consumer
    with stream.open_sync(state_dict=state) as items:
        rest = list(items)
    assert first + rest == list(range(40))
