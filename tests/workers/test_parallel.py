"""Parallel stages that never hang and never leak, with real faults injected."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import funcs
import numpy as np
import psutil
import pytest
import trio

import snake
from snake._workers import shm as _shm
from snake.testing import assert_no_leaks


@pytest.mark.parametrize("fn", [funcs.die_on_3, funcs.segfault_on_3, funcs.sigkill_on_3])
def test_a_dying_worker_is_a_clear_error_within_5_s(fn: Any, no_leaks: None) -> None:
    stream = snake.from_iterable(range(20)).par_map(fn, workers=2)
    t0 = time.monotonic()
    with pytest.raises(snake.WorkerCrashedError) as info:
        stream.to_list()
    assert time.monotonic() - t0 < 5
    message = str(info.value)
    assert f"#1 par_map({fn.__name__}, workers=2)" in message
    assert "item index 3" in message
    assert any("item index 3" in n for n in info.value.__notes__)
    # how it died: faulthandler's report of a fatal signal, else no Python error
    if fn is funcs.segfault_on_3:
        assert message.endswith("(Fatal Python error: Segmentation fault)")
        assert f"in {fn.__name__}" in str(info.value.__cause__)  # the worker's stack as it died
    else:
        assert message.endswith("(it left no Python error: os._exit, a kill signal, or the out-of-memory killer)")


def test_retries_run_the_item_again_on_a_fresh_worker(tmp_path: Any, no_leaks: None) -> None:
    items = [(str(tmp_path), i) for i in range(30)]
    stream = snake.from_iterable(items).par_map(funcs.crash_once, workers=2, retries=1)

    async def main() -> snake.PipelineStatistics:
        async with stream.open() as out:
            got = [x async for x in out]
            assert got == list(range(30))
            return out.statistics()

    stats = trio.run(main).stage(1)
    assert stats.workers_lost >= 6  # items 2, 7, 12, ... each killed one worker
    assert stats.retries >= 6
    assert stats.items_out == 30


def test_without_retries_the_crash_names_the_item(tmp_path: Any, no_leaks: None) -> None:
    items = [(str(tmp_path), i) for i in range(30)]
    with pytest.raises(snake.WorkerCrashedError, match="item index 2"):
        snake.from_iterable(items).par_map(funcs.crash_once, workers=1).to_list()


def test_par_map_timeout_kills_the_stuck_worker(no_leaks: None) -> None:
    stream = snake.from_iterable(range(8)).par_map(funcs.stuck_on_4, workers=2, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        stream.to_list()
    assert time.monotonic() - t0 < 5
    assert "item index 4" in str(info.value) and "timeout=0.5s" in str(info.value)
    assert any(n.startswith("snake: raised in stage #1 par_map(stuck_on_4") for n in info.value.__notes__)


def test_par_map_timeout_with_skip_drops_the_item_and_goes_on(no_leaks: None) -> None:
    stream = (
        snake.from_iterable(range(8))
        .par_map(funcs.stuck_on_4, workers=2, timeout=0.3)
        .on_error("skip", max_errors=1)
    )
    with stream.open_sync() as items:
        assert list(items) == [0, 1, 2, 3, 5, 6, 7]
        stats = items.statistics().stage(1)
    assert stats.errors_skipped == 1 and stats.timeouts >= 1 and stats.workers_lost >= 1


async def test_par_then_timeout(autojump_clock: trio.abc.Clock) -> None:
    stream = snake.from_iterable(range(8)).par_then(funcs.astuck_on_4, limit=3, timeout=1)
    with pytest.raises(TimeoutError, match=r"item index 4 took longer than timeout=1.0s"):
        await stream.collect()
    skipping = stream.on_error("skip")
    assert await skipping.collect() == [0, 1, 2, 3, 5, 6, 7]


@pytest.mark.parametrize("where", ["map", "filter", "flat_map", "par_then", "thread", "process"])
def test_on_error_skip_drops_logs_and_counts(where: str, caplog: pytest.LogCaptureFixture) -> None:
    base = snake.from_iterable(range(100))
    stage: snake.Stream[Any] = {
        "map": lambda: base.map(funcs.fail_on_multiples_of_10),
        "filter": lambda: base.filter(funcs.fail_on_multiples_of_10),
        "flat_map": lambda: base.flat_map(lambda x: [funcs.fail_on_multiples_of_10(x)]),
        "par_then": lambda: base.par_then(_afail_on_multiples_of_10, limit=4),
        "thread": lambda: base.par_map(funcs.fail_on_multiples_of_10, workers=2, backend="thread"),
        "process": lambda: base.par_map(funcs.fail_on_multiples_of_10, workers=2),
    }[where]()
    stream = stage.on_error("skip", max_errors=10)
    assert ".on_error('skip', max_errors=10)" in repr(stream)
    with caplog.at_level(logging.WARNING, logger="snake.errors"), stream.open_sync() as items:
        got = list(items)
        stats = items.statistics()
    assert got == [x for x in range(100) if x % 10]
    assert stats.stage(1).errors_skipped == 10
    logged = [r.getMessage() for r in caplog.records if r.name == "snake.errors"]
    assert len(logged) == 10
    assert all("item index" in m and "Boom" in m for m in logged)
    assert len(set(logged)) == 10  # once each


async def _afail_on_multiples_of_10(x: int) -> int:
    return funcs.fail_on_multiples_of_10(x)


@pytest.mark.parametrize("max_errors", [3, 0.02])
def test_over_the_error_budget_the_pipeline_fails_with_the_last_error(max_errors: float) -> None:
    stream = (
        snake.from_iterable(range(100))
        .map(funcs.fail_on_multiples_of_10)
        .on_error("skip", max_errors=max_errors)
    )
    with pytest.raises(funcs.Boom) as info:
        stream.to_list()
    # count 3: items 0, 10, 20 are skipped, 30 fails. 2 %: at item 30, 31 received -> budget 1.
    expected = "item 30 is bad" if max_errors == 3 else "item 10 is bad"
    assert str(info.value) == expected
    assert any("max_errors=" in n for n in info.value.__notes__)


def test_on_error_validation() -> None:
    s = snake.from_iterable(range(3))
    with pytest.raises(ValueError, match="on_error: mode='ignore' must be one of"):
        s.map(funcs.inc).on_error("ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"that stage is take\(2\)"):
        s.take(2).on_error("skip")
    with pytest.raises(ValueError, match="max_errors=1.5 as a fraction must be in"):
        s.map(funcs.inc).on_error("skip", max_errors=1.5)
    with pytest.raises(ValueError, match="only applies to 'skip'"):
        s.map(funcs.inc).on_error("raise", max_errors=3)
    with pytest.raises(ValueError, match='need backend="process"'):
        s.par_map(funcs.inc, backend="thread", timeout=1)
    with pytest.raises(ValueError, match="timeout=0 must be > 0"):
        s.par_map(funcs.inc, timeout=0)


def test_unpicklable_result_names_the_stage_and_items(no_leaks: None) -> None:
    with pytest.raises(Exception) as info:
        snake.from_iterable(range(3)).par_map(funcs.unpicklable_result, workers=1).to_list()
    assert any(
        "#1 par_map(unpicklable_result, workers=1) could not exchange item indices 0" in n
        for n in info.value.__notes__
    )


def test_arrays_come_back_through_shared_memory_and_leave_nothing(no_leaks: None) -> None:
    stream = snake.from_iterable(range(40)).par_map(funcs.make_array, workers=2)
    arrays = stream.to_list()
    for i, a in enumerate(arrays):
        assert a.shape == (3, 64, 128) and a.dtype == np.float32
        assert (a == i).all()
    # Results backed by shared memory stay valid after the pipeline closed...
    assert not isinstance(arrays[0].base, np.ndarray) or arrays[0].base is not None
    del arrays  # ...and are freed with the arrays (nothing is left in /dev/shm meanwhile)


def test_nested_arrays_cross_too(no_leaks: None) -> None:
    got = snake.from_iterable(range(6)).par_map(funcs.make_nested, workers=2).to_list()
    for i, item in enumerate(got):
        assert item["label"] == i
        np.testing.assert_array_equal(item["image"], np.arange(64 * 1024) + i)
        np.testing.assert_array_equal(item["pair"][0], np.arange(10) + i)
        assert (item["pair"][1] == i).all()


def test_cancel_with_arrays_in_flight_leaves_no_shm_segment(no_leaks: None) -> None:
    stream = snake.from_iterable(range(10**6)).par_map(funcs.make_array, workers=2)
    t0 = 0.0
    for i, _ in enumerate(stream):
        if i == 50:
            t0 = time.monotonic()
            break
    assert time.monotonic() - t0 < 10.0  # the stream is endless: it was stopped


def test_stale_segments_of_dead_processes_are_removed() -> None:
    # A segment named after a pid that does not exist (as a killed main process leaves).
    dead = 2**22 + 12345
    path = os.path.join(_shm.SHM_DIR, f"snake-{dead}-deadbeef-1-0")
    open(path, "wb").close()
    assert _shm.cleanup_stale() >= 1
    assert not os.path.exists(path)


def test_worker_pool_keeps_workers_warm_across_runs() -> None:
    with assert_no_leaks(grace=2.0):
        with snake.WorkerPool(2) as pool:
            stream = snake.from_iterable(range(200)).par_map(funcs.pid_of, pool=pool)
            assert "pool=<WorkerPool>" in repr(stream)
            first = set(stream.to_list())
            workers = pool._idle_pids()
            assert first <= workers and 1 <= len(workers) <= 2
            assert workers <= {p.pid for p in psutil.Process().children(recursive=True)}

            async def third() -> set[int]:
                return set(await stream.collect())

            # Later runs (sync and async) use the same processes: none is started again.
            # (Which of the warm workers a run's items land on depends on scheduling.)
            assert set(stream.to_list()) | trio.run(third) <= workers
            assert pool._idle_pids() == workers
            assert pool.statistics().idle_workers == len(workers)
        assert pool.statistics() == snake.WorkerPoolStatistics(0, 0)


def test_worker_pool_misuse_is_a_clear_error() -> None:
    pool = snake.WorkerPool(1)
    stream = snake.from_iterable(range(3)).par_map(funcs.inc, pool=pool)
    with pytest.raises(RuntimeError, match="is not open; run the pipeline inside 'with pool:'"):
        stream.to_list()
    with pytest.raises(ValueError, match="workers=2 is more than the pool's 1"):
        snake.from_iterable(range(3)).par_map(funcs.inc, workers=2, pool=pool)
    busy = snake.from_iterable([0.01] * 100).par_map(funcs.sleep_then_return, pool=pool)
    with pool, pytest.raises(RuntimeError, match="in use by a pipeline of another trio run"):  # noqa: SIM117
        with busy.open_sync() as a:
            next(a)  # a's stage holds the pool now
            with busy.open_sync() as b:
                list(b)
    with pytest.raises(RuntimeError, match="can be entered once"), pool:
        pass


async def test_stages_of_one_run_share_a_pool_within_its_workers() -> None:
    """Concurrent pipelines (a web service's requests) share a pool's workers: all
    results right, never more than `workers` processes, and cancelling one pipeline
    mid-call leaves the others running on the pool."""
    with snake.WorkerPool(2) as pool:
        streams = [
            snake.from_iterable(range(k * 100, k * 100 + 40))
            .map(lambda i: (i, 0.005))
            .par_map(funcs.sleep_then_return_pair, pool=pool)
            for k in range(4)
        ]
        results: dict[int, list[int]] = {}
        peak = 0

        async def run(k: int) -> None:
            results[k] = await streams[k].collect()

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, len(psutil.Process().children()))
                await trio.sleep(0.005)

        async def cancelled() -> None:
            with trio.move_on_after(0.05):
                await (
                    snake.from_iterable([(0, 10.0)] * 4)
                    .par_map(funcs.sleep_then_return_pair, pool=pool)
                    .collect()
                )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async with trio.open_nursery() as runs:
                runs.start_soon(cancelled)
                for k in range(4):
                    runs.start_soon(run, k)
            nursery.cancel_scope.cancel()
        assert results == {k: list(range(k * 100, k * 100 + 40)) for k in range(4)}
        assert peak <= 2
        assert not pool._in_use


async def test_waiting_for_a_shared_pool_is_not_a_timeout() -> None:
    # One worker, busy for ~0.9 s with another pipeline's items: the timed pipeline
    # waits its turn, and only the time on the worker counts against timeout=0.3.
    with snake.WorkerPool(1) as pool:
        slow = snake.from_iterable([(i, 0.3) for i in range(3)]).par_map(
            funcs.sleep_then_return_pair, pool=pool
        )
        timed = snake.from_iterable([(i, 0.01) for i in range(5)]).par_map(
            funcs.sleep_then_return_pair, pool=pool, timeout=0.3
        )
        out: dict[str, list[int]] = {}

        async def run(name: str, stream: snake.Stream[int], delay: float) -> None:
            await trio.sleep(delay)
            out[name] = await stream.collect()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "slow", slow, 0.0)
            nursery.start_soon(run, "timed", timed, 0.1)
        assert out == {"slow": [0, 1, 2], "timed": [0, 1, 2, 3, 4]}


async def test_closing_a_pool_under_a_running_stage_stops_it_and_its_workers() -> None:
    before = {p.pid for p in psutil.Process().children()}
    pool = snake.WorkerPool(2)
    pool.__enter__()
    stream = snake.from_iterable([(i, 0.02) for i in range(1000)]).par_map(
        funcs.sleep_then_return_pair, pool=pool
    )
    got = []
    with pytest.raises(RuntimeError, match="was closed while the stage ran"):
        async with stream.open() as items:
            async for x in items:
                got.append(x)
                if x == 3:
                    await trio.to_thread.run_sync(pool.close)  # as a service's shutdown might
    assert got == list(range(len(got)))  # nothing out of order or duplicated before the error
    deadline = time.monotonic() + 10
    while {p.pid for p in psutil.Process().children() if p.status() != psutil.STATUS_ZOMBIE} - before:
        assert time.monotonic() < deadline, "the pool's workers outlived the stage"
        await trio.sleep(0.05)
    assert not pool._in_use


def test_time_to_first_item_is_short() -> None:
    # Workers start (fork) while the source produces: the first result comes fast.
    stream = snake.from_iterable(range(10)).par_map(funcs.inc, workers=2)
    t0 = time.perf_counter()
    with stream.open_sync() as items:
        assert next(items) == 1
        first = time.perf_counter() - t0
    assert first < 2.0  # generous: the number itself is reported by bench/small_items.py
    assert threading.active_count() >= 1


def test_timeout_is_per_item_even_inside_large_units(no_leaks: None) -> None:
    # Fast items travel in large units; the one slow item must still be stopped.
    stream = snake.from_iterable(range(3000)).par_map(funcs.slow_on_1500, workers=2, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="item index 1500"):
        stream.to_list()
    assert time.monotonic() - t0 < 20.0  # item 1500 sleeps 60 s: it was stopped


def test_statistics_are_available_as_soon_as_open_sync_returns() -> None:
    with snake.from_iterable(range(10)).map(funcs.inc).skip(2).take(5).open_sync() as items:
        stats = items.statistics()
        assert [s.name for s in stats.stages] == [
            "#0 from_iterable(<range len=10>)",
            "#1 map(inc)",
            "#2 skip(2)",
            "#3 take(5)",
        ]
        assert list(items) == [3, 4, 5, 6, 7]
        stats = items.statistics()
    assert stats.stage(2).items_in == stats.stage(1).items_out
    assert stats.stage(3).items_out == 5


@pytest.mark.parametrize("n", [64, 70])
@pytest.mark.parametrize("drop_last", [False, True])
def test_workers_write_batches_directly_and_held_batches_never_change(
    n: int, drop_last: bool, no_leaks: None
) -> None:
    stream = snake.from_iterable(range(n)).par_map(funcs.image, workers=2).batch(8, drop_last=drop_last)
    held = []
    with stream.open_sync() as batches:
        for k, b in enumerate(batches):
            assert b.dtype == np.float32 and b.shape[1:] == (4, 64, 64)
            np.testing.assert_array_equal(b[:, 0, 0, 0], np.arange(8 * k, 8 * k + len(b)))
            if k % 3 == 0:
                held.append((k, b, b[1:3]))  # a batch and a view of it, kept while others flow
        stats = batches.statistics()
    full, rest = divmod(n, 8)
    assert len(held) == len(range(0, full + (1 if rest and not drop_last else 0), 3))
    assert stats.stage(2).items_in == n and stats.stage(2).items_out == full + (
        1 if rest and not drop_last else 0
    )
    for k, b, view in held:
        np.testing.assert_array_equal(b[:, 0, 0, 0], np.arange(8 * k, 8 * k + len(b)))
        np.testing.assert_array_equal(view[:, 3, 5, 5], np.arange(8 * k + 1, 8 * k + 3))


def _file_of(a: np.ndarray[Any, Any]) -> str:
    """The /dev/shm file whose mapping holds ``a``'s data ("" if none)."""
    address = a.__array_interface__["data"][0]
    with open("/proc/self/maps", encoding="utf-8") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            start, _, end = fields[0].partition("-")
            if int(start, 16) <= address < int(end, 16) and len(fields) == 6:
                return os.path.basename(fields[5].strip())
    return ""


def test_later_runs_write_the_slabs_and_segments_of_earlier_ones(no_leaks: None) -> None:
    # A run leaves its free slabs and segments in the process's cache; the next run, of a
    # new stream, writes into them, but never into a batch still held.
    def stream() -> snake.Stream[Any]:
        return snake.from_iterable(range(48)).par_map(funcs.image, workers=2).batch(8)

    _shm.cache.clear()  # what earlier tests left
    first = stream().to_list()
    held = first[2]  # kept through the next runs: never overwritten
    del first
    kept = {n for n, owner in _shm.cache.files.items() if owner.size == held.nbytes}
    assert len(kept) == 6 and all(_shm.is_kept(n) for n in kept)
    assert _file_of(held) in kept
    for _ in range(2):
        used = set()
        with stream().open_sync() as batches:
            for k, b in enumerate(batches):
                np.testing.assert_array_equal(b[:, 0, 0, 0], np.arange(8 * k, 8 * k + 8))
                used.add(_file_of(b))
        assert used & kept and _file_of(held) not in used
    np.testing.assert_array_equal(held[:, 0, 0, 0], np.arange(16, 24))
    segments = snake.from_iterable(range(6)).par_map(funcs.make_array, workers=1)
    assert [int(a[0, 0, 0]) for a in segments.to_list()] == list(range(6))
    for _ in range(2):  # a later run gets kept segments of the sizes it receives
        got = segments.to_list()
        assert [int(a[0, 0, 0]) for a in got] == list(range(6))
        assert any(_shm.is_kept(_file_of(a)) for a in got)
        del got
    _shm.cache.clear()
    mine = [n for n in os.listdir(_shm.SHM_DIR) if n.startswith(f"snake-{os.getpid()}-")]
    assert not _shm.cache.names() and not mine


def test_kept_files_removed_behind_snakes_back_are_not_used(no_leaks: None) -> None:
    # A user's rm (or systemd's RemoveIPC) empties /dev/shm between two runs: the next
    # run makes new files and its results are right.
    batched = snake.from_iterable(range(24)).par_map(funcs.image, workers=2).batch(8)
    plain = snake.from_iterable(range(6)).par_map(funcs.make_array, workers=2)
    for _ in range(3):
        got = batched.to_list()
        assert [b[:, 0, 0, 0].tolist() for b in got] == [list(range(k, k + 8)) for k in (0, 8, 16)]
        arrays = plain.to_list()
        assert [int(a[0, 0, 0]) for a in arrays] == list(range(6))
        del got, arrays
        for name in _shm.cache.names():
            os.unlink(os.path.join(_shm.SHM_DIR, name))
    _shm.cache.clear()


def test_pipelines_in_several_threads_share_the_cache(no_leaks: None) -> None:
    errors: list[BaseException] = []

    def epochs(offset: int) -> None:
        try:
            stream = snake.from_iterable(range(offset, offset + 16)).par_map(funcs.image, workers=1).batch(4)
            for _ in range(6):
                got = [b[:, 0, 0, 0].tolist() for b in stream]
                assert got == [list(range(offset + k, offset + k + 4)) for k in range(0, 16, 4)]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=epochs, args=(100 * i,)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors
    assert len(_shm.cache.names()) <= _shm.SHM_CACHE_FILES
    _shm.cache.clear()


def test_direct_batches_check_the_layout_like_the_collate() -> None:
    stream = snake.from_iterable(range(16)).par_map(funcs.image_or_odd, workers=2).batch(8)
    with pytest.raises(ValueError, match=r"index 9\) is shape \(4, 64, 65\)"):
        stream.to_list()


def test_non_array_results_batch_the_ordinary_way() -> None:
    got = snake.from_iterable(range(10)).par_map(funcs.make_nested, workers=2).batch(4).to_list()
    assert [b["label"].tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert got[0]["image"].shape == (4, 64 * 1024)


def test_direct_batch_mismatch_carries_the_stage_note() -> None:
    stream = snake.from_iterable(range(16)).par_map(funcs.image_or_odd, workers=2).batch(8)
    with pytest.raises(ValueError) as info:
        stream.to_list()
    assert any(n == "snake: raised in stage #2 batch(8) on item index 9" for n in info.value.__notes__)


def test_a_worker_keeps_the_mappings_of_alternating_stage_runs() -> None:
    """Stages sharing a pool alternate on a worker: each keeps its mappings (no re-map
    at every switch); ended runs (files removed) and the oldest beyond 4 are unmapped.
    Runs the worker-side functions in this process, on real /dev/shm files."""
    from snake._workers import shm as _shm

    prefixes = [_shm.new_prefix() for _ in range(6)]
    try:
        for p in prefixes:
            with open(os.path.join(_shm.SHM_DIR, f"{p}seg"), "wb") as f:
                f.truncate(_shm.MIN_SHM_BYTES)

        def mapped(p: str) -> object:
            _shm.worker_run(p)
            return _shm.worker_map(f"{p}seg", _shm.MIN_SHM_BYTES)

        a, b = mapped(prefixes[0]), mapped(prefixes[1])
        assert mapped(prefixes[0]) is a and mapped(prefixes[1]) is b  # kept across switches
        _shm.cleanup(prefixes[0])  # run 0 ended
        mapped(prefixes[2])
        assert prefixes[0] not in _shm._worker_maps and a.closed  # type: ignore[attr-defined]
        for p in prefixes[3:]:
            mapped(p)
        assert list(_shm._worker_maps) == prefixes[2:]  # at most 4 runs, the latest
        assert b.closed  # type: ignore[attr-defined]
    finally:
        for p in prefixes:
            _shm.cleanup(p)
        _shm.worker_run(_shm.new_prefix())  # leave no mapping of this test behind
