"""par_map(backend="ray") on a real local Ray cluster: the guarantees of the process
backend (order, errors, crashes, retries, timeouts, cancellation, statistics), and
nothing of snake's left alive afterwards, checked with Ray's state API.

One Ray session serves the whole module (starting Ray takes seconds); every test
checks for leaks against it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
import ray
import ray_funcs
import trio
from conftest import TESTS
from ray.util.state import list_actors

import snake
from snake.testing import assert_no_leaks


def snake_actors() -> list[Any]:
    """snake's actors that are not dead (alive, starting, or waiting for resources)."""
    return list_actors(
        address=ray.get_runtime_context().gcs_address,
        filters=[("class_name", "=", "SnakeWorker"), ("state", "!=", "DEAD")],
    )


def wait_until_no_snake_actor(within: float = 5.0) -> float:
    """Seconds until Ray's state API shows no snake actor; fails after ``within``."""
    t0 = time.monotonic()
    while snake_actors():
        assert time.monotonic() - t0 < within, f"snake actors still alive after {within} s: {snake_actors()}"
        time.sleep(0.1)
    return time.monotonic() - t0


@pytest.fixture(scope="module", autouse=True)
def ray_session() -> Iterator[None]:
    """A local Ray cluster for the module, whose workers can import ``ray_funcs``."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), old) if p)
    try:
        # A GPU (Ray's own accounting: no device needed) and a custom resource, for ray_options.
        ray.init(
            num_cpus=4, num_gpus=1, resources={"decoder": 2}, log_to_driver=False, logging_level=logging.WARNING
        )
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    # Whatever Ray starts once (its client of the state API, the actor class) starts now,
    # before any test's leak check.
    assert snake.from_iterable(range(4)).par_map(ray_funcs.square, workers=2, backend="ray").to_list() == [0, 1, 4, 9]
    wait_until_no_snake_actor()
    yield
    ray.shutdown()


# -- results ------------------------------------------------------------------------------


@pytest.mark.parametrize("ordered", [True, False])
def test_every_item_once_in_order_on_both_actors(ordered: bool, no_leaks: None) -> None:
    stream = snake.from_iterable(range(60)).par_map(ray_funcs.where, workers=2, backend="ray", ordered=ordered)
    out = stream.to_list()
    items = [x for x, _, _ in out]
    assert items == list(range(60)) if ordered else sorted(items) == list(range(60))
    assert len({pid for _, pid, _ in out}) == 2
    assert os.getpid() not in {pid for _, pid, _ in out}
    wait_until_no_snake_actor()


async def test_open_and_statistics_in_trio(no_leaks: None) -> None:
    stream = snake.from_iterable(range(100)).par_map(ray_funcs.square, workers=2, backend="ray")
    async with stream.open() as items:
        got = [x async for x in items]
        stats = items.statistics().stage(1)
    assert got == [x * x for x in range(100)]
    assert (stats.items_in, stats.items_out, stats.workers_lost, stats.retries) == (100, 100, 0, 0)
    assert repr(stream).endswith("par_map(square, workers=2, backend='ray')")


def test_large_arrays_arrive_zero_copy_from_the_object_store(no_leaks: None) -> None:
    """Each 1 MiB array is a read-only view of Ray's shared-memory object store (no
    copy into this process's heap); batch() copies it once, into its batch."""
    with snake.from_iterable(range(8)).par_map(ray_funcs.image, workers=2, backend="ray").open_sync() as items:
        arrays = list(items)
    with open("/proc/self/maps") as f:
        maps = [line.split() for line in f]
    plasma = [[int(a, 16) for a in m[0].split("-")] for m in maps if len(m) > 5 and "/plasma" in m[5]]
    assert plasma, "Ray's object store is not mapped into this process"
    for i, a in enumerate(arrays):
        assert a.shape == (512, 2048) and a[0, 0] == i
        assert not a.flags.writeable  # a view of an immutable Ray object
        address = a.__array_interface__["data"][0]
        assert any(lo <= address < hi for lo, hi in plasma)
    del arrays, items
    batches = snake.from_iterable(range(20)).par_map(ray_funcs.image, workers=2, backend="ray").batch(8).to_list()
    assert [b.shape for b in batches] == [(8, 512, 2048), (8, 512, 2048), (4, 512, 2048)]
    assert [int(b[i, 0, 0]) for b in batches for i in range(len(b))] == list(range(20))
    assert batches[0].flags.writeable  # a batch is snake's own buffer


