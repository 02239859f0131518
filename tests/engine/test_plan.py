"""What the plan decides when a stream opens, and that users can see it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import funcs
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import trio

import snake
from snake._plan import plan

SLABS = "the workers write their results into the batch's shared memory"


async def _stats(stream: snake.Stream[Any]) -> tuple[snake.PipelineStatistics, str]:
    async with stream.open() as items:
        async for _ in items:
            pass
        return items.statistics(), items.report()


def test_par_map_then_batch_is_written_by_the_workers_and_says_so() -> None:
    stream = snake.from_iterable(range(12)).par_map(funcs.make_array, workers=2).batch(4)
    assert [tuple(b.shape) for b in stream] == [(4, 3, 64, 128)] * 3
    stats, report = trio.run(_stats, stream)
    note = f"#1 par_map(make_array, workers=2) then #2 batch(4): {SLABS}"
    assert stats.plan == (note,)
    assert f"plan: {note}" in report.splitlines()


def test_the_plan_says_why_the_workers_do_not_write_the_batch() -> None:
    base = snake.from_iterable(range(4))
    cases = {
        "par_map(ordered=False)": base.par_map(funcs.inc, workers=2, ordered=False).batch(2),
        "on_error('skip') on the par_map": base.par_map(funcs.inc, workers=2).on_error("skip").batch(2),
        "1 stage(s) between them": base.par_map(funcs.inc, workers=2).map(funcs.inc).batch(2),
    }
    for why, stream in cases.items():
        notes = plan(stream._specs).notes
        assert len(notes) == 1 and notes[0].endswith(f"the main process copies the results into the batch ({why})")
    # no note where there is nothing to decide
    assert plan(base.par_map(funcs.inc, workers=2, backend="thread").batch(2)._specs).notes == ()
    assert plan(base.par_map(funcs.inc, workers=2).batch(2, collate=None)._specs).notes == ()
    assert plan(base.map(funcs.inc).batch(2)._specs).notes == ()


def test_on_error_is_bound_to_the_stage_before_it() -> None:
    stream = snake.from_iterable(range(12)).map(funcs.fail_on_7).on_error("skip")
    assert repr(stream).endswith(".map(fail_on_7).on_error('skip')")
    planned = plan(stream._specs).specs
    assert len(planned) == 2 and planned[1].errors.mode == "skip"  # type: ignore[attr-defined]
    assert stream.to_list() == [x for x in range(12) if x != 7]
    # a second on_error() replaces the first
    again = stream.on_error("raise")
    assert repr(again).endswith(".map(fail_on_7)")  # raise is the default: nothing to show
    assert plan(again._specs).specs[1].errors.mode == "raise"  # type: ignore[attr-defined]


def test_a_shard_after_a_parquet_source_is_done_by_the_source(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": np.arange(40)}), tmp_path / "a.parquet", row_group_size=10)
    stream = snake.from_parquet(str(tmp_path / "a.parquet")).shard(rank=1, world_size=2)
    p = plan(stream._specs)
    assert len(p.specs) == 1
    source = p.specs[0].describe().split(".shard")[0]
    note = f"shard(rank=1, world_size=2) is done by {source}: rank 1 reads only the row groups that hold its contiguous share"
    assert p.notes == (note,)
    assert [row["id"] for row in stream] == list(range(20, 40))
    stats, _ = trio.run(_stats, stream)
    assert stats.plan == p.notes


def test_inner_streams_are_planned_too() -> None:
    inner = snake.from_iterable(range(6)).par_map(funcs.make_array, workers=2).batch(3)
    stream = snake.chain(inner, inner)
    notes = plan(stream._specs).notes
    assert notes == tuple(
        f"in chain() input {i}: #1 par_map(make_array, workers=2) then #2 batch(3): {SLABS}" for i in (0, 1)
    )
    assert [b.shape for b in stream] == [(3, 3, 64, 128)] * 4
