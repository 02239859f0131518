"""snake's worker processes: warm reuse, stall warnings, parent death, release
without the garbage collector, and code that worker processes cannot import."""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import funcs
import psutil
import pytest
import trio
from conftest import REPO

import snake
from snake._workers import procs
from snake._workers import shm as _shm

ROOT = REPO


def run_child(code: str, *, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter running ``code`` as a script file (so it has a main module)."""
    script = Path(os.environ.get("TMPDIR", "/tmp")) / f"snake_workers_{os.getpid()}_{time.monotonic_ns()}.py"
    script.write_text(textwrap.dedent(code))
    try:
        return subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT / "tests",
            env={**os.environ, "PYTHONPATH": str(ROOT / "tests"), **(env or {})},
        )
    finally:
        script.unlink()


def test_later_pipelines_reuse_the_cached_workers() -> None:
    stream = snake.from_iterable(range(40)).par_map(funcs.pid_of, workers=2)
    first = set(stream.to_list())
    kept = procs.kept_pids()
    assert first <= kept  # back in the cache, idle
    # Under load one worker may have served the whole first run: the later runs use
    # the cached ones, whichever served.
    again = set(stream.to_list()) | set(trio.run(stream.collect))
    assert again <= kept


def test_a_stall_is_logged_with_the_stage_the_item_and_the_worker_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = snake.from_iterable(range(6)).par_map(funcs.stall_on_3, workers=2, stall_timeout=0.5)
    assert "stall_timeout=0.5" in repr(stream)

    async def main() -> snake.PipelineStatistics:
        async with stream.open() as items:
            assert [x async for x in items] == list(range(6))
            return items.statistics()

    with caplog.at_level(logging.WARNING, logger="snake"):
        stats = trio.run(main)
    warnings = [r.getMessage() for r in caplog.records if r.name == "snake" and "no progress" in r.getMessage()]
    assert warnings, caplog.records
    text = warnings[0]
    assert "stage #1 par_map(stall_on_3, workers=2, stall_timeout=0.5)" in text
    assert "item index 3 has been running for" in text
    assert "worker process" in text and "in stall_on_3" in text  # the worker's Python stack
    assert stats.stage(1).stalls == len(warnings) >= 1


def test_a_stalled_thread_shows_its_stack(caplog: pytest.LogCaptureFixture) -> None:
    stream = snake.from_iterable(range(6)).par_map(
        funcs.stall_on_3, workers=2, backend="thread", stall_timeout=0.5
    )
    with caplog.at_level(logging.WARNING, logger="snake"):
        assert stream.to_list() == list(range(6))
    text = next(r.getMessage() for r in caplog.records if "no progress" in r.getMessage())
    assert "item index 3" in text and "stall_on_3" in text and "Busy thread workers" in text


async def _sleepy(x: int) -> int:
    """Item 3 waits 10 s (on trio's clock)."""
    if x == 3:
        await trio.sleep(10)
    return x


async def test_a_stalled_par_then_item_is_logged_with_its_task_stack(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    stream = snake.from_iterable(range(6)).par_then(_sleepy, limit=4, stall_timeout=2.0)
    assert "stall_timeout=2.0" in repr(stream)
    with caplog.at_level(logging.WARNING, logger="snake"):
        async with stream.open() as items:
            assert [x async for x in items] == list(range(6))
            stats = items.statistics()
            report = items.report()
    warnings = [r.getMessage() for r in caplog.records if r.name == "snake" and "no progress" in r.getMessage()]
    # 10 s stuck, a warning every 2 s once the item has run 2 s: 4 or 5 (sampled every 0.5 s)
    assert 4 <= len(warnings) <= 5, warnings
    text = warnings[0]
    assert "stage #1 par_then(_sleepy, limit=4, stall_timeout=2.0)" in text
    assert "item index 3 has been running for" in text and "Busy trio tasks" in text
    assert "in _sleepy" in text and "await trio.sleep(10)" in text  # where the task waits
    assert stats.stage(1).stalls == len(warnings)
    assert f"stalled: #1 par_then(_sleepy, limit=4, stall_timeout=2.0): {len(warnings)} stall warning(s)" in report


async def test_then_takes_stall_timeout_and_none_turns_it_off(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    with caplog.at_level(logging.WARNING, logger="snake"):
        assert await snake.from_iterable(range(5)).then(_sleepy, stall_timeout=None).collect() == list(range(5))
        assert not caplog.records
        assert await snake.from_iterable(range(5)).then(_sleepy).collect() == list(range(5))
        assert not caplog.records  # 10 s is below the default of 60 s
        assert await snake.from_iterable(range(5)).then(_sleepy, stall_timeout=4).collect() == list(range(5))
    assert [r for r in caplog.records if "stage #1 then(_sleepy, stall_timeout=4.0)" in r.getMessage()]


def test_stall_timeout_none_turns_the_warning_off(caplog: pytest.LogCaptureFixture) -> None:
    stream = snake.from_iterable(range(5)).par_map(funcs.stall_on_3, workers=2, stall_timeout=None)
    with caplog.at_level(logging.WARNING, logger="snake"):
        assert stream.to_list() == list(range(5))
    assert not [r for r in caplog.records if "no progress" in r.getMessage()]


@pytest.mark.parametrize("bad", [0, -1.0, "5", True])
def test_a_bad_stall_timeout_is_refused_quoting_it(bad: object) -> None:
    with pytest.raises((ValueError, TypeError), match=f"stall_timeout={bad!r}"):
        snake.from_iterable(range(3)).par_map(funcs.inc, stall_timeout=bad)  # type: ignore[arg-type]
    with pytest.raises((ValueError, TypeError), match=f"par_then: stall_timeout={bad!r}"):
        snake.from_iterable(range(3)).par_then(_sleepy, stall_timeout=bad)  # type: ignore[arg-type]
    with pytest.raises((ValueError, TypeError), match=f"then: stall_timeout={bad!r}"):
        snake.from_iterable(range(3)).then(_sleepy, stall_timeout=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("worker_type", ["auto", "spawn"])
def test_workers_die_with_the_main_process_even_when_stuck(worker_type: str) -> None:
    # The main process is killed outright (no cleanup runs) while both workers are stuck.
    code = f"""
    import os, sys, time, snake, funcs
    from snake._workers import procs
    if __name__ == "__main__":
        stream = snake.from_iterable(range(10)).par_map(funcs.busy_forever, workers=2, worker_type={worker_type!r})
        with stream.open_sync() as items:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 30:
                kids = [p for p in __import__("psutil").Process().children(recursive=True)
                        if p.name() == "snake-worker"]
                if len(kids) == 2 and all(p.status() != "zombie" for p in kids):
                    break
                time.sleep(0.05)
            print(" ".join(str(p.pid) for p in kids), procs.launcher_pid(), flush=True)
            os.kill(os.getpid(), 9)
    """
    proc = run_child(code)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 3, proc.stdout
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.05)
    assert not alive, f"worker processes {alive} outlived their main process"


def test_idle_workers_exit_after_the_idle_timeout_and_new_ones_start() -> None:
    code = """
    import time, psutil, snake, funcs
    from snake._workers import procs
    if __name__ == "__main__":
        stream = snake.from_iterable(range(8)).par_map(funcs.pid_of, workers=2)
        first = set(stream.to_list())
        time.sleep(2.5)
        gone = not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in first)
        second = set(stream.to_list())
        print(gone, bool(second) and not (second & first))
    """
    proc = run_child(code, env={"SNAKE_WORKER_IDLE_TIMEOUT": "0.5"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]


def test_the_shm_cache_bound_and_switch() -> None:
    code = """
    import os, snake, funcs
    from snake._workers import shm

    if __name__ == "__main__":
        for _ in range(3):
            snake.from_iterable(range(16)).par_map(funcs.image, workers=2).batch(8).to_list()
        print(len(shm.cache.names()), len([n for n in os.listdir("/dev/shm") if n.startswith(f"snake-{os.getpid()}-")]))
    """
    for env, expect_kept in (({"SNAKE_SHM_CACHE_BYTES": "0"}, False), ({}, True)):
        proc = run_child(code, env=env)
        assert proc.returncode == 0, proc.stderr
        kept, files = map(int, proc.stdout.split())
        assert kept == files and (kept > 0) == expect_kept


def test_building_a_process_stage_starts_the_launcher_in_the_background() -> None:
    code = """
    import snake, funcs
    from snake._workers import procs

    if __name__ == "__main__":
        snake.from_iterable(range(4)).par_map(funcs.inc, backend="thread")
        snake.from_iterable(range(4)).par_map(funcs.inc, worker_type="fork")
        print(procs.launcher_pid() is None)
        stream = snake.from_iterable(range(4)).par_map(funcs.inc, workers=2)
        pid = procs.launcher_pid()
        print(pid is not None)
        print(stream.to_list() == [1, 2, 3, 4], procs.launcher_pid() == pid)
    """
    proc = run_child(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "True", "True"]


def test_workers_import_numpy_only_when_a_function_needs_it(tmp_path: Path) -> None:
    # The launcher forks before importing NumPy: a worker for a pure-Python function never
    # imports it; one whose function imports it inside still sends arrays through /dev/shm.
    (tmp_path / "light.py").write_text(textwrap.dedent("""
        import sys

        def numpy_loaded(i):
            return "numpy" in sys.modules

        def big(i):
            import numpy as np
            return np.full((256, 256), i, dtype=np.float64)
    """))
    code = f"""
    import sys
    sys.path.insert(0, {str(tmp_path)!r})
    import snake, light

    if __name__ == "__main__":
        print(set(snake.from_iterable(range(8)).par_map(light.numpy_loaded, workers=2).to_list()))
        arrays = snake.from_iterable(range(8)).par_map(light.big, workers=2).to_list()
        print([int(a[0, 0]) for a in arrays], all(not a.flags.owndata for a in arrays))  # views of shared memory
    """
    proc = run_child(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["{False}", "[0, 1, 2, 3, 4, 5, 6, 7] True"]


def test_workers_see_the_environment_of_the_first_run_not_of_the_build() -> None:
    # The launcher starts when the stage is built; variables set after that still reach
    # the workers it forks.
    code = """
    import os, snake, funcs

    if __name__ == "__main__":
        stream = snake.from_iterable(["SNAKE_TEST_LATE"]).par_map(funcs.getenv, workers=1)
        os.environ["SNAKE_TEST_LATE"] = "set after the build"
        print(stream.to_list())
    """
    proc = run_child(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['set after the build']"


def test_a_bad_shm_cache_size_is_refused_where_par_map_is_called() -> None:
    code = """
    import snake, funcs

    if __name__ == "__main__":
        try:
            snake.from_iterable(range(3)).par_map(funcs.inc)
        except ValueError as exc:
            print(exc)
    """
    proc = run_child(code, env={"SNAKE_SHM_CACHE_BYTES": "1G"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "SNAKE_SHM_CACHE_BYTES='1G' must be a whole number of bytes >= 0 (0 turns the cache off)"


def test_runs_release_segments_and_mappings_with_the_gc_disabled() -> None:
    code = """
    import gc, os, numpy as np, snake, funcs
    from snake._workers import procs, shm

    def mapped(pid):
        with open(f"/proc/{pid}/maps") as f:
            return sum("/dev/shm/snake-" in line for line in f)

    def fds():
        return len(os.listdir("/proc/self/fd"))

    if __name__ == "__main__":
        gc.disable()
        stream = snake.from_iterable(range(64)).par_map(funcs.make_array, workers=2).batch(4)
        for b in stream:
            pass
        del b
        base = fds()
        for _ in range(20):
            for b in stream:
                pass
        del b
        for _ in range(20):
            for i, b in enumerate(stream):
                if i == 3:
                    break
        del b
        plain = snake.from_iterable(range(64)).par_map(funcs.make_array, workers=2)
        for _ in range(10):
            for b in plain:
                pass
        del b
        def left():
            return [n for n in os.listdir("/dev/shm") if n.startswith(f"snake-{os.getpid()}-")]

        # What is left is the cache of free slabs and segments kept for the next run.
        kept = shm.cache.names()
        print(sorted(left()) == sorted(kept), len(kept), mapped(os.getpid()), fds() - base)
        shm.cache.clear()
        for x in snake.from_iterable(range(8)).par_map(funcs.inc, workers=2):
            pass  # the workers' calls unmap the files removed meanwhile
        workers = [mapped(p) for p in procs.kept_pids()]
        print(mapped(os.getpid()), sum(workers), len(left()), fds() - base)
    """
    proc = run_child(code, timeout=120)
    assert proc.returncode == 0, proc.stderr
    kept_line, final = proc.stdout.splitlines()
    same, n_kept, kept_maps, kept_fds = kept_line.split()
    assert same == "True" and 0 < int(n_kept) <= _shm.SHM_CACHE_FILES and int(kept_maps) == int(n_kept)
    assert int(kept_fds) <= int(n_kept) + 6  # a descriptor per kept mapping, and 2 more cached workers'
    main_maps, worker_maps, files, extra_fds = (int(x) for x in final.split())
    assert (main_maps, worker_maps, files) == (0, 0, 0)
    assert extra_fds <= 6  # at most: the fds of 2 more cached workers (3 each)


def test_a_function_from_an_interactive_main_is_refused_at_the_call() -> None:
    code = (
        "import snake\n"
        "def f(x): return x\n"
        "try:\n"
        "    snake.from_iterable(range(3)).par_map(f, workers=1)\n"
        "except ValueError as e:\n"
        "    print('refused:', e)\n"
        "print(snake.from_iterable(range(3)).par_map(f, workers=1, worker_type='fork').to_list())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "refused: par_map: f is defined in an interactive session" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "[0, 1, 2]"


def test_an_unguarded_script_gets_a_clear_error_not_a_recursion() -> None:
    code = """
    import snake, funcs
    print(snake.from_iterable(range(4)).par_map(funcs.inc, workers=1).to_list())
    """
    proc = run_child(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[1, 2, 3, 4]"
    assert 'under `if __name__ == "__main__":`' in proc.stderr


def test_a_cached_worker_follows_a_sys_path_extended_after_it_started(tmp_path: pathlib.Path) -> None:
    # The first pipeline starts workers; then the script puts a new folder on sys.path
    # and sends a function from a module there: the cached workers must find it.
    script = tmp_path / "main.py"
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "latemod.py").write_text("def triple(x):\n    return 3 * x\n")
    script.write_text(
        "import os, sys\n"
        "import snake\n"
        "if __name__ == '__main__':\n"
        "    print(snake.from_iterable(range(4)).par_map(abs, workers=2).to_list())\n"
        "    sys.path.insert(0, os.path.join(os.path.dirname(__file__), 'later'))\n"
        "    import latemod\n"
        "    print(snake.from_iterable(range(4)).par_map(latemod.triple, workers=2).to_list())\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[0, 1, 2, 3]\n[0, 3, 6, 9]\n"


def test_workers_run_with_snakes_environment_defaults() -> None:
    names = ["OMP_NUM_THREADS", "ARROW_DEFAULT_MEMORY_POOL", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]
    expected = [os.environ.get(n, v) for n, v in zip(names, ["1", "system", "33554432", "67108864"], strict=True)]
    assert snake.from_iterable(names).par_map(funcs.getenv, workers=1).to_list() == expected