def test_lambdas_work_since_ray_pickles_by_value(no_leaks: None) -> None:
    offset = 10
    assert snake.from_iterable(range(5)).par_map(lambda x: x + offset, workers=1, backend="ray").to_list() == [
        10,
        11,
        12,
        13,
        14,
    ]


def test_the_function_is_set_up_once_per_actor(no_leaks: None) -> None:
    """The function is sent to each actor once and kept: a callable's state (a model it
    loaded, say) survives from one unit to the next."""
    out = snake.from_iterable(range(200)).par_map(ray_funcs.Model(), workers=2, backend="ray").to_list()
    assert [x for x, _, _ in out] == list(range(200))
    setups = {setup for _, setup, _ in out}
    assert len(setups) == len({pid for pid, _ in setups})  # one per actor
    assert max(calls for _, _, calls in out) > 50  # the same object served many units


def test_ray_options_reach_the_actors(no_leaks: None) -> None:
    opts = {
        "num_cpus": 0.5,
        "num_gpus": 0.5,
        "resources": {"decoder": 1},
        "runtime_env": {"env_vars": {"SNAKE_RAY_TEST": "yes"}},
    }
    stream = snake.from_iterable(range(4)).par_map(ray_funcs.granted, workers=2, backend="ray", ray_options=opts)
    assert "ray_options={'num_cpus': 0.5, 'num_gpus': 0.5, 'resources': {'decoder': 1}, " in repr(stream)
    for env, resources, gpus in stream.to_list():
        assert env == "yes"
        assert resources == {"CPU": 0.5, "GPU": 0.5, "decoder": 1.0}
        assert len(gpus) == 1


# -- errors -------------------------------------------------------------------------------


def test_a_user_exception_keeps_its_type_and_gets_the_note(no_leaks: None) -> None:
    with pytest.raises(ray_funcs.Boom, match="item 7 is bad") as info:
        snake.from_iterable(range(20)).par_map(ray_funcs.boom_on_7, workers=2, backend="ray").to_list()
    notes = info.value.__notes__
    assert "snake: raised in stage #1 par_map(boom_on_7, workers=2, backend='ray') on item index 7" in notes
    assert any("in boom_on_7" in n for n in notes)  # the actor's traceback
    wait_until_no_snake_actor()


def test_on_error_skip_drops_the_item_and_counts_it(no_leaks: None) -> None:
    stream = snake.from_iterable(range(20)).par_map(ray_funcs.boom_on_7, workers=2, backend="ray").on_error("skip")
    with stream.open_sync() as items:
        assert list(items) == [x for x in range(20) if x != 7]
        assert items.statistics().stage(1).errors_skipped == 1


@pytest.mark.parametrize("fn", [ray_funcs.die_on_3, ray_funcs.sigkill_on_3, ray_funcs.ray_kill_on_3])
def test_a_dying_actor_is_worker_crashed_error_naming_the_item(fn: Any, no_leaks: None) -> None:
    t0 = time.monotonic()
    with pytest.raises(snake.WorkerCrashedError) as info:
        snake.from_iterable(range(20)).par_map(fn, workers=2, backend="ray").to_list()
    assert time.monotonic() - t0 < 10
    message = str(info.value)
    assert message.startswith(
        f"a Ray actor of stage #1 par_map({fn.__name__}, workers=2, backend='ray') died while running item index 3"
    )
    assert "(the actor is dead because" in message
    assert isinstance(info.value.__cause__, Exception)
    wait_until_no_snake_actor()


def test_retries_run_the_item_again_on_a_fresh_actor(tmp_path: Any, no_leaks: None) -> None:
    items = [(str(tmp_path), i) for i in range(30)]
    stream = snake.from_iterable(items).par_map(ray_funcs.crash_once, workers=2, backend="ray", retries=1)
    with stream.open_sync() as out:
        got = list(out)
        stats = out.statistics().stage(1)
    assert [i for i, _ in got] == list(range(30))
    assert len({pid for _, pid in got}) >= 3  # items 2, 7, ... ran again on new actors
    assert stats.workers_lost >= 6
    assert stats.retries >= 6
    assert stats.items_out == 30
    wait_until_no_snake_actor()


def test_a_stuck_item_times_out_and_its_actor_is_killed(no_leaks: None) -> None:
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        snake.from_iterable(range(10)).par_map(ray_funcs.sleep_on_3, workers=2, backend="ray", timeout=1).to_list()
    assert time.monotonic() - t0 < 10
    assert "item index 3 took longer than timeout=1.0s; its Ray actor was killed" in str(info.value)
    wait_until_no_snake_actor()


