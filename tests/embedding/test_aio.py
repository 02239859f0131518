"""snake.aio: pipelines opened from asyncio (trio in guest mode on the asyncio loop).

Every test drives a real asyncio loop with ``asyncio.run`` (pytest runs these test
functions as plain functions; trio_mode only affects ``async def`` tests). Leak checks
use real time and real processes: after a block exits, no trio task of its pipeline,
no thread and no worker process of it may remain.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import funcs
import pytest
import trio
from conftest import REPO, child_processes

import snake
import snake.aio
from snake._embed import aio as _aio
from snake._engine import tasks
from snake.testing import assert_no_leaks

ROOT = str(REPO)


def idle_runtime() -> snake.aio.RuntimeStatistics:
    return snake.aio.RuntimeStatistics(running=False, pipelines=0, tasks=0)


async def collect(stream: snake.Stream[Any]) -> list[Any]:
    async with snake.aio.open(stream) as items:
        return [x async for x in items]


# -- contents -----------------------------------------------------------------------------------
def test_async_for_gives_every_item_in_order() -> None:
    stream = snake.from_iterable(range(5000)).map(funcs.square).filter(funcs.is_even)
    assert asyncio.run(collect(stream)) == [x * x for x in range(5000) if x % 2 == 0]


def test_receive_and_receive_chunk() -> None:
    async def main() -> tuple[list[int], list[int]]:
        got = []
        async with snake.aio.open(snake.from_iterable(range(10))) as items:
            got.append(await items.receive())
            got.append(await items.receive())
            rest: list[int] = []
            while (chunk := await items.receive_chunk()) is not None:
                assert chunk, "receive_chunk() returns None at the end, never an empty chunk"
                rest.extend(chunk)
            with pytest.raises(trio.EndOfChannel):
                await items.receive()
        return got, rest

    got, rest = asyncio.run(main())
    assert got == [0, 1]
    assert rest == list(range(2, 10))


def test_par_map_on_worker_processes_leaves_nothing_behind() -> None:
    with assert_no_leaks(grace=2.0):
        stream = snake.from_iterable(range(200)).par_map(funcs.square, workers=2)
        assert asyncio.run(collect(stream)) == [x * x for x in range(200)]


def test_statistics_and_report_are_forwarded() -> None:
    async def main() -> tuple[snake.PipelineStatistics, str]:
        async with snake.aio.open(snake.from_iterable(range(3000)).map(funcs.inc)) as items:
            assert items.statistics().stages == () or items.statistics().items_received == 0
            n = 0
            async for _ in items:
                n += 1
            assert n == 3000
            return items.statistics(), items.report()

    stats, report = asyncio.run(main())
    assert [s.name for s in stats.stages] == ["#0 from_iterable(<range len=3000>)", "#1 map(inc)"]
    assert stats.items_received == 3000
    assert stats.stage(1).items_out == 3000
    assert report.startswith("snake report: 3,000 items in ")


def test_a_slow_consumer_gets_every_item_through_the_bounded_hand_off() -> None:
    # The trio side stops at HANDOFF_CHUNKS chunks and is woken again by the consumer.
    async def main() -> list[int]:
        out = []
        async with snake.aio.open(snake.from_iterable(range(20_000)).batch(7, collate=None)) as items:
            async for batch in items:
                out.extend(batch)
                if len(out) % 700 == 0:
                    await asyncio.sleep(0.001)
        return out

    assert asyncio.run(main()) == list(range(20_000))


# -- errors -------------------------------------------------------------------------------------
def test_a_stage_error_comes_out_unchanged_with_the_note() -> None:
    stream = snake.from_iterable(range(20)).map(funcs.fail_on_7)
    got: list[int] = []

    async def main() -> None:
        async with snake.aio.open(stream) as items:
            async for x in items:
                got.append(x)

    with pytest.raises(funcs.Boom, match="item 7 is bad") as info:
        asyncio.run(main())
    assert type(info.value) is funcs.Boom
    assert "snake: raised in stage #1 map(fail_on_7) on item index 7" in info.value.__notes__
    assert got == list(range(len(got))) and len(got) <= 7, "a prefix, then the error"


def fail_at_30000(x: int) -> int:
    if x == 30_000:
        raise funcs.Boom("item 30000 is bad")
    return x


def test_an_error_while_the_hand_off_is_full_comes_after_the_items_handed_over() -> None:
    # The consumer is slow: the trio side waits for room when the stage fails. The items
    # handed over come first; those of the failing chunk and behind it never arrive.
    got: list[int] = []

    async def main() -> None:
        async with snake.aio.open(snake.from_iterable(range(10**6)).map(fail_at_30000)) as items:
            async for x in items:
                got.append(x)
                if x % 2000 == 0:
                    await asyncio.sleep(0.002)

    with pytest.raises(funcs.Boom, match="item 30000 is bad"):
        asyncio.run(main())
    assert 10_000 < len(got) <= 30_000
    assert got == list(range(len(got)))


def test_a_worker_process_error_comes_out_unchanged() -> None:
    with assert_no_leaks(grace=2.0):
        stream = snake.from_iterable(range(20)).par_map(funcs.fail_on_7, workers=2)
        with pytest.raises(funcs.Boom) as info:
            asyncio.run(collect(stream))
        assert any(n.startswith("snake: raised in stage #1 par_map(fail_on_7") for n in info.value.__notes__)


def test_an_error_after_the_consumer_stopped_reading_is_raised_at_the_end_of_the_block() -> None:
    async def main() -> None:
        async with snake.aio.open(snake.from_iterable(range(20)).map(funcs.fail_on_7)):
            await asyncio.sleep(0.2)  # the pipeline fails meanwhile; nobody reads

    with pytest.raises(funcs.Boom):
        asyncio.run(main())


def test_an_error_already_raised_in_the_block_is_not_raised_again() -> None:
    async def main() -> str:
        async with snake.aio.open(snake.from_iterable(range(20)).map(funcs.fail_on_7)) as items:
            try:
                async for _ in items:
                    pass
            except funcs.Boom:
                return "handled"
        return "not raised"  # pragma: no cover

    assert asyncio.run(main()) == "handled"


def test_an_exception_in_the_consumer_propagates_and_stops_the_pipeline() -> None:
    with assert_no_leaks(grace=2.0):
        async def main() -> None:
            async with snake.aio.open(
                snake.from_iterable(itertools.count()).par_map(funcs.inc, workers=2)
            ) as items:
                async for x in items:
                    if x == 50:
                        raise LookupError("consumer")

        with pytest.raises(LookupError, match="consumer"):
            asyncio.run(main())


# -- cancellation -------------------------------------------------------------------------------
STOPS = ["break", "exception", "leave the block", "task.cancel", "wait_for", "asyncio.timeout"]


@pytest.mark.parametrize("how", STOPS)
def test_stopping_abandons_work_in_worker_processes_promptly(how: str) -> None:
    """After the first item every item sleeps 60 s in a worker: only killing the workers
    stops the pipeline within the second the test allows."""
    with assert_no_leaks(grace=1.0):
        stream = snake.from_iterable([0.0] + [60.0] * 100).par_map(funcs.sleep_then_return, workers=2)
        stop_at = 0.0
        busy_workers = 0

        def stopping() -> None:
            nonlocal stop_at, busy_workers
            busy_workers = len(child_processes())
            stop_at = time.monotonic()

        async def consume(first: asyncio.Event) -> None:
            async with snake.aio.open(stream) as items:
                async for x in items:
                    assert x == 0.0
                    first.set()
                    if how in ("break", "exception", "leave the block"):
                        await asyncio.sleep(0.3)  # the workers are busy with 60 s items now
                        stopping()
                        if how == "break":
                            break
                        if how == "exception":
                            raise LookupError("stop")
                        return

        async def main() -> snake.aio.RuntimeStatistics:
            first = asyncio.Event()
            if how in ("break", "leave the block"):
                await consume(first)
            elif how == "exception":
                with pytest.raises(LookupError):
                    await consume(first)
            elif how == "task.cancel":
                task = asyncio.create_task(consume(first))
                await first.wait()
                await asyncio.sleep(0.3)
                stopping()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            else:

                async def deadline() -> None:
                    await first.wait()
                    await asyncio.sleep(0.3)
                    stopping()

                helper = asyncio.create_task(deadline())
                with pytest.raises(TimeoutError):
                    if how == "wait_for":
                        await asyncio.wait_for(consume(first), 2.0)
                    else:
                        async with asyncio.timeout(2.0):
                            await consume(first)
                await helper
            return snake.aio.statistics()

        t0 = time.monotonic()
        assert asyncio.run(main()) == idle_runtime()
        took = time.monotonic() - (stop_at if how not in ("wait_for", "asyncio.timeout") else t0 + 2.0)
        assert busy_workers >= 2, "the worker processes were running when the pipeline was stopped"
        assert took < 1.0, f"stopping took {took:.2f} s"


def test_cancelling_twice_still_waits_for_the_pipeline_to_stop() -> None:
    with assert_no_leaks(grace=1.0):
        stream = snake.from_iterable(itertools.count()).par_map(funcs.sleep_long, workers=2)

        async def consume() -> None:
            async with snake.aio.open(stream) as items:
                async for _ in items:  # pragma: no cover
                    pass

        async def main() -> snake.aio.RuntimeStatistics:
            task = asyncio.create_task(consume())
            await asyncio.sleep(0.5)
            task.cancel()
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return snake.aio.statistics()

        assert asyncio.run(main()) == idle_runtime()


def test_cancelling_the_task_while_the_pipeline_opens() -> None:
    async def main() -> snake.aio.RuntimeStatistics:
        for delay in range(6):
            task = asyncio.create_task(collect(snake.from_iterable(itertools.count())))
            for _ in range(delay):
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return snake.aio.statistics()

    assert asyncio.run(main()) == idle_runtime()


def test_trio_stages_are_cancelled_and_no_task_remains() -> None:
    async def forever(x: int) -> int:
        await trio.sleep_forever()
        return x  # pragma: no cover

    async def main() -> tuple[snake.aio.RuntimeStatistics, snake.aio.RuntimeStatistics]:
        task = asyncio.create_task(
            collect(snake.from_iterable(itertools.count()).par_then(forever, limit=10))
        )
        await asyncio.sleep(0.2)
        during = snake.aio.statistics()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return during, snake.aio.statistics()

    during, after = asyncio.run(main())
    assert during.running and during.pipelines == 1
    assert during.tasks >= 12, during  # the pump, the source, par_then's 10 runners and its sender
    assert after == idle_runtime()


def test_a_worker_pool_serves_again_after_a_break() -> None:
    # Busy workers are killed on the way out (their calls cannot be cancelled), idle ones
    # stay in the pool; either way no call is left running and the pool serves the next run.
    with assert_no_leaks(grace=2.0):
        async def main() -> list[tuple[list[int], int, int]]:
            rounds = []
            with snake.WorkerPool(2) as pool:
                stream = snake.from_iterable(range(10**9)).par_map(funcs.inc, pool=pool)
                for _ in range(3):
                    got = []
                    async with snake.aio.open(stream) as items:
                        async for x in items:
                            got.append(x)
                            if x == 100:
                                break
                    rounds.append((got, pool.statistics().running_workers, len(child_processes())))
            return rounds

        for got, running, children in asyncio.run(main()):
            assert got == list(range(1, 101))
            assert running == 0
            assert children <= 2


def test_pipelines_of_one_loop_share_a_worker_pool() -> None:
    # They all run in the loop's one trio runtime, so they may use the pool at once.
    with assert_no_leaks(grace=2.0):
        async def main() -> tuple[list[list[int]], set[int]]:
            with snake.WorkerPool(2) as pool:

                async def one(k: int) -> list[int]:
                    stream = snake.from_iterable(range(100 * k, 100 * k + 300)).par_map(funcs.square, pool=pool)
                    return await collect(stream)

                results = await asyncio.gather(*(one(k) for k in range(4)))
                return list(results), {p.pid for p in child_processes()}

        results, pids = asyncio.run(main())
        assert results == [[x * x for x in range(100 * k, 100 * k + 300)] for k in range(4)]
        assert len(pids) == 2


def test_a_cancellation_in_the_turn_that_the_wait_ends_is_not_lost() -> None:
    # The future completes and the task is cancelled in the same turn of the loop: the
    # wait must end with the CancelledError, not return as if nothing had happened.
    async def main() -> tuple[bool, int]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        task = asyncio.create_task(tasks.wait_uncancelled(fut))
        await asyncio.sleep(0)  # the task waits

        def both() -> None:
            fut.set_result(None)
            task.cancel()

        loop.call_soon(both)
        try:
            await task
        except asyncio.CancelledError:
            return True, task.cancelling()
        return False, task.cancelling()

    assert asyncio.run(main()) == (True, 1)


def test_a_cancellation_as_the_runtime_stops_after_the_end_is_not_lost() -> None:
    # The block ends normally, and the task is cancelled (a client disconnect, a timeout)
    # in the very turn that the runtime, stopping with its last pipeline, is over.
    async def consume(tasks: list[asyncio.Task[list[int]]]) -> list[int]:
        async with snake.aio.open(snake.from_iterable(range(10))) as items:
            got = [x async for x in items]
            runtime = _aio._registry[asyncio.get_running_loop()]
            runtime.stopped.add_done_callback(lambda _: tasks[0].cancel())
        return got

    async def main() -> tuple[str, snake.aio.RuntimeStatistics]:
        tasks: list[asyncio.Task[list[int]]] = []
        tasks.append(asyncio.create_task(consume(tasks)))
        try:
            await tasks[0]
        except asyncio.CancelledError:
            return "cancelled", snake.aio.statistics()
        return "returned", snake.aio.statistics()

    assert asyncio.run(main()) == ("cancelled", idle_runtime())


def test_a_cancelled_anyio_scope_does_not_make_the_wait_spin() -> None:
    # anyio (Starlette, FastAPI) cancels a task in a cancelled scope again on every turn of
    # the loop. The pipeline takes 0.6 s to stop: waiting for it must not cost that in CPU.
    anyio = pytest.importorskip("anyio")

    async def slow_to_stop(x: int) -> int:
        with trio.CancelScope(shield=True):
            await trio.sleep(0.6)
        return x

    async def main() -> tuple[bool, float, float, snake.aio.RuntimeStatistics]:
        loop = asyncio.get_running_loop()
        with anyio.CancelScope() as scope:
            async with snake.aio.open(snake.from_iterable(range(10)).then(slow_to_stop)) as items:
                loop.call_later(0.1, scope.cancel)
                t0, cpu0 = time.monotonic(), time.process_time()
                async for _ in items:  # pragma: no cover
                    pass
        took, cpu = time.monotonic() - t0, time.process_time() - cpu0
        return scope.cancelled_caught, took, cpu, snake.aio.statistics()

    caught, took, cpu, after = asyncio.run(main())
    assert caught, "the scope's cancellation came out of the block, and the scope took it"
    assert took >= 0.5, "the block waited for the pipeline to stop"
    assert cpu < 0.2, f"waiting {took:.2f} s for the pipeline cost {cpu:.2f} s of CPU"
    assert after == idle_runtime()


def test_stopping_a_runtime_before_its_first_tick() -> None:
    # stop() before the runtime's main task first ran (nursery not there yet) must not
    # wait forever: the main task sees that the runtime is stopping.
    async def main() -> bool:
        loop = asyncio.get_running_loop()
        runtime = _aio._Runtime(loop)
        runtime.start()
        assert runtime.nursery is None, "the runtime's main task has not run yet"
        rescued = []

        def rescue() -> None:  # the bug: stop() waits forever; end the run to end the test
            rescued.append(True)
            assert runtime.nursery is not None
            runtime.run_sync_soon(runtime.nursery.cancel_scope.cancel)

        handle = loop.call_later(5.0, rescue)
        await runtime.stop()
        handle.cancel()
        return not rescued

    assert asyncio.run(main()), "stop() waited until the test ended the run"


# -- several pipelines, several loops ------------------------------------------------------------
def test_several_pipelines_share_one_runtime_on_a_loop() -> None:
    async def one(n: int, hold: asyncio.Event) -> int:
        async with snake.aio.open(snake.from_iterable(range(n)).par_then(funcs.ainc, limit=4)) as items:
            total = 0
            async for x in items:
                total += x
            await hold.wait()
            return total

    async def main() -> tuple[list[int], snake.aio.RuntimeStatistics]:
        hold = asyncio.Event()
        tasks = [asyncio.create_task(one(n, hold)) for n in (10, 100, 1000, 5000)]
        async with asyncio.timeout(30):
            while snake.aio.statistics().pipelines < 4:
                await asyncio.sleep(0.01)
        during = snake.aio.statistics()
        hold.set()
        return [await t for t in tasks], during

    totals, during = asyncio.run(main())
    assert totals == [sum(range(1, n + 1)) for n in (10, 100, 1000, 5000)]
    assert during.running and during.pipelines == 4


def test_pipelines_opened_and_closed_at_random_moments() -> None:
    # The runtime stops when the last pipeline closes and starts again for the next one,
    # also when the next one opens while it is stopping.
    async def one(i: int) -> int:
        for _ in range(i % 3):
            await asyncio.sleep(0)
        return sum(await collect(snake.from_iterable(range(i))))

    async def main() -> tuple[list[int], snake.aio.RuntimeStatistics]:
        got = []
        for round_ in range(20):
            got += await asyncio.gather(*(one(i + round_) for i in range(4)))
            await asyncio.sleep(0)
        return got, snake.aio.statistics()

    got, after = asyncio.run(main())
    assert got == [sum(range(i + r)) for r in range(20) for i in range(4)]
    assert after == idle_runtime()


def test_several_tasks_can_read_one_pipeline() -> None:
    # Each item goes to exactly one reader, whichever way it reads; all of them see the end.
    async def main() -> list[list[int]]:
        stream = snake.from_iterable(range(3000)).par_then(funcs.ajitter, limit=8)
        async with snake.aio.open(stream) as items:

            async def by_item() -> list[int]:
                out = []
                async for x in items:
                    out.append(x)
                    if x % 3 == 0:
                        await asyncio.sleep(0)
                return out

            async def by_receive() -> list[int]:
                out = []
                while True:
                    try:
                        out.append(await items.receive())
                    except trio.EndOfChannel:
                        return out
                    await asyncio.sleep(0)

            async def by_chunk() -> list[int]:
                out: list[int] = []
                while (chunk := await items.receive_chunk()) is not None:
                    assert chunk
                    out.extend(chunk)
                    await asyncio.sleep(0)
                return out

            async with asyncio.timeout(30):
                return list(await asyncio.gather(by_item(), by_receive(), by_chunk(), by_item()))

    parts = asyncio.run(main())
    assert sorted(x for part in parts for x in part) == list(range(1, 3001))
    assert sum(1 for part in parts if part) >= 2, [len(part) for part in parts]


def test_several_tasks_waiting_on_one_pipeline_all_see_its_end() -> None:
    async def slow(x: int) -> int:
        await trio.sleep(0.05)
        return x

    async def main() -> list[list[int]]:
        async with snake.aio.open(snake.from_iterable(range(6)).then(slow)) as items:

            async def reader() -> list[int]:
                return [x async for x in items]

            async with asyncio.timeout(30):
                return list(await asyncio.gather(*(reader() for _ in range(3))))

    parts = asyncio.run(main())
    assert sorted(x for part in parts for x in part) == list(range(6))


def test_two_loops_in_two_threads_at_the_same_time() -> None:
    results: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def thread_main(name: str, n: int) -> None:
        async def main() -> list[int]:
            async with snake.aio.open(snake.from_iterable(range(n)).map(funcs.double)) as items:
                first = await items.receive()
                await asyncio.to_thread(barrier.wait, 10)  # both pipelines are open now
                return [first] + [x async for x in items]

        try:
            results[name] = asyncio.run(main())
        except BaseException as exc:  # pragma: no cover
            results[name] = exc

    threads = [threading.Thread(target=thread_main, args=(name, n)) for name, n in (("a", 3000), ("b", 50))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {"a": [2 * x for x in range(3000)], "b": [2 * x for x in range(50)]}


def test_asyncio_run_exits_cleanly_with_a_pipeline_still_open() -> None:
    # main() returns while a task still iterates a pipeline: asyncio.run cancels that
    # task, whose block closes the pipeline. No hang, no warning (-X dev -W error).
    code = """
