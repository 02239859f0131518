"""Cancellation is prompt and nothing outlives open(): docs/concurrency.md, rules 6 and 1."""

from __future__ import annotations

import itertools
import time
from typing import Any

import funcs
import pytest
import trio
from conftest import count_tasks

import snake
from snake.testing import assert_no_leaks


@pytest.mark.parametrize("how", ["cancel_scope", "break", "exception"])
def test_in_flight_process_work_is_abandoned_promptly(how: str) -> None:
    # Every item sleeps 60 s in a worker process: only killing the workers can stop it.
    stream = snake.from_iterable(itertools.count()).par_map(funcs.sleep_long, workers=2)

    async def main() -> float:
        """Returns the seconds from the moment the pipeline is told to stop until open() exits."""
        before = count_tasks()
        stop_at = 0.0
        if how == "cancel_scope":
            stop_at = time.monotonic() + 0.5
            with trio.move_on_after(0.5):
                async with stream.open() as items:
                    async for _ in items:
                        pass  # pragma: no cover
        else:
            try:
                async with stream.open() as items:
                    with trio.move_on_after(0.5):
                        await items.receive()
                    stop_at = time.monotonic()
                    if how == "exception":
                        raise LookupError("stop")
                    # "break": leave the block normally with items still in flight
            except LookupError:
                pass
        assert count_tasks() == before
        return time.monotonic() - stop_at

    with assert_no_leaks(grace=1.0):
        assert trio.run(main) < 10.0  # the items in flight take 60 s each: abandoned


def test_closing_open_sync_abandons_the_work_in_workers() -> None:
    stream = snake.from_iterable([0.0, 0.0] + [60.0] * 10).par_map(funcs.sleep_then_return, workers=2)
    with assert_no_leaks(grace=1.0):
        with stream.open_sync() as items:
            assert next(items) == 0.0
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 10.0  # the items in flight take 60 s each: abandoned


def test_thread_backend_cancels_after_the_unit_in_flight() -> None:
    stream = snake.from_iterable([0.0] * 4 + [0.3] * 100).par_map(
        funcs.sleep_then_return, workers=2, backend="thread"
    )
    t0 = time.monotonic()
    with assert_no_leaks(grace=1.0):
        for i, _ in enumerate(stream):
            if i == 3:
                t0 = time.monotonic()
                break
        # Threads cannot be killed: cancellation waits for the short unit in flight
        # (0.3 s an item), not for the 15 s of the rest.
        assert time.monotonic() - t0 < 5.0


async def test_cancel_scope_around_open_in_a_trio_program() -> None:
    async def forever(x: int) -> int:
        await trio.sleep_forever()
        return x  # pragma: no cover

    async with assert_no_leaks():
        with trio.move_on_after(0.2) as scope:
            async with snake.from_iterable(itertools.count()).par_then(forever, limit=10).open() as items:
                async for _ in items:
                    pass  # pragma: no cover
    assert scope.cancelled_caught


async def test_aclose_stops_the_upstream() -> None:
    async with snake.from_iterable(itertools.count()).map(funcs.inc).open() as items:
        assert await items.receive() == 1
        await items.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await items.receive()


# -- Ctrl-C while stages start ---------------------------------------------------------


async def test_spawn_holds_off_ctrl_c_while_the_task_is_made() -> None:
    """trio's ``start_soon`` is not KI-protected: a Ctrl-C between making a coroutine and
    scheduling its task left it never awaited (a RuntimeWarning at exit, seen 3 times in
    60 interrupted runs of a repeat() pipeline). ``_util.spawn`` holds Ctrl-C off there."""
    from snake._engine.util import spawn

    protected = []

    def make() -> Any:  # start_soon calls this to make the task's coroutine
        protected.append(trio.lowlevel.currently_ki_protected())
        return trio.lowlevel.checkpoint()  # noqa: ASYNC105 -- the coroutine is the task's

    async with trio.open_nursery() as nursery:
        spawn(nursery, make)
        nursery.start_soon(make)  # plain start_soon, for contrast
    assert protected == [True, False]


def test_the_engine_spawns_every_task_through_spawn() -> None:
    from pathlib import Path

    src = Path(snake.__file__).parent
    found = [
        f"{path.relative_to(src)}:{n}: {line.strip()}"
        for path in sorted(src.rglob("*.py"))
        # aio.py spawns from a run_sync_soon callback, which trio runs KI-protected;
        # snake.testing's helpers run users' test code, not the engine
        if path.parent.name != "testing" and str(path.relative_to(src)) not in ("_engine/util.py", "_embed/aio.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if ".start_soon(" in line
    ]
    assert found == [], "use snake._engine.util.spawn(nursery, fn, *args):\n" + "\n".join(found)