def test_a_timeout_under_skip_drops_the_item_and_goes_on(no_leaks: None) -> None:
    stream = snake.from_iterable(range(10)).par_map(ray_funcs.sleep_on_3, workers=2, backend="ray", timeout=1)
    with stream.on_error("skip").open_sync() as items:
        assert list(items) == [x for x in range(10) if x != 3]
        stats = items.statistics().stage(1)
    assert (stats.timeouts, stats.workers_lost, stats.errors_skipped) == (1, 1, 1)


def test_a_stall_warning_names_the_item_and_shows_the_actor_stack(caplog: pytest.LogCaptureFixture) -> None:
    stream = snake.from_iterable([0.0, 0.0, 2.0, 0.0]).par_map(
        ray_funcs.sleep_then_return, workers=1, backend="ray", stall_timeout=0.5
    )
    with assert_no_leaks(), caplog.at_level(logging.WARNING, logger="snake"):
        assert stream.to_list() == [0.0, 0.0, 2.0, 0.0]
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "snake")
    assert "item index 2 has been running for" in text
    assert "Busy ray workers:" in text
    assert "Ray actor " in text and "in sleep_then_return" in text


async def test_actors_ray_cannot_place_make_a_stall_warning(caplog: pytest.LogCaptureFixture, no_leaks: None) -> None:
    stream = snake.from_iterable(range(3)).par_map(
        ray_funcs.square, workers=1, backend="ray", ray_options={"resources": {"no_such_resource": 1}}, stall_timeout=0.5
    )
    with caplog.at_level(logging.WARNING, logger="snake"), trio.move_on_after(2) as scope:
        await stream.collect()
    assert scope.cancelled_caught
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "snake")
    assert "item index 0 has been running for" in text
    assert "(waiting for a Ray actor; 1 not yet placed by Ray: do the cluster's free resources cover ray_options?)" in text
    assert await trio.to_thread.run_sync(wait_until_no_snake_actor) < 5  # the waiting actor is gone too


def test_a_function_the_actors_cannot_import_is_a_clear_error(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, no_leaks: None
) -> None:
    """A function of a module that only this process can import (Ray pickles it by
    reference): its own ImportError, with a note saying what to do, once."""
    (tmp_path / "snake_only_here.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "snake_only_here", raising=False)
    import snake_only_here  # type: ignore[import-not-found]

    with pytest.raises(ModuleNotFoundError, match="snake_only_here") as info:
        snake.from_iterable(range(3)).par_map(snake_only_here.double, workers=1, backend="ray").to_list()
    notes = info.value.__notes__
    assert notes[-1].startswith(
        "snake: stage #1 par_map(double, workers=1, backend='ray'): a Ray actor could not load the function"
    )
    assert notes[-1].endswith("must be importable on every node (see runtime_env)")
    assert sum("could not load the function" in n for n in notes) == 1
    assert "snake: traceback in the worker process:" in notes[0]
    wait_until_no_snake_actor()


def test_an_unpicklable_result_names_the_items(no_leaks: None) -> None:
    with pytest.raises(Exception) as info:
        snake.from_iterable(range(3)).par_map(ray_funcs.unpicklable, workers=1, backend="ray").to_list()
    assert any("could not exchange item indices 0..0 with a Ray actor" in n for n in info.value.__notes__)


# -- bounded, cancelled, released ---------------------------------------------------------


def test_a_slow_consumer_bounds_the_work_in_flight(tmp_path: Any, no_leaks: None) -> None:
    items = [(str(tmp_path), i) for i in range(2000)]
    with snake.from_iterable(items).par_map(ray_funcs.record, workers=2, backend="ray").open_sync() as out:
        next(iter(out))
        time.sleep(1.5)  # the consumer stalls: the actors run ahead only a few units
        started = len(os.listdir(tmp_path))
    assert started < 200, started
    wait_until_no_snake_actor()


def test_break_releases_the_actors_within_seconds(no_leaks: None) -> None:
    stream = snake.from_iterable([0.05] * 10_000).par_map(ray_funcs.sleep_then_return, workers=2, backend="ray")
    for i, _ in enumerate(stream):
        if i == 5:
            break
    assert wait_until_no_snake_actor() < 5


async def test_a_cancel_scope_releases_the_actors(no_leaks: None) -> None:
    stream = snake.from_iterable([0.05] * 10_000).par_map(ray_funcs.sleep_then_return, workers=2, backend="ray")
    with trio.move_on_after(3) as scope:
        async with stream.open() as items:
            async for _ in items:
                pass
    assert scope.cancelled_caught
    assert await trio.to_thread.run_sync(wait_until_no_snake_actor) < 5


def test_an_error_elsewhere_releases_the_actors(no_leaks: None) -> None:
    stream = (
        snake.from_iterable([0.05] * 10_000)
        .par_map(ray_funcs.sleep_then_return, workers=2, backend="ray")
        .enumerate()
        .map(ray_funcs.boom_on_7_of_pair)
    )
    with pytest.raises(ray_funcs.Boom):
        stream.to_list()
    assert wait_until_no_snake_actor() < 5


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import signal, sys, time
    sys.path.insert(0, {tests!r})
    import ray_funcs, snake

    if __name__ == "__main__":
        # a shell's background jobs start with SIGINT ignored: Ctrl-C must reach Python
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import ray
        assert not ray.is_initialized()  # snake joins the cluster RAY_ADDRESS names
        stream = snake.from_iterable([0.05] * 10**6).par_map(ray_funcs.sleep_then_return, workers=2, backend="ray")
        try:
            for i, x in enumerate(stream):
                if i == 2:
                    print("ready", ray.is_initialized(), flush=True)
        except KeyboardInterrupt:
            from ray.util.state import list_actors
            t0 = time.monotonic()
            here = ray.get_runtime_context().gcs_address
            while list_actors(address=here, filters=[("class_name", "=", "SnakeWorker"), ("state", "!=", "DEAD")]):
                time.sleep(0.1)
                assert time.monotonic() - t0 < 5
            print("interrupted; no snake actor left", flush=True)
            raise SystemExit(3)
    """
)


def test_ctrl_c_cancels_the_stage_and_releases_its_actors(tmp_path: Any, no_leaks: None) -> None:
    """A real Ctrl-C in a program whose stage runs on this module's cluster: the
    program gets KeyboardInterrupt and its actors are gone within 5 s."""
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT.format(tests=str(TESTS)))
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready True"
        proc.send_signal(2)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert "interrupted; no snake actor left" in out
    assert proc.returncode == 3


RAY_ADDRESS_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import ray, ray_funcs, snake

    out = snake.from_iterable(range(4)).par_map(ray_funcs.where, workers=2, backend="ray").to_list()
    print([x for x, _, _ in out], ray.get_runtime_context().gcs_address)
    """
)