import asyncio, itertools, snake, snake.aio

async def reader(seen):
    async with snake.aio.open(snake.from_iterable(itertools.count()).map(abs)) as items:
        async for x in items:
            seen.append(x)
            await asyncio.sleep(0.001)

async def main():
    # -X dev logs callbacks slower than 0.1 s: a busy test machine is not what is checked
    asyncio.get_running_loop().slow_callback_duration = 60.0
    seen = []
    asyncio.create_task(reader(seen))
    while len(seen) < 10:
        await asyncio.sleep(0.01)
    print("read", seen[:10] == list(range(10)))

asyncio.run(main())
asyncio.run(main())
print("exited")
"""
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "read True\nread True\nexited\n"
    assert proc.stderr == ""


def run_script(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("trio_side", ["idle", "busy"])
def test_a_loop_closed_with_a_pipeline_open_is_finished_by_the_next_open(trio_side: str) -> None:
    # Closing a loop (not asyncio.run, which cancels the tasks first) while a pipeline is
    # open leaves its trio run unfinished, and trio allows one run per thread. The next
    # snake.aio.open() in the thread finishes it: its worker processes stop, the closed
    # loop is not kept, and trio.run works again. "idle": the consumer stopped reading, trio
    # waits for IO; "busy": trio had a tick scheduled on the loop when it closed.
    code = f"""
