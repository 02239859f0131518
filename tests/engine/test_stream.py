"""Stream is an immutable, lazy, validated description whose repr replays the chain."""

from __future__ import annotations

import functools

import funcs
import pytest
import trio
import trio.lowlevel

import snake


def test_repr_replays_the_chain() -> None:
    s = (
        snake.from_iterable(range(100))
        .par_then(funcs.ajitter, limit=16)
        .par_map(funcs.square, workers=2)
        .map(funcs.inc)
        .filter(funcs.is_even)
        .batch(8, drop_last=True)
        .prefetch(4)
    )
    assert repr(s) == (
        "from_iterable(<range len=100>).par_then(ajitter, limit=16).par_map(square, workers=2)"
        ".map(inc).filter(is_even).batch(8, drop_last=True).prefetch(4)"
    )
    t = snake.from_iterable([1, 2]).par_map(funcs.inc, workers=1, backend="thread", ordered=False)
    assert repr(t) == "from_iterable(<list len=2>).par_map(inc, workers=1, backend='thread', ordered=False)"
    u = snake.from_iterable(iter([])).then(funcs.ainc).par_then(funcs.ainc, limit=2, ordered=False)
    assert repr(u) == "from_iterable(<list_iterator>).then(ainc).par_then(ainc, limit=2, ordered=False)"
    v = snake.from_iterable(range(3)).map(functools.partial(pow, 2)).enumerate().take(2).skip(1)
    assert repr(v) == "from_iterable(<range len=3>).map(partial(pow, 2)).enumerate().take(2).skip(1)"


def test_streams_are_immutable_and_lazy() -> None:
    pulled = []

    def source():
        for i in range(3):
            pulled.append(i)
            yield i

    base = snake.from_iterable(source())
    mapped = base.map(funcs.inc)
    assert mapped is not base
    assert repr(base) == "from_iterable(<generator>)"
    assert pulled == []  # nothing runs until opened
    with pytest.raises(AttributeError, match="immutable"):
        base.foo = 1  # type: ignore[attr-defined]
    assert mapped.to_list() == [1, 2, 3]


def test_a_stream_can_be_opened_again() -> None:
    s = snake.from_iterable(range(5)).par_map(funcs.square, workers=2, backend="thread")
    assert s.to_list() == s.to_list() == [0, 1, 4, 9, 16]


def test_async_for_without_open_names_the_right_spelling() -> None:
    async def main() -> None:
        async for _ in snake.from_iterable(range(3)):  # type: ignore[attr-defined]
            pass

    with pytest.raises(TypeError, match=r"async with stream\.open\(\) as items"):
        trio.run(main)


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda s: s.batch(0), ValueError, "batch: size=0 must be >= 1"),
        (lambda s: s.batch(2.0), TypeError, "batch: size=2.0 must be an int"),
        (lambda s: s.batch(2, drop_last=1), TypeError, "batch: drop_last=1 must be a bool"),
        (lambda s: s.take(-1), ValueError, "take: n=-1 must be >= 0"),
        (lambda s: s.skip(True), TypeError, "skip: n=True must be an int"),
        (lambda s: s.prefetch(0), ValueError, "prefetch: n=0 must be >= 1"),
        (lambda s: s.par_then(funcs.ainc, limit=0), ValueError, "par_then: limit=0 must be >= 1"),
        (lambda s: s.par_map(funcs.inc, workers=0), ValueError, "par_map: workers=0 must be >= 1"),
        (lambda s: s.par_map(funcs.inc, backend="gpu"), ValueError, "par_map: backend='gpu' must be one of"),
        (
            lambda s: s.par_map(funcs.inc, worker_type="thread"),
            ValueError,
            "par_map: worker_type='thread' must be one of",
        ),
        (
            lambda s: s.par_map(lambda x: x, workers=2),
            TypeError,
            r'par_map\(backend="process"\) needs a picklable function; <lambda> is not',
        ),
        (lambda s: s.map(funcs.ainc), TypeError, "map needs a sync function; ainc is an async function"),
        (lambda s: s.par_map(funcs.ainc), TypeError, "par_map needs a sync function"),
        (lambda s: s.par_then(funcs.inc), TypeError, "par_then needs an async function; inc is a sync"),
        (lambda s: s.then(funcs.inc), TypeError, "then needs an async function"),
        (lambda s: s.map(3), TypeError, "map: fn=3 is not callable"),
        (lambda s: s.par_then(funcs.ainc, ordered="yes"), TypeError, "par_then: ordered='yes' must be a bool"),
    ],
)
def test_argument_mistakes_fail_at_build_time_quoting_the_argument(build, error, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        build(snake.from_iterable(range(3)))


def test_thread_backend_accepts_lambdas() -> None:
    assert snake.from_iterable(range(4)).par_map(lambda x: -x, workers=2, backend="thread").to_list() == [0, -1, -2, -3]


def test_source_validation() -> None:
    with pytest.raises(TypeError, match="from_iterable: 3 is neither iterable nor a function returning an iterable"):
        snake.from_iterable(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="from_async_iterable: 3 is neither"):
        snake.from_async_iterable(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Stream.. is not built directly"):
        snake.Stream(())


async def agen(n: int):  # type: ignore[no-untyped-def]
    for i in range(n):
        await trio.lowlevel.checkpoint()
        yield i


async def test_from_async_iterable_function_and_object() -> None:
    s = snake.from_async_iterable(lambda: agen(5)).map(funcs.inc)
    assert await s.collect() == [1, 2, 3, 4, 5]
    assert await s.collect() == [1, 2, 3, 4, 5]  # a function gives a fresh iterator per run
    assert await snake.from_async_iterable(agen(3)).collect() == [0, 1, 2]
    assert snake.from_async_iterable(lambda: agen(3)).take(2).to_list() == [0, 1]


async def test_async_source_errors_carry_the_stage_note() -> None:
    async def broken():  # type: ignore[no-untyped-def]
        yield 1
        raise funcs.Boom("async source broke")

    with pytest.raises(funcs.Boom) as info:
        await snake.from_async_iterable(broken).collect()
    assert any(n.startswith("snake: raised in stage #0 from_async_iterable(broken)") for n in info.value.__notes__)


async def test_items_is_a_trio_receive_channel() -> None:
    async with snake.from_iterable(range(3)).open() as items:
        assert isinstance(items, trio.abc.ReceiveChannel)
        assert await items.receive() == 0
        assert [x async for x in items] == [1, 2]
        with pytest.raises(trio.EndOfChannel):
            await items.receive()