def test_with_ray_address_set_snake_joins_that_cluster(no_leaks: None) -> None:
    here = ray.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_ADDRESS": here}
    code = RAY_ADDRESS_SCRIPT.format(tests=str(TESTS))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == f"[0, 1, 2, 3] {here}"
    wait_until_no_snake_actor()


# -- a pool of actors ---------------------------------------------------------------------


def test_a_ray_pool_keeps_its_actors_across_runs_and_epochs(no_leaks: None) -> None:
    with snake.WorkerPool(2, backend="ray") as pool:
        assert repr(pool) == "WorkerPool(workers=2, backend='ray') <open>"
        stream = snake.from_iterable(range(40)).par_map(ray_funcs.where, backend="ray", pool=pool)
        first = {pid for _, pid, _ in stream.to_list()}
        again = {pid for _, pid, _ in stream.repeat(2).to_list()}
        assert len(first) == 2 and again == first
        stats = pool.statistics()
        assert (stats.idle_workers, stats.running_workers, stats.pids) == (2, 0, frozenset(first))
        assert len(snake_actors()) == 2
    assert pool.statistics().idle_workers == 0
    wait_until_no_snake_actor()


def test_a_stage_cancelled_on_a_ray_pool_gets_its_actor_replaced(no_leaks: None) -> None:
    with snake.WorkerPool(1, backend="ray") as pool:
        slow = snake.from_iterable([5.0]).par_map(ray_funcs.sleep_then_return, backend="ray", pool=pool)
        before = set(snake.from_iterable(range(3)).par_map(ray_funcs.pid, backend="ray", pool=pool).to_list())

        async def cancel_it() -> None:
            with trio.move_on_after(0.5):
                await slow.collect()

        trio.run(cancel_it)
        after = set(snake.from_iterable(range(3)).par_map(ray_funcs.pid, backend="ray", pool=pool).to_list())
        assert len(before) == len(after) == 1 and before != after
    wait_until_no_snake_actor()


