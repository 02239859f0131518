"""Concurrency that tunes itself: par_then(limit="auto"), par_map(workers="auto"), autotune()."""

from __future__ import annotations

import gc
import re
from collections.abc import AsyncIterator

import funcs
import pytest
import trio

import snake
from snake.testing import assert_no_leaks


async def slow_io(x: int) -> int:
    await trio.sleep(0.02)
    return x


async def big_io(x: int) -> bytes:
    await trio.sleep(0.002)
    return bytes(1 << 20)


async def snake_enumerate(items: snake.Items[object]) -> AsyncIterator[tuple[int, object]]:
    i = 0
    async for x in items:
        yield i, x
        i += 1


def stats_of(stream: snake.Stream[object]) -> tuple[list[object], snake.PipelineStatistics, str]:
    async def main() -> tuple[list[object], snake.PipelineStatistics, str]:
        async with stream.open() as items:
            got = [x async for x in items]
            return got, items.statistics(), items.report()

    return trio.run(main)


def test_an_io_stage_raises_its_limit_while_that_pays() -> None:
    # 20 ms per call: 16 calls at once give ~800 items/s, so doubling pays, again and again.
    stream = snake.from_iterable(range(3000)).par_then(slow_io, limit="auto")
    got, stats, report = stats_of(stream)
    assert got == list(range(3000))  # in order, none lost
    st = stats.stage(1)
    assert st.slots > 16, st.tuning
    assert st.tuning is not None and st.tuning.startswith(
        f"limit=auto: {st.slots} (at most 1024), started at 16"
    )
    assert "16→32: +" in st.tuning and "kept" in st.tuning
    assert f"tuned: #1 par_then(slow_io, limit='auto'): {st.tuning}" in report


def test_a_stage_that_waits_for_its_consumer_stops_growing() -> None:
    # The consumer is the limit (5 ms per item, 4x slower than 16 calls of 20 ms). While the
    # stage fills its output buffer (256 results, in about 0.4 s) it is the limit and may
    # grow; once the buffer is full its slots wait for room, and it grows no more: the
    # run lasts 4 s, its changes all come in the first 2.
    stream = snake.from_iterable(range(800)).par_then(slow_io, limit="auto")

    async def main() -> snake.StageStatistics:
        async with stream.open() as items:
            async for _ in items:
                await trio.sleep(0.005)
            return items.statistics().stage(1)

    st = trio.run(main)
    assert st.items_out == 800
    assert st.slots <= 128 and st.tuning is not None, st.tuning
    times = [float(t) for t in re.findall(r"at (\d+\.\d+) s", st.tuning)]
    assert all(t < 2.0 for t in times), st.tuning


def test_a_memory_budget_bounds_what_a_tuned_stage_holds() -> None:
    # 1 MiB results, a 12 MiB budget: at most (K + 2) x (P + 2L) = 3 x (1 + 2) results with
    # one call and a buffer of one (docs/concurrency.md): the stage shrinks to 1 or 2 calls.
    stream = snake.from_iterable(range(400)).par_then(big_io, limit="auto").autotune(memory_budget=12 << 20)

    async def main() -> tuple[int, snake.StageStatistics]:
        most = 0
        async with stream.open() as items:
            async for i, _ in snake_enumerate(items):
                if i >= 200:  # once the tuner has had time to act
                    st = items.statistics().stage(1)
                    most = max(most, st.buffered + st.in_flight)
                await trio.sleep(0.001)
            return most, items.statistics().stage(1)

    most, st = trio.run(main)
    assert st.items_out == 400
    assert st.slots <= 2, st.tuning
    assert st.tuning is not None and "over its memory share" in st.tuning
    assert "may hold up to" in st.tuning and "of its 12.6 MB memory share" in st.tuning
    assert most <= 12, most  # far below the 256 results an untuned stage may buffer


def test_workers_auto_stays_within_the_cpu_budget(no_leaks: None) -> None:
    stream = snake.from_iterable(range(40)).par_map(funcs.square, workers="auto").autotune(cpus=1)
    got, stats, _ = stats_of(stream)
    assert got == [x * x for x in range(40)]
    st = stats.stage(1)
    assert st.slots == 1
    assert st.tuning is not None and st.tuning.startswith("workers=auto: 1 of a 1-CPU budget, started at 1")


def test_fixed_stages_count_against_the_budget(no_leaks: None) -> None:
    stream = (
        snake.from_iterable(range(30))
        .par_map(funcs.inc, workers=2)
        .par_map(funcs.double, workers="auto")
        .autotune(cpus=3)
    )
    got, stats, _ = stats_of(stream)
    assert got == [2 * (x + 1) for x in range(30)]
    st = stats.stage(2)
    assert st.slots == 1
    assert st.tuning is not None and "of a 3-CPU budget (2 taken by fixed stages)" in st.tuning


def test_thread_backend_tunes_too() -> None:
    stream = (
        snake.from_iterable(range(50))
        .par_map(funcs.square, workers="auto", backend="thread")
        .autotune(cpus=2)
    )
    got, stats, _ = stats_of(stream)
    assert got == [x * x for x in range(50)]
    assert stats.stage(1).tuning is not None and stats.stage(1).slots <= 2


