"""Laws every pipeline obeys, checked by Hypothesis over random stage chains.

snake checks itself with the tools it ships to users (``snake.testing``):

- ordered ``par_then`` / ``par_map`` equal the sequential ``map``;
- unordered ones deliver the same multiset;
- every item arrives exactly once;
- ``take(k)`` and ``break`` release every task, thread and worker process;
- ``open()``, ``open_sync()``, ``collect()`` and ``for`` give the same results.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import funcs
import trio
from conftest import run_async, run_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snake
from snake.testing import Pipeline, assert_no_leaks, check_stage, pipelines

LAW_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RUNNERS: dict[str, Callable[[snake.Stream[Any]], list[Any]]] = {
    "open": run_async,
    "open_sync": run_sync,
    "collect": lambda s: trio.run(s.collect),
    "for": lambda s: [x for x in s],
}

# The stage functions of tests/funcs.py, on small integers: map, filter, flat_map, then,
# par_then, par_map on threads and processes, take, skip, prefetch, then a tail
# (enumerate or batch).
STAGES: dict[str, Any] = {
    "maps": [funcs.inc, funcs.double],
    "predicates": [funcs.is_even],
    "flat_maps": [funcs.repeat_n],
    "async_maps": [funcs.ainc, funcs.ajitter],
    "backends": ["thread", "process"],
}


@LAW_SETTINGS
@given(p=pipelines(st.integers(-50, 50), unordered=False, max_items=120, **STAGES))
def test_ordered_chain_equals_sequential_reference(p: Pipeline) -> None:
    assert p.ordered
    p.check()  # open() and open_sync(), breaking out early, nothing left behind
    for how in ("collect", "for"):
        p.verify(RUNNERS[how](p.stream), how=how)


@LAW_SETTINGS
@given(p=pipelines(st.integers(-50, 50), max_items=150, **STAGES))
def test_unordered_stages_deliver_the_same_multiset(p: Pipeline) -> None:
    # ordered=False stages and shuffles mixed in: a multiset law after them, and only
    # size and membership once take/skip follow one.
    p.check()


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
    squares = [(i + 1) ** 2 for i in range(500)]
    expected = [squares[i : i + 64] for i in range(0, 500, 64)]
    for how, got in results.items():
        assert [b.tolist() for b in got] == expected, how  # the default collate: arrays


@settings(max_examples=15, deadline=None)
@given(
    k=st.integers(0, 30),
    backend=st.sampled_from(["thread", "process"]),
    how=st.sampled_from(["take", "break"]),
)
def test_take_and_break_release_every_task_and_worker(k: int, backend: str, how: str) -> None:
    # An endless source, IO tasks and workers all busy when the consumer stops.
    stream = (
        snake.from_iterable(itertools.count())
        .par_then(funcs.ainc, limit=4)
        .map(lambda i: 0.002)
        .par_map(funcs.sleep_then_return, workers=2, backend=backend)  # type: ignore[arg-type]
    )

    async def main() -> None:
        got = []
        s = stream.take(k) if how == "take" else stream
        async with assert_no_leaks(), s.open() as items:  # the trio tasks of this run too
            async for x in items:
                if how == "break" and len(got) == k:
                    break
                got.append(x)
        assert len(got) == k

    with assert_no_leaks():
        trio.run(main)

    # The same through the sync bridge.
    got = []
    with assert_no_leaks():
        for x in stream:
            if len(got) == k:
                break
            got.append(x)
    assert len(got) == k


# -- snake's own stages, as a user's would be checked -----------------------------------------


FEW = settings(max_examples=10)


def test_map_par_map_then_and_par_then_obey_the_laws_in_every_placement() -> None:
    assert len(check_stage(funcs.double, items=st.integers(), settings=FEW)) == 5  # with worker processes
    assert len(check_stage(funcs.ajitter, items=st.integers(-50, 50), settings=FEW)) == 3
    check_stage(funcs.fail_on_7, items=st.integers(0, 10), settings=FEW)  # the error law


def _batches(xs: list[int], n: int, drop_last: bool) -> list[list[int]]:
    out = [xs[i : i + n] for i in range(0, len(xs), n)]
    return out[:-1] if drop_last and out and len(out[-1]) < n else out


def test_inline_stages_match_their_references() -> None:
    ints = st.integers(-50, 50)
    cases: list[tuple[Callable[[snake.Stream[int]], snake.Stream[Any]], Callable[[list[int]], list[Any]]]] = [
        (lambda s: s.filter(funcs.is_even), lambda xs: [x for x in xs if x % 2 == 0]),
        (lambda s: s.flat_map(funcs.repeat_n), lambda xs: [y for x in xs for y in funcs.repeat_n(x)]),
        (lambda s: s.enumerate(), lambda xs: list(enumerate(xs))),
        (lambda s: s.skip(3).take(5), lambda xs: xs[3:8]),
        (lambda s: s.batch(3, collate=None), lambda xs: _batches(xs, 3, False)),
        (lambda s: s.batch(4, drop_last=True, collate=None), lambda xs: _batches(xs, 4, True)),
        (lambda s: s.prefetch(2), lambda xs: xs),
    ]
    for stage, reference in cases:
        check_stage(stage, items=ints, reference=reference, settings=FEW)
    # A shuffle keeps the multiset (and with a seed, the same order every run).
    check_stage(
        lambda s: s.shuffle(8, seed=3), items=ints, reference=lambda xs: xs, ordered=False, settings=FEW
    )