def test_ray_pool_misuse_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"backend='process' does not match pool=WorkerPool\(workers=2, backend='ray'\)"):
        snake.from_iterable(range(3)).par_map(ray_funcs.pid, pool=snake.WorkerPool(2, backend="ray"))
    with pytest.raises(ValueError, match=r"backend='ray' does not match pool=WorkerPool\(workers=2, worker_type='auto'\)"):
        snake.from_iterable(range(3)).par_map(ray_funcs.pid, backend="ray", pool=snake.WorkerPool(2))
    with pytest.raises(ValueError, match="ray_options are set by the pool"):
        snake.from_iterable(range(3)).par_map(
            ray_funcs.pid, backend="ray", pool=snake.WorkerPool(2, backend="ray"), ray_options={"num_cpus": 1}
        )
    with pytest.raises(ValueError, match=r"WorkerPool: ray_options=\{'num_cpus': 1\} only applies to backend=\"ray\""):
        snake.WorkerPool(2, ray_options={"num_cpus": 1})
    with pytest.raises(ValueError, match=r"WorkerPool: worker_type='spawn' only applies to backend=\"process\""):
        snake.WorkerPool(2, backend="ray", worker_type="spawn")
    with pytest.raises(ValueError, match=r"WorkerPool: backend='dask' must be one of \('process', 'ray'\)"):
        snake.WorkerPool(2, backend="dask")  # type: ignore[arg-type]


# -- build-time checks --------------------------------------------------------------------


def test_arguments_are_checked_at_the_call() -> None:
    source = snake.from_iterable(range(3))
    with pytest.raises(TypeError, match=r"par_map: ray_options=\['num_cpus'\] must be a dict of Ray actor options"):
        source.par_map(ray_funcs.square, backend="ray", ray_options=["num_cpus"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"par_map: ray_options=\{'max_restarts': 3\}: 'max_restarts' is set by snake"):
        source.par_map(ray_funcs.square, backend="ray", ray_options={"max_restarts": 3})
    with pytest.raises(ValueError, match=r"par_map: ray_options=\{'num_cpu': 1\}: Invalid option keyword num_cpu"):
        source.par_map(ray_funcs.square, backend="ray", ray_options={"num_cpu": 1})
    with pytest.raises(ValueError, match=r"par_map: ray_options=\{'num_cpus': 1\} only applies to backend=\"ray\""):
        source.par_map(ray_funcs.square, ray_options={"num_cpus": 1})
    with pytest.raises(ValueError, match=r"par_map: worker_type='spawn' only applies to backend=\"process\""):
        source.par_map(ray_funcs.square, backend="ray", worker_type="spawn")
    with pytest.raises(TypeError, match=r'par_map\(backend="ray"\) needs a function that Ray can pickle; '):
        source.par_map(ray_funcs.Unpicklable(), backend="ray")
    with pytest.raises(ValueError, match=r"par_map: backend='dask' must be one of \('process', 'thread', 'ray'\)"):
        source.par_map(ray_funcs.square, backend="dask")  # type: ignore[arg-type]


WITHOUT_RAY = textwrap.dedent(
    """
    import sys
    sys.modules["ray"] = None  # as if Ray were not installed
    import snake
    stream = snake.from_iterable(range(3)).par_map(abs, workers=2)
    assert "ray" not in sys.modules or sys.modules["ray"] is None
    for build in (
        lambda: snake.from_iterable(range(3)).par_map(abs, backend="ray"),
        lambda: snake.WorkerPool(2, backend="ray"),
    ):
        try:
            build()
        except ImportError as exc:
            print(exc)
    """
)


def test_without_ray_the_build_says_how_to_install_it() -> None:
    out = subprocess.run([sys.executable, "-c", WITHOUT_RAY], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "par_map(backend=\"ray\") needs Ray, an optional dependency of snake: pip install 'snake[ray]' (or pip install ray)",
        "WorkerPool(backend=\"ray\") needs Ray, an optional dependency of snake: pip install 'snake[ray]' (or pip install ray)",
    ]


def test_import_snake_never_imports_ray() -> None:
    code = "import sys, snake; snake.from_iterable(range(3)).par_map(abs).to_list(); print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# -- training ranks -----------------------------------------------------------------------


def test_two_ranks_see_every_item_exactly_once(no_leaks: None) -> None:
    """Each rank (a Ray task here, a Ray Train worker in practice) builds the same
    stream and keeps its shard: together they see every item once."""
    task = ray.remote(ray_funcs.shard_rank)
    ranks = ray.get([task.remote(rank, 2) for rank in range(2)])
    assert sorted(ranks[0] + ranks[1]) == list(range(103))
    assert len(ranks[0]) == 52 and len(ranks[1]) == 51
