"""statistics() adds up, measures waits, and report() names the stage that limits throughput."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio
from funcs import inc, sleep_then_return
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snake


async def ident(x: Any) -> Any:
    await trio.lowlevel.checkpoint()
    return x


async def slow_io(x: Any) -> Any:
    await trio.sleep(0.01)
    return x


def spin(x: Any) -> Any:
    """About 5 ms of CPU (a sleep would let a thread backend overlap freely)."""
    t = time.perf_counter()
    while time.perf_counter() - t < 0.005:
        pass
    return x


def fail_on_5(x: int) -> int:
    if x % 10 == 5:
        raise ValueError(x)
    return x


_STAGES = st.sampled_from(["map", "par_then", "prefetch", "par_map_thread", "skip_errors"])


def build(names: list[str], n: int) -> snake.Stream[Any]:
    s: snake.Stream[Any] = snake.from_iterable(range(n))
    for name in names:
        if name == "map":
            s = s.map(inc)
        elif name == "par_then":
            s = s.par_then(ident, limit=3)
        elif name == "prefetch":
            s = s.prefetch(5)
        elif name == "par_map_thread":
            s = s.par_map(inc, workers=2, backend="thread")
        else:
            s = s.par_then(ident, limit=2).map(fail_on_5).on_error("skip")
    return s


def check_adds_up(stats: snake.PipelineStatistics) -> None:
    for stage in stats.stages:
        assert stage.items_in == stage.items_out + stage.in_flight + stage.errors_skipped, stage
        assert stage.busy_s >= 0 and stage.wait_upstream_s >= 0 and stage.wait_downstream_s >= 0
        assert stage.buffered >= 0
        if stage.utilization is not None:
            assert 0 <= stage.utilization <= 1
    assert 0 <= stats.consumer_wait_s <= stats.elapsed_s


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(_STAGES, max_size=4), n=st.integers(0, 300))
def test_statistics_add_up_at_every_chunk_and_at_the_end(names: list[str], n: int) -> None:
    # in = out + in flight + dropped, for every stage, whenever a snapshot is taken.
    async def main() -> snake.PipelineStatistics:
        async with build(names, n).open() as items:
            while (chunk := await items.receive_chunk()) is not None:
                assert chunk
                check_adds_up(items.statistics())
            return items.statistics()

    stats = trio.run(main)
    check_adds_up(stats)
    assert stats.stage(0).items_out == n
    assert all(s.in_flight == 0 for s in stats.stages)


def test_statistics_record_time_and_consumer_wait() -> None:
    with snake.from_iterable([0.002] * 60).par_map(sleep_then_return, workers=2, backend="thread").open_sync() as items:
        assert list(items) == [0.002] * 60
        stats = items.statistics()
    par = stats.stage(1)
    assert par.slots == 2 and par.utilization is not None and par.utilization > 0.5
    assert par.busy_s > 0.03
    assert stats.stage(0).utilization is None and stats.stage(0).wait_downstream_s > 0
    assert stats.items_received == 60
    assert stats.consumer_wait_s > 0.5 * stats.elapsed_s  # the loop did nothing: it waited


async def test_inline_stages_name_their_task() -> None:
    async with snake.from_iterable(range(10)).map(inc).par_then(ident).map(inc).open() as items:
        assert [x async for x in items] == [x + 2 for x in range(10)]
        stats = items.statistics()
    assert [s.fused_into for s in stats.stages] == [None, 0, None, 2]


async def test_buffered_counts_items_waiting_for_the_consumer() -> None:
    async with snake.from_iterable(range(100)).par_then(ident, limit=4).open() as items:
        assert await items.receive() == 0
        await trio.sleep(0.05)
        stats = items.statistics()
        # the channel to the consumer, the par_then outbox: everything not yet received
        held = stats.stage(1).buffered + stats.stage(0).buffered + stats.stage(1).in_flight
        assert held > 0
        assert stats.stage(1).items_out <= 100


# -- the bottleneck report ----------------------------------------------------------------


def bottleneck_line(report: str) -> str:
    lines = report.splitlines()
    assert lines[0].startswith("snake report: ")
    assert lines[1].startswith("bottleneck: ")
    return lines[1]


def test_report_names_a_slow_par_map() -> None:
    stream = snake.from_iterable(range(200)).par_then(ident, limit=8).par_map(spin, workers=2).map(str)
    with stream.open_sync() as items:
        assert len(list(items)) == 200
        line = bottleneck_line(items.report())
    assert line.startswith("bottleneck: #2 par_map(spin, workers=2): workers busy"), line
    assert "raise workers (now 2)" in line


async def test_report_names_a_slow_par_then() -> None:
    stream = snake.from_iterable(range(150)).map(inc).par_then(slow_io, limit=3).prefetch(10)
    async with stream.open() as items:
        assert len([x async for x in items]) == 150
        line = bottleneck_line(items.report())
    assert line.startswith("bottleneck: #2 par_then(slow_io, limit=3): tasks busy"), line
    assert "raise limit (now 3)" in line


@pytest.mark.parametrize("how", ["sync", "async"])
def test_report_names_a_slow_consumer(how: str) -> None:
    stream = snake.from_iterable(range(100)).par_then(ident, limit=4).par_map(inc, workers=2, backend="thread")
    if how == "sync":
        with stream.open_sync() as items:
            for _ in items:
                time.sleep(0.004)
            report = items.report()
    else:

        async def main() -> str:
            async with stream.open() as items:
                async for _ in items:
                    await trio.sleep(0.004)
                return items.report()

        report = trio.run(main)
    line = bottleneck_line(report)
    assert line.startswith("bottleneck: the consumer (your loop)"), report
    assert report.splitlines()[-1].lstrip().startswith("consumer")


def test_report_names_a_slow_inline_map_and_its_task() -> None:
    with snake.from_iterable(range(100)).map(spin).par_then(ident, limit=8).open_sync() as items:
        assert len(list(items)) == 100
        line = bottleneck_line(items.report())
    assert line.startswith("bottleneck: #1 map(spin):"), line
    assert "par_map" in line


def test_report_before_anything_ran_is_text() -> None:
    report = snake.PipelineStatistics(())
    assert isinstance(report.stages, tuple)
    with snake.from_iterable([]).open_sync() as items:
        assert list(items) == []
        assert items.report().startswith("snake report: 0 items")


def test_report_names_a_slow_chain_source() -> None:
    # The inputs' work happens in their child pipelines, inside the chain's task: one row.
    halves = [snake.from_iterable(range(k, 100, 2)).map(spin) for k in range(2)]
    with snake.chain(*halves).par_then(ident, limit=8).open_sync() as items:
        assert len(list(items)) == 100
        stats = items.statistics()
        line = bottleneck_line(items.report())
    source = stats.stage(0)
    assert line.startswith("bottleneck: #0 chain("), line
    assert source.busy_s > 0.5 * stats.elapsed_s, source


def _files_source(tmp_path: Any) -> snake.Stream[Any]:
    return snake.from_files([str(tmp_path / f"f{i}") for i in range(300)])


def _parquet_source(tmp_path: Any) -> snake.Stream[Any]:
    pa = pytest.importorskip("pyarrow", reason="pyarrow is optional for users; the test extra installs it")
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is optional for users; the test extra installs it")
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"id": list(range(300))}), path, row_group_size=20)
    return snake.from_parquet(str(path))


def _chain_source(tmp_path: Any) -> snake.Stream[Any]:
    return snake.chain(snake.from_iterable(range(150)), snake.from_iterable(range(150)))


def _mix_source(tmp_path: Any) -> snake.Stream[Any]:
    return snake.mix([snake.from_iterable(range(150)), snake.from_iterable(range(150))], seed=0)


def _repeat_source(tmp_path: Any) -> snake.Stream[Any]:
    return snake.from_iterable(range(100)).repeat(3)


@pytest.mark.parametrize("make", [_files_source, _parquet_source, _chain_source, _mix_source, _repeat_source])
def test_a_fast_source_times_its_sends_and_is_not_the_bottleneck(make: Any, tmp_path: Any) -> None:
    # Each source times its sends: blocked behind a slow par_map, it waits downstream
    # most of its life, works some of it, and the report names the par_map.
    with make(tmp_path).par_map(spin, workers=2, backend="thread").open_sync() as items:
        assert len(list(items)) == 300
        stats = items.statistics()
        line = bottleneck_line(items.report())
    source = stats.stage(0)
    assert line.startswith("bottleneck: #1 par_map(spin, workers=2"), line
    assert source.busy_s > 0, source
    assert source.wait_downstream_s > 0.5 * source.elapsed_s, source
    assert source.busy_s < 0.5 * source.elapsed_s, source
    assert source.buffered >= 0
