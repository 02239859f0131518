"""chain, zip and mix: child pipelines inside the source's task; errors and cancellation."""

from __future__ import annotations

import collections

import funcs
import pytest
import trio
from conftest import count_tasks, run_async, run_sync
from hypothesis import given, settings
from hypothesis import strategies as st

import snake


def test_repr() -> None:
    a = snake.from_iterable(range(3)).map(funcs.inc)
    b = snake.from_iterable([1])
    assert repr(snake.chain(a, b).take(2)) == (
        "chain(from_iterable(<range len=3>).map(inc), from_iterable(<list len=1>)).take(2)"
    )
    assert repr(snake.zip(a, b)) == "zip(from_iterable(<range len=3>).map(inc), from_iterable(<list len=1>))"
    assert repr(snake.mix([a, b], [1, 2], seed=4)) == (
        "mix([from_iterable(<range len=3>).map(inc), from_iterable(<list len=1>)], weights=[1.0, 2.0], seed=4)"
    )


@pytest.mark.parametrize("run", [run_async, run_sync])
def test_chain_and_zip(run) -> None:  # type: ignore[no-untyped-def]
    a = snake.from_iterable(range(3000)).par_then(funcs.ainc, limit=4)
    b = snake.from_iterable("xyz")
    assert run(snake.chain(a, b, snake.from_iterable([]))) == list(range(1, 3001)) + ["x", "y", "z"]
    assert run(snake.zip(a, b)) == [(1, "x"), (2, "y"), (3, "z")]
    assert run(snake.zip(a, a.map(funcs.double))) == [(i, 2 * i) for i in range(1, 3001)]
    assert run(snake.chain(b, b).batch(4, collate=None)) == [list("xyzx"), list("yz")]


def test_mix_is_deterministic_and_exhausts_every_stream() -> None:
    streams = [snake.from_iterable(range(100)), snake.from_iterable(range(100, 130))]
    s = snake.mix(streams, [3, 1], seed=1)
    out = s.to_list()
    assert sorted(out) == list(range(130))
    assert [x for x in out if x < 100] == list(range(100))  # each input keeps its order
    assert run_async(s) == out
    assert snake.mix(streams, [3, 1], seed=2).to_list() != out
    # the slow input does not change the choices
    slow = [streams[0].par_then(funcs.ajitter, limit=4).map(lambda x: x - 1), streams[1]]
    assert snake.mix(slow, [3, 1], seed=1).to_list() == out


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=4), st.integers(0, 1000))
def test_mix_every_item_exactly_once(sizes: list[int], seed: int) -> None:
    streams = [snake.from_iterable([(k, i) for i in range(n)]) for k, n in enumerate(sizes)]
    out = snake.mix(streams, [k + 1 for k in range(len(sizes))], seed=seed).to_list()
    assert collections.Counter(out) == collections.Counter((k, i) for k, n in enumerate(sizes) for i in range(n))


def test_mix_follows_the_weights_then_renormalises() -> None:
    a = snake.from_iterable(["a"] * 10_000)
    b = snake.from_iterable(["b"] * 1000)
    out = snake.mix([a, b], [0.9, 0.1], seed=0).to_list()
    head = out[:5000]
    assert 0.85 < head.count("a") / len(head) < 0.95
    # once b is exhausted, only a is left: no hang, no error
    assert out.count("b") == 1000 and out[-100:] == ["a"] * 100


def test_mix_reshuffles_per_epoch() -> None:
    streams = [snake.from_iterable(range(20)), snake.from_iterable(range(20, 40))]
    out = snake.mix(streams, seed=3).repeat(2).to_list()
    assert out[:20] != out[40:60] or out[20:40] != out[60:]
    assert sorted(out[:40]) == sorted(out[40:]) == list(range(40))


@pytest.mark.parametrize(
    ("call", "exc", "msg"),
    [
        (lambda: snake.chain(), ValueError, "chain: needs at least one stream"),
        (lambda: snake.chain([1]), TypeError, r"chain: \[1\] is not a snake.Stream"),
        (lambda: snake.zip(snake.from_iterable([1]), 3), TypeError, "zip: 3 is not a snake.Stream"),
        (lambda: snake.mix(snake.from_iterable([1])), TypeError, "mix: pass a list of streams"),
        (lambda: snake.mix([snake.from_iterable([1])], [1, 2]), ValueError, r"mix: weights=\[1, 2\] has 2"),
        (lambda: snake.mix([snake.from_iterable([1])], [0]), ValueError, "must all be > 0"),
        (lambda: snake.mix([snake.from_iterable([1])], seed=1.5), TypeError, "mix: seed=1.5"),
    ],
)
def test_build_time_validation(call, exc, msg) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc, match=msg):
        call()


@pytest.mark.parametrize("combine", ["chain", "zip", "mix"])
@pytest.mark.parametrize("run", [run_async, run_sync])
def test_an_input_error_comes_out_unchanged_with_notes(combine: str, run) -> None:  # type: ignore[no-untyped-def]
    ok = snake.from_iterable(range(20))
    bad = snake.from_iterable(range(20)).map(funcs.fail_on_7)
    s = {"chain": lambda: snake.chain(ok, bad), "zip": lambda: snake.zip(ok, bad),
         "mix": lambda: snake.mix([ok, bad], seed=0)}[combine]()
    with pytest.raises(funcs.Boom) as info:
        run(s)
    notes = info.value.__notes__
    assert any("raised in stage #1 map(fail_on_7) on item index 7" in n for n in notes)
    assert f"snake: in input 1 of {combine}()" in notes


@pytest.mark.parametrize("combine", ["chain", "zip", "mix"])
async def test_break_cancels_every_child(combine: str, no_leaks: None) -> None:
    def endless():  # type: ignore[no-untyped-def]
        i = 0
        while True:
            yield i
            i += 1

    a = snake.from_iterable(endless()).par_map(funcs.inc, workers=2, backend="thread")
    b = snake.from_async_iterable(lambda: _aendless()).par_then(funcs.ainc, limit=4)
    s = {"chain": lambda: snake.chain(a, b), "zip": lambda: snake.zip(a, b),
         "mix": lambda: snake.mix([a, b], seed=0)}[combine]()
    before = count_tasks()
    with trio.fail_after(10):
        async with s.open() as items:
            n = 0
            async for _ in items:
                n += 1
                if n == 500:
                    break
    assert count_tasks() == before


async def _aendless():  # type: ignore[no-untyped-def]
    i = 0
    while True:
        await trio.lowlevel.checkpoint()
        yield i
        i += 1


async def test_outer_cancel_scope_stops_children() -> None:
    never = snake.from_async_iterable(lambda: _ablock())
    with trio.move_on_after(0.05) as scope:
        await snake.zip(never, snake.from_iterable(range(3))).collect()
    assert scope.cancelled_caught


async def _ablock():  # type: ignore[no-untyped-def]
    await trio.sleep_forever()
    yield 0


def test_shard_after_chain_with_equal_uses_the_total() -> None:
    s = snake.chain(snake.from_iterable(range(5)), snake.from_iterable(range(5, 8)))
    ranks = [s.shard(rank=r, world_size=3, equal=True).to_list() for r in range(3)]
    assert [len(x) for x in ranks] == [2, 2, 2]
    assert sorted(x for r in ranks for x in r) == list(range(6))