def test_breaking_out_of_a_tuned_pipeline_leaves_nothing() -> None:
    stream = (
        snake.from_iterable(range(10_000))
        .par_then(slow_io, limit="auto")
        .par_map(funcs.square, workers="auto")
    )
    with assert_no_leaks(), stream.open_sync() as items:
        for i, x in enumerate(items):
            assert x == i * i
            if i == 50:
                break


def test_a_raising_function_in_a_tuned_stage_comes_out_unchanged() -> None:
    stream = snake.from_iterable(range(20)).par_map(funcs.fail_on_7, workers="auto")
    with assert_no_leaks(), pytest.raises(funcs.Boom, match="item 7 is bad"):
        stream.to_list()


def test_repr_and_plan() -> None:
    s = snake.from_iterable(range(3)).par_then(slow_io, limit="auto").autotune(cpus=2, memory_budget=1000)
    assert repr(s) == (
        "from_iterable(<range len=3>).par_then(slow_io, limit='auto').autotune(cpus=2, memory_budget=1000)"
    )
    assert s.to_list() == [0, 1, 2]
    # autotune() without a tuned stage says so in the plan's notes
    _, stats, _ = stats_of(snake.from_iterable(range(3)).autotune(cpus=1))
    assert any("has no stage to tune" in note for note in stats.plan)


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (
            lambda s: s.par_then(slow_io, limit="fast"),
            TypeError,
            "par_then: limit='fast' must be an int or 'auto'",
        ),
        (lambda s: s.par_then(slow_io, limit=0), ValueError, "par_then: limit=0 must be >= 1"),
        (
            lambda s: s.par_map(funcs.inc, workers="AUTO"),
            TypeError,
            "par_map: workers='AUTO' must be an int or 'auto'",
        ),
        (lambda s: s.autotune(cpus=0), ValueError, "autotune: cpus=0 must be >= 1"),
        (lambda s: s.autotune(cpus=1.5), TypeError, "autotune: cpus=1.5 must be an int"),
        (
            lambda s: s.autotune(memory_budget="1GB"),
            TypeError,
            "autotune: memory_budget='1GB' must be an int",
        ),
    ],
)
def test_bad_arguments_are_clear_errors(build: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        build(snake.from_iterable(range(3)))  # type: ignore[operator]
    assert str(info.value) == message


def test_workers_auto_needs_a_local_backend() -> None:
    pytest.importorskip("ray", reason="the ray backend's argument check needs ray installed")
    with pytest.raises(ValueError, match="workers='auto' needs backend='process' or 'thread'"):
        snake.from_iterable(range(3)).par_map(funcs.inc, workers="auto", backend="ray")


def test_a_memory_budget_counts_the_batches_fused_after_a_tuned_stage() -> None:
    # batch(4) fused after the stage: an item of its output buffer is 4 results of 1 MiB.
    stream = (
        snake.from_iterable(range(1600)).par_then(big_io, limit="auto").batch(4, collate=None)
    ).autotune(memory_budget=12 << 20)
    got, stats, _ = stats_of(stream)
    assert len(got) == 400
    st = stats.stage(1)
    assert st.slots <= 2 and st.tuning is not None and "over its memory share" in st.tuning, st.tuning


def test_a_memory_share_below_the_output_buffer_keeps_the_size_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    # batch(8) fused after the stage: one batch in its output buffer, counted (K + 2) times,
    # is 24 MiB of 1 MiB results, whatever the limit. A 4 MiB budget cannot be met by any
    # size, and a smaller limit would only lose items/s: the stage keeps its start (16),
    # says why in its tuning line, and logs it once.
    stream = (
        snake.from_iterable(range(800)).par_then(big_io, limit="auto").batch(8, collate=None)
    ).autotune(memory_budget=4 << 20)
    with caplog.at_level("WARNING", logger="snake"):
        got, stats, _ = stats_of(stream)
    assert [len(b) for b in got] == [8] * 100
    st = stats.stage(1)
    assert st.tuning is not None and "over its memory share" not in st.tuning, st.tuning
    assert st.slots >= 16, st.tuning
    sentence = "its memory share (4.2 MB) is less than its output buffer alone may hold (25.2 MB), whatever its size"
    assert sentence in st.tuning, st.tuning
    warned = [r.getMessage() for r in caplog.records if "memory share" in r.getMessage()]
    assert len(warned) == 1 and sentence in warned[0] and "raise memory_budget" in warned[0], warned
    assert "par_then(big_io, limit='auto')" in warned[0], warned


@pytest.mark.parametrize("ordered", [True, False])
def test_leaving_a_tuned_stage_with_a_batch_half_made_frees_its_arrays_at_once(ordered: bool) -> None:
    # The results a batch() fused after the stage holds (arrays in shared memory) must go
    # when the run ends, without the garbage collector: nothing may keep the stage alive.
    stream = (
        snake.from_iterable(range(200))
        .par_map(funcs.make_array, workers="auto", ordered=ordered)
        .batch(8)
    )

    async def main() -> None:
        async with stream.open() as batches:
            seen = 0
            async for b in batches:
                seen += 1
                if seen == 3:
                    break

    gc_was = gc.isenabled()
    gc.disable()
    try:
        with assert_no_leaks():
            trio.run(main)
    finally:
        if gc_was:
            gc.enable()