import asyncio, itertools, psutil, trio, snake, snake.aio
from snake._workers.procs import kept_pids
import snake._embed.aio

def busy_workers():  # worker processes running a call (idle cached ones and the launcher are kept)
    return len([p for p in psutil.Process().children(recursive=True) if p.pid not in kept_pids()])

async def reader(seen, stop):
    async with snake.aio.open(snake.from_iterable(itertools.count()).par_map(abs, workers=2)) as items:
        async for x in items:
            seen.append(x)
            if {trio_side == "idle"} and len(seen) >= 10:
                await stop.wait()

async def main():
    seen = []
    asyncio.get_running_loop().create_task(reader(seen, asyncio.Event()))
    while len(seen) < 10:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    return seen[:3]

async def again():
    async with snake.aio.open(snake.from_iterable(range(3))) as items:
        return [x async for x in items]

loop = asyncio.new_event_loop()
print("read", loop.run_until_complete(main()))
loop.close()  # the reader's block is still open
print("again", asyncio.run(again()))
print("workers", busy_workers())
print("closed loops kept", sum(loop.is_closed() for loop in snake._embed.aio._registry))
print("trio.run", trio.run(trio.sleep, 0))
"""
    proc = run_script(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "read [0, 1, 2]\nagain [0, 1, 2]\nworkers 0\nclosed loops kept 0\ntrio.run None\n"
    ), proc.stderr
    # asyncio logs the reader's task, destroyed pending; nothing of snake's or trio's is.
    assert "Exception ignored" not in proc.stderr and "abandoned" not in proc.stderr, proc.stderr


def test_a_keyboard_interrupt_that_ends_the_runtime_comes_out_as_itself() -> None:
    # Without asyncio.Runner's SIGINT handler (a bare run_until_complete), trio's own
    # handler delivers Ctrl-C to the runtime's main task, which ends the trio run: the
    # consumer gets the KeyboardInterrupt, not a RuntimeError; the next open() works.
    code = """
