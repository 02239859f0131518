"""Laws every pipeline obeys, checked by Hypothesis over random stage chains.

- ordered ``par_then`` / ``par_map`` equal the sequential ``map``;
- unordered ones deliver the same multiset;
- every item arrives exactly once;
- ``take(k)`` and ``break`` release every task, thread and worker process;
- ``open()`` and ``open_sync()`` give the same results.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from typing import Any

import funcs
import trio
from conftest import Resources, count_tasks, run_async, run_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snake

Op = tuple[Any, ...]

LAW_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Ops that keep items as ints: (name, *args). Each has a sequential reference below.
int_ops = st.one_of(
    st.tuples(st.just("map"), st.sampled_from(["inc", "double"])),
    st.tuples(st.just("filter")),
    st.tuples(st.just("flat_map")),
    st.tuples(st.just("take"), st.integers(0, 40)),
    st.tuples(st.just("skip"), st.integers(0, 10)),
    st.tuples(st.just("par_then"), st.sampled_from(["ainc", "ajitter"]), st.integers(1, 8)),
    st.tuples(st.just("then")),
    st.tuples(st.just("par_map"), st.sampled_from(["thread", "process"]), st.integers(1, 2)),
    st.tuples(st.just("prefetch"), st.integers(1, 50)),
)
tail_ops = st.one_of(
    st.just(()),
    st.tuples(st.just("enumerate")),
    st.tuples(st.just("batch"), st.integers(1, 7), st.booleans()),
)


def build(source: list[int], ops: list[Op], ordered: bool = True) -> snake.Stream[Any]:
    s: snake.Stream[Any] = snake.from_iterable(source)
    for op in ops:
        name = op[0]
        if name == "map":
            s = s.map(getattr(funcs, op[1]))
        elif name == "filter":
            s = s.filter(funcs.is_even)
        elif name == "flat_map":
            s = s.flat_map(funcs.repeat_n)
        elif name == "take":
            s = s.take(op[1])
        elif name == "skip":
            s = s.skip(op[1])
        elif name == "par_then":
            s = s.par_then(getattr(funcs, op[1]), limit=op[2], ordered=ordered)
        elif name == "then":
            s = s.then(funcs.ainc)
        elif name == "par_map":
            s = s.par_map(funcs.double, workers=op[2], backend=op[1], ordered=ordered)
        elif name == "prefetch":
            s = s.prefetch(op[1])
        elif name == "enumerate":
            s = s.enumerate()
        elif name == "batch":
            s = s.batch(op[1], drop_last=op[2], collate=None)
        else:  # pragma: no cover - the strategies only make the names above
            raise AssertionError(name)
    return s


def reference(source: list[int], ops: list[Op]) -> list[Any]:
    """What the chain means, computed sequentially with plain Python."""
    items: list[Any] = list(source)
    for op in ops:
        name = op[0]
        if name == "map":
            items = [getattr(funcs, op[1])(x) for x in items]
        elif name == "filter":
            items = [x for x in items if funcs.is_even(x)]
        elif name == "flat_map":
            items = [y for x in items for y in funcs.repeat_n(x)]
        elif name == "take":
            items = items[: op[1]]
        elif name == "skip":
            items = items[op[1] :]
        elif name in ("par_then", "then"):
            items = [x + 1 for x in items]
        elif name == "par_map":
            items = [funcs.double(x) for x in items]
        elif name == "prefetch":
            pass
        elif name == "enumerate":
            items = list(enumerate(items))
        elif name == "batch":
            n, drop_last = op[1], op[2]
            batches = [items[i : i + n] for i in range(0, len(items), n)]
            if drop_last and batches and len(batches[-1]) < n:
                batches.pop()
            items = batches
    return items


RUNNERS: dict[str, Callable[[snake.Stream[Any]], list[Any]]] = {
    "open": run_async,
    "open_sync": run_sync,
    "collect": lambda s: trio.run(s.collect),
    "for": lambda s: [x for x in s],
}


@LAW_SETTINGS
@given(
    source=st.lists(st.integers(-50, 50), max_size=120),
    ops=st.lists(int_ops, max_size=4),
    tail=tail_ops,
)
def test_ordered_chain_equals_sequential_reference(
    source: list[int], ops: list[Op], tail: Op
) -> None:
    chain = ops + ([tail] if tail else [])
    expected = reference(source, chain)
    stream = build(source, chain)
    res = Resources()
    for how in ("open", "open_sync"):
        assert RUNNERS[how](stream) == expected, (how, repr(stream))
    res.check()


@LAW_SETTINGS
@given(
    source=st.lists(st.integers(-50, 50), max_size=150),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("map"), st.sampled_from(["inc", "double"])),
            st.tuples(st.just("filter")),
            st.tuples(st.just("par_then"), st.just("ajitter"), st.integers(1, 8)),
            st.tuples(st.just("par_map"), st.sampled_from(["thread", "process"]), st.integers(1, 2)),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_unordered_stages_deliver_the_same_multiset(source: list[int], ops: list[Op]) -> None:
    expected = Counter(reference(source, ops))
    stream = build(source, ops, ordered=False)
    for how in ("open", "open_sync"):
        assert Counter(RUNNERS[how](stream)) == expected, (how, repr(stream))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 1500), limit=st.integers(2, 20), ordered=st.booleans())
def test_every_item_arrives_exactly_once(n: int, limit: int, ordered: bool) -> None:
    stream = (
        snake.from_iterable(range(n))
        .par_then(funcs.ajitter, limit=limit, ordered=ordered)
        .par_map(funcs.double, workers=2, backend="thread", ordered=ordered)
    )
    for how, run in RUNNERS.items():
        got = run(stream)
        assert sorted(got) == [2 * (i + 1) for i in range(n)], how
        if ordered:
            assert got == [2 * (i + 1) for i in range(n)], how


def test_every_runner_gives_the_same_result() -> None:
    stream = snake.from_iterable(range(500)).map(funcs.inc).par_map(funcs.square, workers=2).batch(64)
    results = {how: run(stream) for how, run in RUNNERS.items()}
    expected = reference(list(range(500)), [("map", "inc")])
    expected = [[x * x for x in b] for b in reference(expected, [("batch", 64, False)])]
    for how, got in results.items():
        assert [b.tolist() for b in got] == expected, how  # the default collate: arrays


@settings(max_examples=15, deadline=None)
@given(
    k=st.integers(0, 30),
    backend=st.sampled_from(["thread", "process"]),
    how=st.sampled_from(["take", "break"]),
)
def test_take_and_break_release_every_task_and_worker(k: int, backend: str, how: str) -> None:
    res = Resources()
    # An endless source, IO tasks and workers all busy when the consumer stops.
    stream = (
        snake.from_iterable(itertools.count())
        .par_then(funcs.ainc, limit=4)
        .map(lambda i: 0.002)
        .par_map(funcs.sleep_then_return, workers=2, backend=backend)  # type: ignore[arg-type]
    )

    async def main() -> None:
        before = count_tasks()
        got = []
        s = stream.take(k) if how == "take" else stream
        async with s.open() as items:
            async for x in items:
                if how == "break" and len(got) == k:
                    break
                got.append(x)
        assert len(got) == k
        assert count_tasks() == before

    trio.run(main)
    res.check()

    # The same through the sync bridge.
    got = []
    for x in stream:
        if len(got) == k:
            break
        got.append(x)
    assert len(got) == k
    res.check()
