"""``pipe(fn)``: a stage made of the user's generator, sync (in a thread) or async."""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import funcs
import pytest
import trio
from conftest import run_async
from hypothesis import given, settings
from hypothesis import strategies as st

import snake
from snake.testing import assert_no_leaks, check_resume, check_stage

# -- generators, and the plain-Python model of each: list(gen(iter(xs))) ----------------


def pairs(items: Iterator[int]) -> Iterator[tuple[int, int]]:
    """Each item with the one before it: state across items."""
    prev = None
    for x in items:
        if prev is not None:
            yield (prev, x)
        prev = x


def dedupe(items: Iterator[int]) -> Iterator[int]:
    seen = set()
    for x in items:
        if x not in seen:
            seen.add(x)
            yield x


def pack(items: Iterator[int], limit: int = 60) -> Iterator[list[int]]:
    """Greedy packing of values into groups whose sum stays under ``limit``: it holds back."""
    group: list[int] = []
    total = 0
    for x in items:
        x = abs(x)
        if group and total + x > limit:
            yield group
            group, total = [], 0
        group.append(x)
        total += x
    if group:
        yield group


def header_and_take(items: Iterator[int]) -> Iterator[int]:
    """Yields before taking any input, then stops before the end of its input."""
    yield -1
    yield from itertools.islice(items, 5)


def expand(items: Iterator[int]) -> Iterator[int]:
    for x in items:
        yield from range(abs(x) % 4)


async def apairs(items: AsyncIterator[int]) -> AsyncIterator[tuple[int, int]]:
    prev = None
    async for x in items:
        if prev is not None:
            yield (prev, x)
        prev = x


async def apack(items: AsyncIterator[int]) -> AsyncIterator[list[int]]:
    group: list[int] = []
    total = 0
    async for x in items:
        x = abs(x)
        if group and total + x > 60:
            await trio.lowlevel.checkpoint()
            yield group
            group, total = [], 0
        group.append(x)
        total += x
    if group:
        yield group


class RunningMean:
    """A stateful stage with the checkpoint protocol."""

    def __init__(self) -> None:
        self.n = 0
        self.total = 0

    def __call__(self, items: Iterator[int]) -> Iterator[float]:
        for x in items:
            self.n += 1
            self.total += x
            yield self.total / self.n

    def state_dict(self) -> dict[str, int]:
        return {"n": self.n, "total": self.total}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.n, self.total = state["n"], state["total"]


