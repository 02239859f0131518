"""Chaos: generated pipelines x an injected fault x a way of consuming them.

Each example builds ``from_iterable(range(n))``, maybe a ``map`` and a ``filter``,
a process ``par_map`` whose function misbehaves on one generated item (a worker
that exits, kills itself, segfaults, raises or hangs) and returns numbers or 64 KiB
arrays (those come back through shared memory), maybe a thread ``par_map``
or a ``par_then`` after it and a ``batch``; and consumes it through ``open()``
under ``trio.run``, ``open_sync()``, or ``snake.aio.open()`` under ``asyncio.run``:
reading everything, breaking out, letting a deadline expire (trio's
``move_on_after``, ``asyncio.timeout``), or raising ``KeyboardInterrupt`` from the
loop's body. The garbage collector is off during the example, so nothing may rely
on it.

Every example checks the exact outcome (the exception type and the item its note
names, or the items: all of them, or the prefix read before stopping) and that
nothing is left behind (``snake.testing.assert_no_leaks``: threads, processes,
file descriptors, shared-memory files and mappings, with a 2 s grace).

Only combinations whose outcome does not depend on timing are generated: a fault
that fails the pipeline is read to the end (the failure may surface before any
given item), a deadline only expires on a hung item, and a break or an interrupt
comes either with no failing item or with a hung one that it is sure to precede.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import sys
import tempfile
from collections import Counter
from typing import Any

import attrs
import chaos_funcs as cf
import pytest
import trio
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

import snake
import snake.aio
from snake.testing import assert_no_leaks

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="faults and leak checks need Linux"
)

#: The fault, when it fails the pipeline, and the exception that comes out.
RAISES: dict[str, type[BaseException]] = {
    "exit": snake.WorkerCrashedError,
    "sigkill": snake.WorkerCrashedError,
    "segfault": snake.WorkerCrashedError,
    "raise": ValueError,
}
#: ``timeout`` of a par_map whose item hangs and is to time out.
HANG_TIMEOUT_S = 2.0  # generous: a loaded 2-core machine can take 0.5 s to start a big item
#: How long a deadline (``move_on_after``, ``asyncio.timeout``) gives a pipeline with a hung item.
DEADLINES_S = (0.2, 0.5)


def par_map_inputs(n: int, inline: tuple[str, ...]) -> list[int]:
    xs = list(range(n))
    for op in inline:
        xs = [cf.double_plus_one(x) for x in xs] if op == "map" else [x for x in xs if cf.not_div3(x)]
    return xs


@attrs.frozen(kw_only=True)
class Case:
    n: int
    #: Inline stages before the par_map, in order: "map" (2x + 1), "filter" (x % 3 != 0).
    inline: tuple[str, ...]
    workers: int
    ordered: bool
    retries: int
    #: One of chaos_funcs.KINDS.
    fault: str
    #: Index, among the par_map's input items, of the item the fault hits.
    at: int
    #: par_map's ``timeout`` (only with a hang that is to time out).
    timeout: float | None
    #: A stage after the par_map: "" (none), "thread" (par_map, thread backend), "then" (par_then).
    after: str
    #: ``batch(size, collate=None)`` at the end; 0: none.
    batch: int
    #: The par_map returns 64 KiB arrays, which come back through shared memory.
    big: bool
    #: "trio": open() under trio.run; "sync": open_sync(); "aio": snake.aio.open() under asyncio.run.
    consumer: str
    #: "all": read to the end; "break" or "interrupt" (KeyboardInterrupt) after ``stop`` items;
    #: "cancel": a deadline of ``deadline`` seconds around the block.
    action: str
    stop: int = 0
    deadline: float = 0.0

    # -- the reference ---------------------------------------------------------------
    def inputs(self) -> list[int]:
        """The items that reach the par_map."""
        return par_map_inputs(self.n, self.inline)

    def items(self) -> list[int]:
        """Every item out of the stages after the par_map, before batching (no fault)."""
        return [10 * x + (1 if self.after else 0) for x in self.inputs()]

    def stream(self, marker: str) -> snake.Stream[Any]:
        s: snake.Stream[Any] = snake.from_iterable(range(self.n))
        for op in self.inline:
            s = s.map(cf.double_plus_one) if op == "map" else s.filter(cf.not_div3)
        xs = self.inputs()
        fault = cf.Fault(self.fault, xs[self.at] if xs else -1, marker, self.big)
        s = s.par_map(
            functools.partial(cf.work, fault),
            workers=self.workers,
            ordered=self.ordered,
            retries=self.retries,
            timeout=self.timeout,
        )
        if self.after == "thread":
            s = s.par_map(cf.plus_one, workers=2, backend="thread", ordered=self.ordered)
        elif self.after == "then":
            s = s.par_then(cf.aplus_one, limit=4, ordered=self.ordered)
        if self.batch:
            s = s.batch(self.batch, collate=None)
        return s

    def fails(self) -> bool:
        """Whether the fault fires at all (a stage with no input runs nothing)."""
        return bool(self.inputs()) and self.fault != "none"

    def expected_error(self) -> type[BaseException] | None:
        if not self.fails():
            return None
        if self.fault in RAISES:
            return RAISES[self.fault]
        if self.fault == "exit_once":
            return snake.WorkerCrashedError if self.retries == 0 else None
        if self.fault == "hang" and self.timeout is not None:
            return TimeoutError
        return None


# -- generating cases ----------------------------------------------------------------------


#: (fault, how it ends), for every combination whose outcome does not depend on timing.
SCENARIOS = (
    ("none", "all"),
    ("none", "break"),
    ("none", "interrupt"),
    ("exit", "all"),
    ("sigkill", "all"),
    ("segfault", "all"),
    ("raise", "all"),
    ("exit_once", "all"),  # retries=0: it crashes; retries=1: every item comes out
    ("exit_once", "break"),  # retries=1
    ("exit_once", "interrupt"),  # retries=1
    ("hang", "timeout"),  # the stage's timeout: TimeoutError
    ("hang", "cancel"),  # a deadline around the block
    ("hang", "break"),  # after the first item, while the hung item runs
    ("hang", "interrupt"),
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    fault, way = draw(st.sampled_from(SCENARIOS))
    # KeyboardInterrupt from a loop body is for sync code and trio (asyncio.run handles it
    # in a way of its own); a deadline is a trio or an asyncio one.
    consumers = {"interrupt": ["trio", "sync"], "cancel": ["trio", "aio"]}.get(way, ["trio", "sync", "aio"])
    consumer = draw(st.sampled_from(consumers))
    stops = way in ("break", "interrupt")
    n = draw(st.integers(2 if fault == "hang" and stops else 1 if fault != "none" else 0, 60))
    inline = tuple(draw(st.lists(st.sampled_from(["map", "filter"]), max_size=2)))
    m = len(par_map_inputs(n, inline))
    if fault == "hang" and stops and m < 2 or fault != "none" and m < 1:
        inline = ()  # the fault must hit an item: keep them all
        m = n
    workers = draw(st.integers(1, 2))
    ordered = draw(st.booleans())
    after = draw(st.sampled_from(["", "thread", "then"]))
    batch = draw(st.sampled_from([0, 1, 3, 8]))
    big = draw(st.booleans())
    at = draw(st.integers(0, max(m - 1, 0)))
    retries = 0
    if fault in ("exit", "sigkill", "segfault") or (fault == "exit_once" and way == "all"):
        retries = draw(st.integers(0, 1))
    elif fault == "exit_once":
        retries = 1
    timeout: float | None = None
    action, stop, deadline = way, 0, 0.0
    if fault == "hang":
        if way == "timeout":
            action, timeout = "all", HANG_TIMEOUT_S
        elif way == "cancel":
            deadline = draw(st.sampled_from(DEADLINES_S))
        else:
            # The first unit of a par_map holds one item, so item 0 comes out while a
            # later one hangs; with no batch to fill, it is sure to arrive: stop after it.
            stop = 1
            at = draw(st.integers(1, m - 1))
            batch = draw(st.sampled_from([0, 1]))
    elif stops:
        # Every item comes out: stopping after any of them is deterministic.
        outputs = -(-m // batch) if batch else m
        if outputs:
            stop = draw(st.integers(1, outputs))
        else:
            action = "all"
    return Case(
        n=n,
        inline=inline,
        workers=workers,
        ordered=ordered,
        retries=retries,
        fault=fault,
        at=at,
        timeout=timeout,
        after=after,
        batch=batch,
        big=big,
        consumer=consumer,
        action=action,
        stop=stop,
        deadline=deadline,
    )


# -- consuming -------------------------------------------------------------------------------


@attrs.define
class Outcome:
    got: list[Any] = attrs.Factory(list)
    error: BaseException | None = None
    #: Whether the deadline expired (trio's scope caught its cancellation, or asyncio.timeout raised).
    cancelled: bool = False


def _take(case: Case, out: Outcome, x: Any) -> bool:
    """Record ``x``; whether to break out now (or raise KeyboardInterrupt)."""
    out.got.append(x)
    if case.action in ("break", "interrupt") and len(out.got) >= case.stop:
        if case.action == "interrupt":
            raise KeyboardInterrupt
        return True
    return False


def consume(case: Case, stream: snake.Stream[Any]) -> Outcome:
    out = Outcome()
    try:
        if case.consumer == "sync":
            with stream.open_sync() as items:
                for x in items:
                    if _take(case, out, x):
                        break
        elif case.consumer == "trio":

            async def main() -> None:
                deadline = case.deadline if case.action == "cancel" else float("inf")
                with trio.move_on_after(deadline) as scope:
                    async with stream.open() as items:
                        async for x in items:
                            if _take(case, out, x):
                                break
                out.cancelled = scope.cancelled_caught

            trio.run(main)
        else:

            async def amain() -> None:
                deadline = case.deadline if case.action == "cancel" else None
                try:
                    async with asyncio.timeout(deadline):
                        async with snake.aio.open(stream) as items:
                            async for x in items:
                                if _take(case, out, x):
                                    break
                except TimeoutError:
                    if case.action != "cancel":
                        raise
                    out.cancelled = True

            asyncio.run(amain())
    except BaseException as exc:  # KeyboardInterrupt included: it is checked below
        out.error = exc
    return out


# -- checking --------------------------------------------------------------------------------


def _batched(items: list[int], size: int) -> list[Any]:
    return [items[i : i + size] for i in range(0, len(items), size)] if size else items


def _flat(got: list[Any], batch: int) -> list[int]:
    return [cf.value(x) for x in ([x for b in got for x in b] if batch else got)]


def _values(got: list[Any], batch: int) -> list[Any]:
    """``got`` with arrays as the numbers they stand for."""
    return [[cf.value(x) for x in b] for b in got] if batch else [cf.value(x) for x in got]


def check(case: Case, out: Outcome) -> None:
    items = case.items()
    expected = _batched(items, case.batch)
    flat = _flat(out.got, case.batch)
    got = _values(out.got, case.batch)
    what = f"{case}\n  got {got!r}\n  error {out.error!r}"
    if case.big:
        arrays = [x for b in out.got for x in b] if case.batch else out.got
        assert all(len(a) == cf.BIG for a in arrays), f"an array of the wrong size: {what}"
    # Whatever came out are items of the reference, each at most once, and (ordered) its prefix.
    assert not Counter(flat) - Counter(items), f"items that are not the reference's: {what}"
    if case.ordered:
        assert got == expected[: len(got)], f"not a prefix of {expected}: {what}"
    if case.batch and out.got:
        assert all(len(b) == case.batch for b in out.got[:-1]), f"a short batch before the last: {what}"

    want = case.expected_error()
    hang_item = 10 * case.inputs()[case.at] + (1 if case.after else 0) if case.fails() else None
    if want is not None:
        assert out.error is not None and type(out.error) is want, f"expected {want.__name__}: {what}"
        notes = getattr(out.error, "__notes__", [])
        assert any("par_map(partial(work" in n and f"on item index {case.at}" in n for n in notes), (
            f"the note does not name item index {case.at} of the par_map: {notes!r}: {what}"
        )
        if case.fault in ("exit", "sigkill", "segfault", "exit_once"):
            assert f"died while running item index {case.at}" in str(out.error), what
            if case.retries:
                assert f"({case.retries + 1} attempts)" in str(out.error), what
        assert hang_item not in flat, f"the failing item came out: {what}"
        return
    if case.action == "interrupt":
        assert type(out.error) is KeyboardInterrupt, f"KeyboardInterrupt did not come out: {what}"
    else:
        assert out.error is None, f"unexpected exception: {what}"
    if case.action == "cancel":
        assert out.cancelled, f"the deadline did not expire: {what}"
        assert hang_item not in flat, f"the hung item came out: {what}"
    elif case.action in ("break", "interrupt"):
        assert len(out.got) == min(case.stop, len(expected)), f"expected {case.stop} items: {what}"
    else:  # every item
        if case.ordered:
            assert got == expected, f"expected {expected}: {what}"
        else:
            assert sorted(flat) == sorted(items), f"expected the items {sorted(items)}: {what}"
            assert len(out.got) == len(expected), what


# -- the test ----------------------------------------------------------------------------------


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    # No shrinking: an example takes up to a few seconds (a hang that times out, a
    # deadline), and a failing case is printed whole; derandomize replays it.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases())
def test_chaos_faults_give_the_exact_outcome_and_leak_nothing(case: Case) -> None:
    event(f"fault={case.fault} consumer={case.consumer} action={case.action}")
    with tempfile.TemporaryDirectory(prefix="snake-chaos-") as tmp:
        marker = os.path.join(tmp, "fired")
        stream = case.stream(marker)
        gc.collect()
        gc.disable()
        try:
            # The outcome (its exception's traceback holds frames of the run) stays alive
            # while the leak check runs, as in a caller that keeps it: what was released
            # must not depend on it being dropped.
            with assert_no_leaks(grace=2.0):
                out = consume(case, stream)
                check(case, out)
        finally:
            gc.enable()


def test_the_generated_cases_cover_every_fault_consumer_and_action() -> None:
    seen: set[tuple[str, ...]] = set()

    @settings(max_examples=300, deadline=None, derandomize=True, database=None)
    @given(case=cases())
    def collect(case: Case) -> None:
        seen.add(("fault", case.fault))
        seen.add(("consumer", case.consumer))
        seen.add(("action", case.action))
        seen.add(("after", case.after))
        if case.fault == "hang":
            seen.add(("hang", case.action if case.timeout is None else "timeout"))
        if case.fault == "exit_once":
            seen.add(("exit_once", str(case.retries)))
        if case.action == "cancel":
            seen.add(("cancel", case.consumer))

    collect()
    wanted = {("fault", k) for k in cf.KINDS}
    wanted |= {("consumer", c) for c in ("trio", "sync", "aio")}
    wanted |= {("action", a) for a in ("all", "break", "cancel", "interrupt")}
    wanted |= {("after", a) for a in ("", "thread", "then")}
    wanted |= {("hang", a) for a in ("timeout", "cancel", "break", "interrupt")}
    wanted |= {("cancel", c) for c in ("trio", "aio")}
    wanted |= {("exit_once", "0"), ("exit_once", "1")}
    assert wanted <= seen, f"never generated: {sorted(wanted - seen)}"


# -- what the chaos found, alone -------------------------------------------------------------


def _read_all_and_drop_the_error(consumer: str, stream: snake.Stream[Any]) -> bool:
    """Read ``stream`` to its end; whether it raised ValueError (then dropped, as a caller
    that handled it would)."""
    try:
        if consumer == "sync":
            stream.to_list()
        else:
            trio.run(stream.collect)
    except ValueError:
        return True
    return False


@pytest.mark.parametrize("consumer", ["sync", "trio"])
def test_a_failed_stage_releases_its_shared_memory_without_the_garbage_collector(consumer: str) -> None:
    # Item 0's result, a 64 KiB array, comes back through /dev/shm; item 1 raises. Once
    # the caller has dropped the ValueError, the main process's mapping of item 0's
    # segment (and the descriptor Python's mmap keeps of it) must be gone: no reference
    # cycle may keep them until the collector runs.
    fn = functools.partial(cf.work, cf.Fault("raise", 1, big=True))
    stream = snake.from_iterable(range(2)).par_map(fn, workers=1)
    gc.collect()
    gc.disable()
    try:
        with assert_no_leaks(grace=1.0):
            assert _read_all_and_drop_the_error(consumer, stream)
    finally:
        gc.enable()


# -- the leak check sees descriptors and mappings ----------------------------------------------


def test_a_file_descriptor_left_open_is_a_leak(tmp_path: Any) -> None:
    with pytest.raises(AssertionError, match=r"file descriptor \d+: .*left-open"), assert_no_leaks(grace=0.1):
        f = open(tmp_path / "left-open", "w")  # noqa: SIM115
    f.close()
    with assert_no_leaks(grace=0.1), open(tmp_path / "closed", "w"):  # closed in the block
        pass


def test_workers_kept_idle_and_their_descriptors_are_not_leaks() -> None:
    stream = snake.from_iterable(range(8)).par_map(cf.plus_one, workers=2)
    with assert_no_leaks(grace=0.5):
        assert stream.to_list() == list(range(1, 9))
    assert snake._workers.procs.cache.idle(), "the workers should wait in the cache"


def _mapped_segment(tmp_name: str) -> Any:
    """A mapping of a file named as snake's shared-memory files are, and the array over it."""
    import mmap

    import numpy as np

    path = os.path.join("/dev/shm", f"snake-{os.getpid()}-testchaos-{tmp_name}")
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, 4096)
        mm = mmap.mmap(fd, 4096)
    finally:
        os.close(fd)
        os.unlink(path)
    return np.frombuffer(mm, dtype=np.uint8)


def test_a_mapping_only_garbage_holds_is_a_leak_and_one_the_caller_holds_is_not() -> None:
    gc.collect()
    gc.disable()
    try:
        with assert_no_leaks(grace=0.1):
            held = _mapped_segment("held")  # reachable from this frame: in use
        with (
            pytest.raises(
                AssertionError, match=r"mapping of shared-memory file .*testchaos-cycle \(deleted\)"
            ),
            assert_no_leaks(grace=0.1),
        ):
            cycle: list[Any] = [_mapped_segment("cycle")]
            cycle.append(cycle)
            del cycle  # garbage now, which only the collector would free
    finally:
        gc.enable()
    gc.collect()
    del held
    with assert_no_leaks(grace=0.1):  # with the collector on, garbage is collected first
        cycle = [_mapped_segment("collected")]
        cycle.append(cycle)
        del cycle