import asyncio, signal, trio, snake, snake.aio

@trio.lowlevel.enable_ki_protection
def interrupt():
    signal.raise_signal(signal.SIGINT)  # lands in trio's protected code: trio delivers it

async def stage(x):
    if x == 3:
        interrupt()
    await trio.sleep(0.01)
    return x

async def main():
    got = []
    try:
        async with snake.aio.open(snake.from_iterable(range(100)).then(stage)) as items:
            async for x in items:
                got.append(x)
    except BaseException as exc:
        print("in the block:", type(exc).__name__, got == list(range(len(got))))
        raise

async def again():
    async with snake.aio.open(snake.from_iterable(range(3))) as items:
        return [x async for x in items]

loop = asyncio.new_event_loop()
try:
    loop.run_until_complete(main())
except KeyboardInterrupt:
    print("run_until_complete: KeyboardInterrupt")
print("again", loop.run_until_complete(again()))
loop.close()
print("trio.run", trio.run(trio.sleep, 0))
"""
    proc = run_script(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "in the block: KeyboardInterrupt True\nrun_until_complete: KeyboardInterrupt\n"
        "again [0, 1, 2]\ntrio.run None\n"
    ), proc.stderr


def test_async_with_a_worker_pool_under_asyncio_closes_it_in_a_thread() -> None:
    # Closing a pool waits for its workers to exit (up to 5 s): not on the loop's thread.
    with assert_no_leaks(grace=2.0):
        async def main() -> tuple[list[threading.Thread], threading.Thread]:
            closed_in: list[threading.Thread] = []
            async with snake.WorkerPool(2) as pool:
                close = pool.close

                def recording_close() -> None:
                    closed_in.append(threading.current_thread())
                    close()

                pool.close = recording_close  # type: ignore[method-assign]
                stream = snake.from_iterable(range(50)).par_map(funcs.inc, pool=pool)
                assert await collect(stream) == list(range(1, 51))
                assert len(child_processes()) == 2
            assert pool.statistics() == snake.WorkerPoolStatistics(0, 0)
            return closed_in, threading.current_thread()

        closed_in, loop_thread = asyncio.run(main())
        assert len(closed_in) == 1 and closed_in[0] is not loop_thread


def test_a_trio_program_gets_a_clear_error() -> None:
    async def main() -> None:
        async with snake.aio.open(snake.from_iterable(range(3))):
            pass  # pragma: no cover

    with pytest.raises(RuntimeError, match=r"under trio use 'async with stream.open\(\) as items:'"):
        trio.run(main)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match=r"snake.aio.open: stream=\[1, 2\] must be a snake.Stream"):
        snake.aio.open([1, 2])  # type: ignore[arg-type]

    async def twice() -> None:
        cm = snake.aio.open(snake.from_iterable(range(3)))
        async with cm:
            pass
        async with cm:
            pass  # pragma: no cover

    with pytest.raises(RuntimeError, match="can be entered once"):
        asyncio.run(twice())
    with pytest.raises(RuntimeError, match="needs a running asyncio event loop"):
        snake.aio.statistics()


def test_the_public_names_of_snake_aio_are_documented() -> None:
    assert snake.aio.__all__ == sorted(snake.aio.__all__)
    for name in snake.aio.__all__:
        assert getattr(snake.aio, name).__doc__, name
    for name in ("receive", "receive_chunk", "statistics", "report"):
        assert getattr(snake.aio.AsyncioItems, name).__doc__, name


# -- the benchmark runs -------------------------------------------------------------------------
def test_handoff_benchmark_runs(tmp_path: Any) -> None:
    out_json = os.path.join(str(tmp_path), "handoff.json")
    proc = subprocess.run(
        [sys.executable, os.path.join("bench", "handoff.py"), "--quick", "--json", out_json],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out_json) as f:
        data = json.load(f)
    ratios = data["results"]["bulk_ratio_to_queue"]
    assert set(ratios) == {
        "queue.Queue",
        "open()",
        "open_sync()",
        "snake.aio",
        "snake.aio chunks",
        "asyncio+thread",
    }
    assert all(r > 0 for r in ratios.values())
    assert "snake.aio / asyncio+thread: bulk " in proc.stdout