class Packer:
    """Stateful and holding inputs back: its state names the items it holds."""

    def __init__(self, limit: int = 60) -> None:
        self.limit = limit
        self.group: list[int] = []

    def __call__(self, items: Iterator[int]) -> Iterator[list[int]]:
        for x in items:
            x = abs(x)
            if self.group and sum(self.group) + x > self.limit:
                out, self.group = self.group, []
                yield out
            self.group.append(x)
        if self.group:
            out, self.group = self.group, []
            yield out

    def state_dict(self) -> dict[str, Any]:
        return {"group": list(self.group)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.group = list(state["group"])


class APacker(Packer):
    async def __call__(self, items: AsyncIterator[int]) -> AsyncIterator[list[int]]:  # type: ignore[override]
        async for x in items:
            x = abs(x)
            if self.group and sum(self.group) + x > self.limit:
                out, self.group = self.group, []
                yield out
            self.group.append(x)
        if self.group:
            out, self.group = self.group, []
            yield out


def model(gen: Callable[[Iterator[Any]], Iterable[Any]]) -> Callable[[list[Any]], list[Any]]:
    return lambda xs: list(gen(iter(xs)))


SYNC: list[Callable[[Iterator[int]], Iterable[Any]]] = [pairs, dedupe, pack, header_and_take, expand]


@settings(max_examples=60, deadline=None)
@given(
    xs=st.lists(st.integers(-50, 50), max_size=400),
    which=st.sampled_from(range(len(SYNC))),
    drop=st.integers(0, 3),
    runner=st.sampled_from(["open", "open_sync"]),
)
def test_pipe_equals_its_generator_run_on_the_list(xs: list[int], which: int, drop: int, runner: str) -> None:
    # A filter before it cuts the chunks at random places.
    gen = SYNC[which]
    kept = [x for x in xs if drop == 0 or x % 4 != drop]
    stream = snake.from_iterable(xs).filter(lambda x: drop == 0 or x % 4 != drop).pipe(gen)
    got = run_async(stream) if runner == "open" else stream.to_list()
    assert got == list(gen(iter(kept)))


@settings(max_examples=30, deadline=None)
@given(xs=st.lists(st.integers(-50, 50), max_size=300), stateful=st.booleans())
def test_async_pipe_equals_its_generator(xs: list[int], stateful: bool) -> None:
    fn: Any = APacker() if stateful else apack
    assert snake.from_iterable(xs).pipe(fn).to_list() == list(pack(iter(xs)))
    assert snake.from_iterable(xs).pipe(apairs).to_list() == list(pairs(iter(xs)))


def test_pipe_obeys_the_stage_laws() -> None:
    # take(k), break, open() and open_sync(), and nothing left behind, in every placement.
    few = settings(max_examples=10)
    ints = st.integers(-50, 50)
    check_stage(lambda s: s.pipe(pairs), items=ints, reference=model(pairs), settings=few)
    check_stage(lambda s: s.pipe(Packer()), items=ints, reference=model(pack), settings=few)
    check_stage(lambda s: s.pipe(apairs), items=ints, reference=model(pairs), settings=few)


def test_sync_fn_runs_in_a_thread_of_its_own_and_the_object_is_not_changed() -> None:
    threads: list[str] = []

    def where(items: Iterator[int]) -> Iterator[int]:
        threads.append(threading.current_thread().name)
        yield from items

    assert snake.from_iterable(range(5)).map(funcs.inc).pipe(where).to_list() == [1, 2, 3, 4, 5]
    assert threads == ["snake #2 pipe(where)"]
    mean = RunningMean()
    assert snake.from_iterable([2, 4, 6]).pipe(mean).to_list() == [2.0, 3.0, 4.0]
    assert (mean.n, mean.total) == (0, 0)  # every run works on a copy
    assert snake.from_iterable([2, 4, 6]).pipe(mean).to_list() == [2.0, 3.0, 4.0]


def test_statistics_count_items_in_and_out() -> None:
    async def main() -> None:
        async with snake.from_iterable(range(100)).pipe(pack).open() as items:
            got = [x async for x in items]
            stage = items.statistics().stages[1]
        assert stage.name == "#1 pipe(pack)"
        assert (stage.items_in, stage.items_out) == (100, len(got))

    trio.run(main)


# -- errors ---------------------------------------------------------------------------


def fail_at_7(items: Iterator[int]) -> Iterator[int]:
    for x in items:
        if x == 7:
            raise ValueError("seven")
        yield x


async def afail_at_7(items: AsyncIterator[int]) -> AsyncIterator[int]:
    async for x in items:
        if x == 7:
            raise ValueError("seven")
        yield x


@pytest.mark.parametrize("fn", [fail_at_7, afail_at_7])
def test_an_error_comes_out_unchanged_with_the_stage_note(fn: Any) -> None:
    stream = snake.from_iterable(range(20)).map(funcs.inc).pipe(fn)
    name = fn.__name__
    for run in (stream.to_list, lambda: run_async(stream)):
        with assert_no_leaks(), pytest.raises(ValueError, match="seven") as info:
            run()
        assert f"snake: raised in stage #2 pipe({name}) on item index 6" in info.value.__notes__


def test_an_error_before_any_input_has_no_index() -> None:
    def broken(items: Iterator[int]) -> Iterator[int]:
        raise KeyError("early")
        yield 0

    with pytest.raises(KeyError) as info:
        snake.from_iterable(range(3)).pipe(broken).to_list()
    assert info.value.__notes__ == ["snake: raised in stage #1 pipe(broken)"]


def test_what_fn_returns_must_iterate() -> None:
    def not_iterable(items: Iterator[int]) -> int:
        return 3

    with pytest.raises(TypeError, match=r"pipe: not_iterable\(items\) returned 'int', not an iterable"):
        snake.from_iterable(range(3)).pipe(not_iterable).to_list()  # type: ignore[arg-type]


# -- stopping: the generator is closed, its thread ends ---------------------------------


class Closing:
    """A generator that records how it ended; it blocks in its thread on nothing."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def gen(self, items: Iterator[int]) -> Iterator[int]:
        try:
            yield from items
        except GeneratorExit:
            self.events.append("exit")
            raise
        finally:
            self.events.append("finally")

    async def agen(self, items: AsyncIterator[int]) -> AsyncIterator[int]:
        try:
            async for x in items:
                yield x
        finally:
            self.events.append("finally")


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("how", ["break", "take", "error_after", "cancel"])
def test_stopping_closes_the_generator(kind: str, how: str) -> None:
    c = Closing()
    stream = snake.from_iterable(itertools.count()).pipe(c.gen if kind == "sync" else c.agen)
    if how == "take":
        stream = stream.take(3)
    if how == "error_after":
        stream = stream.map(funcs.fail_on_7)

    async def main() -> None:
        with trio.move_on_after(0.2 if how == "cancel" else 30):
            async with stream.open() as items:
                async for x in items:
                    if how == "break" and x == 3:
                        break

    with assert_no_leaks():
        if how == "error_after":
            with pytest.raises(funcs.Boom):
                trio.run(main)
        else:
            trio.run(main)
    assert c.events[-1] == "finally"
    if kind == "sync":
        assert c.events == ["exit", "finally"]


def test_break_in_a_sync_loop_closes_the_generator() -> None:
    c = Closing()
    with assert_no_leaks():
        for x in snake.from_iterable(itertools.count()).pipe(c.gen):
            if x == 2000:
                break
    assert c.events == ["exit", "finally"]


def test_a_generator_that_stops_early_ends_the_stage() -> None:
    with assert_no_leaks():
        assert snake.from_iterable(itertools.count()).pipe(header_and_take).to_list() == [-1, 0, 1, 2, 3, 4]


# -- checkpoints ----------------------------------------------------------------------


def test_plain_pipes_resume_by_replaying_their_input() -> None:
    check_resume(snake.from_iterable(range(300)).pipe(pairs), at=[0, 1, 150, 298, 299])
    check_resume(snake.from_iterable(range(3000)).filter(funcs.is_even).pipe(pack).batch(3, collate=None))
    check_resume(snake.from_iterable(range(200)).pipe(apairs), at=[0, 1, 100, 199])
    check_resume(snake.from_iterable(range(500)).pipe(expand).shuffle(10, seed=2), at=[0, 7, 300])

    # The source reruns from its start: the checkpoint says so.
    async def state_at(k: int) -> dict[str, Any]:
        async with snake.from_iterable(range(3000)).pipe(pairs).open() as items:
            async for _ in items:
                k -= 1
                if not k:
                    return items.state_dict()
        raise AssertionError

    state = trio.run(state_at, 2500)
    assert state["stages"][1] == {"stage": "#1 pipe(pairs)", "at": 2500, "resume": 0, "discard": 2500}


def test_stateful_pipes_resume_from_their_state() -> None:
    stream = snake.from_iterable(range(5000)).pipe(RunningMean())
    check_resume(stream, at=[0, 1, 2500, 4999])
    check_resume(snake.from_iterable(range(4000)).map(funcs.inc).pipe(Packer()).map(sum), at=[0, 3, 40, 70])
    check_resume(snake.from_iterable(range(4000)).pipe(APacker()), at=[0, 3, 40, 70])
    # Inside an epoch of repeat(), and a partial batch after it.
    check_resume(snake.from_iterable(range(700)).pipe(RunningMean()).repeat(2).batch(9, collate=None))

    async def state_at(k: int) -> dict[str, Any]:
        async with stream.open() as items:
            async for _ in items:
                k -= 1
                if not k:
                    return items.state_dict()
        raise AssertionError

    entry = trio.run(state_at, 4000)["stages"][1]
    # It resumes from a state taken on the way, not from the start.
    assert 0 < entry["resume"] <= 4000
    assert entry["state"]["n"] == entry["resume"]
    assert entry["at"] - entry.get("discard", 0) == entry["resume"]


def test_a_checkpoint_refuses_an_unordered_stage_before_a_pipe() -> None:
    stream = snake.from_iterable(range(50)).par_then(funcs.ainc, limit=4, ordered=False).pipe(pairs)

    async def main() -> None:
        async with stream.open() as items:
            await items.receive()
            with pytest.raises(ValueError, match=r"#2 pipe\(pairs\) would run again over its input"):
                items.state_dict()

    trio.run(main)


# -- building -------------------------------------------------------------------------


def test_pipe_repr_and_argument_errors() -> None:
    s = snake.from_iterable(range(3))
    assert repr(s.pipe(pairs)) == "from_iterable(<range len=3>).pipe(pairs)"
    assert repr(s.pipe(apairs)) == "from_iterable(<range len=3>).pipe(apairs)"
    assert repr(s.pipe(RunningMean())) == "from_iterable(<range len=3>).pipe(RunningMean)"
    assert (
        repr(s.pipe(functools.partial(pack, limit=9)))
        == "from_iterable(<range len=3>).pipe(partial(pack, limit=9))"
    )
    with pytest.raises(TypeError, match=r"^pipe: fn=3 is not callable$"):
        s.pipe(3)  # type: ignore[call-overload]

    async def coro(items: Any) -> None: ...

    with pytest.raises(TypeError, match=r"^pipe: coro is an async function that is not a generator; "):
        s.pipe(coro)  # type: ignore[call-overload]

    class HalfState:
        def __call__(self, items: Iterator[int]) -> Iterator[int]:
            yield from items

        def state_dict(self) -> dict[str, Any]:
            return {}

    with pytest.raises(
        TypeError, match=r"^pipe: fn=HalfState has state_dict\(\) but no load_state_dict\(\); "
    ):
        s.pipe(HalfState())

    class Uncopyable(RunningMean):
        def __deepcopy__(self, memo: object) -> Uncopyable:
            raise TypeError("no copies")

    with pytest.raises(TypeError, match=r"copy.deepcopy\(\) failed \(TypeError: no copies\)$"):
        s.pipe(Uncopyable())


def test_partials_and_async_callables_are_told_apart() -> None:
    assert snake.from_iterable(range(40)).pipe(functools.partial(pack, limit=9)).to_list() == list(
        pack(iter(range(40)), 9)
    )
    assert snake.from_iterable(range(5)).pipe(APacker(limit=3)).to_list() == [[0, 1, 2], [3], [4]]
