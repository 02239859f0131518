"""Errors come out unchanged (docs/concurrency.md, rule 5), through every runner and stage kind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import funcs
import pytest
import trio
from conftest import TESTS

import snake
from snake.testing import assert_no_leaks


def notes(exc: BaseException) -> list[str]:
    return list(getattr(exc, "__notes__", []))


def stage_note(exc: BaseException) -> str:
    found = [n for n in notes(exc) if n.startswith("snake: raised in stage")]
    assert len(found) == 1, notes(exc)
    return found[0]


STAGES = {
    "map": lambda s: s.map(funcs.fail_on_7),
    "filter": lambda s: s.filter(funcs.fail_on_7),
    "flat_map": lambda s: s.flat_map(lambda x: [funcs.fail_on_7(x)]),
    "then": lambda s: s.then(funcs.afail_on_7),
    "par_then": lambda s: s.par_then(funcs.afail_on_7, limit=4),
    "par_map thread": lambda s: s.par_map(funcs.fail_on_7, workers=2, backend="thread"),
    "par_map process": lambda s: s.par_map(funcs.fail_on_7, workers=2),
}


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("runner", ["open", "open_sync"])
def test_user_exception_keeps_its_type_with_a_stage_note(stage: str, runner: str) -> None:
    with assert_no_leaks(grace=2.0):
        # The failing stage is #2: a map before it shifts indices, so the note must use the
        # failing stage's own input index (7 - 1 = 6 after skip(1)).
        stream = STAGES[stage](snake.from_iterable(range(100)).skip(1))
        with pytest.raises(funcs.Boom, match="item 7 is bad") as info:
            if runner == "open":

                async def main() -> None:
                    async with stream.open() as items:
                        async for _ in items:
                            pass

                trio.run(main)
            else:
                with stream.open_sync() as items:
                    for _ in items:
                        pass
        assert type(info.value) is funcs.Boom
        note = stage_note(info.value)
        assert note.startswith("snake: raised in stage #2 ")
        assert note.endswith("on item index 6"), note
        if stage == "par_map process":
            assert any("traceback in the worker process" in n and "fail_on_7" in n for n in notes(info.value))


def test_never_an_exception_group_of_one() -> None:
    async def main() -> None:
        async with snake.from_iterable(range(10)).par_then(funcs.afail_on_7, limit=3).open() as items:
            async for _ in items:
                pass

    with pytest.raises(funcs.Boom) as info:
        trio.run(main)
    assert not isinstance(info.value, BaseExceptionGroup)
    assert info.value.__context__ is None or not isinstance(info.value.__context__, BaseExceptionGroup)


def test_consumer_exception_comes_out_unchanged_and_stops_stages() -> None:
    with assert_no_leaks(grace=2.0):
        stream = snake.from_iterable(range(10**9)).par_map(funcs.inc, workers=2, backend="thread")

        async def main() -> None:
            async with stream.open() as items:
                async for x in items:
                    if x == 50:
                        raise KeyError("consumer")

        with pytest.raises(KeyError, match="consumer"):
            trio.run(main)


def test_failure_is_never_mistaken_for_a_clean_end() -> None:
    # A stage that fails must not look like the end of the stream to the consumer:
    # code after the loop never runs.
    reached_after_loop = False

    async def main() -> None:
        nonlocal reached_after_loop
        async with snake.from_iterable(range(20)).map(funcs.fail_on_7).prefetch(4).open() as items:
            async for _ in items:
                pass
            reached_after_loop = True

    with pytest.raises(funcs.Boom):
        trio.run(main)
    assert not reached_after_loop


def test_source_errors_are_noted() -> None:
    def gen():
        yield 1
        raise funcs.Boom("source broke")

    with pytest.raises(funcs.Boom) as info:
        snake.from_iterable(gen()).to_list()
    assert stage_note(info.value).startswith("snake: raised in stage #0 from_iterable")


def test_worker_crash_is_a_clear_error_not_a_hang() -> None:
    with assert_no_leaks(grace=2.0):
        stream = snake.from_iterable(range(10)).par_map(funcs.die_on_3, workers=2)
        t0 = time.monotonic()
        with pytest.raises(snake.WorkerCrashedError, match=r"#1 par_map\(die_on_3, workers=2\)") as info:
            stream.to_list()
        assert time.monotonic() - t0 < 5
        assert "3" in str(info.value)


def test_unpicklable_item_names_the_stage() -> None:
    import threading

    stream = snake.from_iterable([threading.Lock()]).par_map(funcs.inc, workers=1)
    with pytest.raises(Exception) as info:
        stream.to_list()
    assert any("could not exchange item indices 0..0" in n for n in notes(info.value))


def test_keyboard_interrupt_in_sync_loop_stops_thread_and_workers() -> None:
    with assert_no_leaks(grace=2.0):
        stream = snake.from_iterable([0.01] * 10**6).par_map(funcs.sleep_then_return, workers=2)
        with pytest.raises(KeyboardInterrupt):
            for i, _ in enumerate(stream):
                if i == 5:
                    raise KeyboardInterrupt


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    import funcs, snake

    if __name__ == "__main__":
        stream = snake.from_iterable([0.05] * 10**6).par_map(funcs.sleep_then_return, workers=2)
        try:
            for i, x in enumerate(stream):
                if i == 2:
                    print("ready", flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise SystemExit(3)
    """
)


def test_real_ctrl_c_during_for_loop(tmp_path: object) -> None:
    import psutil

    script = os.path.join(str(tmp_path), "ctrl_c.py")
    with open(script, "w") as f:
        f.write(CTRL_C_SCRIPT.format(tests=str(TESTS)))
    proc = subprocess.Popen([sys.executable, script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the pipeline should have worker processes"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    assert time.monotonic() - t0 < 5
    assert "interrupted" in out
    assert proc.returncode == 3
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, alive
