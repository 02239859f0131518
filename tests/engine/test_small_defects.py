"""Small defects, one section each: NumPy integers as integer options, pickling and
copying a Stream, and the end of ``snake.aio``'s ``receive()`` as asyncio code sees it.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import funcs
import numpy as np
import pytest
import trio

import snake
import snake.aio


class Index:
    """Not an int, but usable as one: it has ``__index__`` (as NumPy integers do)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __index__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"Index({self.n})"


# -- integer options take anything operator.index takes -------------------------------------

SOURCE = snake.from_iterable(range(100))

#: (build the stream from an integer option, that option as a NumPy or __index__ integer)
OPTIONS: list[tuple[str, Callable[[Any], snake.Stream[Any]], Any]] = [
    ("take", lambda n: SOURCE.take(n), np.int64(45)),
    ("skip", lambda n: SOURCE.skip(n), np.int32(7)),
    ("batch", lambda n: SOURCE.batch(n, collate=None), np.int64(10)),
    ("pad_batch", lambda n: SOURCE.map(funcs.repeat_n).pad_batch(4, pad_to_multiple=n), np.uint8(8)),
    ("shuffle buffer", lambda n: SOURCE.shuffle(n, seed=0), np.int64(16)),
    ("prefetch", lambda n: SOURCE.prefetch(n), np.uint16(4)),
    ("repeat", lambda n: SOURCE.take(3).repeat(n), np.int8(2)),
    ("progress total", lambda n: SOURCE.progress(total=n), np.int64(100)),
    ("par_then limit=", lambda n: SOURCE.par_then(funcs.ainc, limit=n), np.int64(3)),
    (
        "par_map workers= (threads)",
        lambda n: SOURCE.par_map(funcs.inc, workers=n, backend="thread"),
        np.int64(2),
    ),
    ("par_map workers= (processes)", lambda n: SOURCE.par_map(funcs.inc, workers=n), np.int64(2)),
    ("par_map retries=", lambda n: SOURCE.par_map(funcs.inc, workers=1, retries=n), np.int16(1)),
    ("an __index__ object", lambda n: SOURCE.take(n), Index(45)),
]


@pytest.mark.parametrize(("build", "value"), [o[1:] for o in OPTIONS], ids=[o[0] for o in OPTIONS])
def test_an_integer_option_takes_numpy_integers_and_stores_a_plain_int(
    build: Callable[[Any], snake.Stream[Any]], value: Any
) -> None:
    stream = build(value)
    plain = build(int(value))
    # The repr replays the chain with plain ints: `take(45)`, never `take(np.int64(45))`.
    assert repr(stream) == repr(plain)
    assert "np." not in repr(stream) and "Index" not in repr(stream)
    got, want = stream.to_list(), plain.to_list()
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        if isinstance(a, tuple):  # pad_batch: (batch, lengths), two arrays
            assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        else:
            assert a == b


def last_spec(stream: snake.Stream[Any]) -> Any:
    return stream._specs[-1]


def test_a_numpy_integer_option_is_a_plain_int_in_the_spec() -> None:
    # Typed Any: the signatures say int; a NumPy integer is what a static checker refuses.
    i64: Any = np.int64(3)
    index: Any = Index(3)
    stored = [
        last_spec(SOURCE.take(i64)).n,
        last_spec(SOURCE.skip(index)).n,
        last_spec(SOURCE.batch(i64)).size,
        last_spec(SOURCE.shuffle(i64)).buffer,
        last_spec(SOURCE.prefetch(index)).n,
        last_spec(SOURCE.par_then(funcs.ainc, limit=i64)).limit,
        last_spec(SOURCE.par_map(funcs.inc, workers=i64)).workers,
    ]
    assert [type(v) for v in stored] == [int] * len(stored)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (True, TypeError, "take: n=True must be an int"),
        (np.True_, TypeError, "take: n=np.True_ must be an int"),
        (3.0, TypeError, "take: n=3.0 must be an int"),
        (np.float64(3), TypeError, r"take: n=np.float64\(3.0\) must be an int"),
        ("3", TypeError, "take: n='3' must be an int"),
        (None, TypeError, "take: n=None must be an int"),
        (-1, ValueError, "take: n=-1 must be >= 0"),
        (np.int64(-1), ValueError, r"take: n=np.int64\(-1\) must be >= 0"),
        (Index(-2), ValueError, r"take: n=Index\(-2\) must be >= 0"),
    ],
)
def test_bools_floats_and_small_integers_are_still_refused_quoting_the_argument(
    value: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{message}$"):
        SOURCE.take(value)


def test_a_numpy_integer_is_refused_where_an_int_would_be() -> None:
    zero: Any = np.int64(0)
    with pytest.raises(ValueError, match=r"^batch: size=np.int64\(0\) must be >= 1$"):
        SOURCE.batch(zero)
    with pytest.raises(ValueError, match=r"^par_map: workers=np.int64\(0\) must be >= 1$"):
        SOURCE.par_map(funcs.inc, workers=zero)
    with pytest.raises(ValueError, match=r"^par_then: limit=np.int64\(0\) must be >= 1$"):
        SOURCE.par_then(funcs.ainc, limit=zero)


# -- pickle, copy and deepcopy ------------------------------------------------------------

STREAMS: dict[str, snake.Stream[Any]] = {
    "a chain of stages": (
        snake.from_iterable(range(50))
        .map(funcs.inc)
        .filter(funcs.is_even)
        .flat_map(funcs.repeat_n)
        .batch(4, collate=None)
        .shuffle(8, seed=3)
        .prefetch(2)
    ),
    "on_error, take and partial": (
        snake.from_iterable(range(30))
        .map(funcs.fail_on_7)
        .on_error("skip")
        .par_then(partial(funcs.ainc), limit=4)
        .take(10)
    ),
    "nested streams": snake.chain(
        snake.zip(snake.from_iterable(range(5)), snake.from_iterable("abcde")),
        snake.mix([snake.from_iterable([(9, "x")]), snake.from_iterable([(8, "y")])], seed=1),
    ).repeat(2),
    "par_map": snake.from_iterable(range(20)).par_map(funcs.square, workers=2).enumerate(),
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_a_stream_survives_pickling_with_the_same_repr_and_items(name: str, protocol: int) -> None:
    stream = STREAMS[name]
    again = pickle.loads(pickle.dumps(stream, protocol=protocol))
    assert type(again) is snake.Stream
    assert repr(again) == repr(stream)
    assert again.to_list() == stream.to_list()


@pytest.mark.parametrize("how", [copy.copy, copy.deepcopy], ids=["copy", "deepcopy"])
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_a_stream_can_be_copied_and_deep_copied(name: str, how: Callable[[Any], Any]) -> None:
    stream = STREAMS[name]
    again = how(stream)
    assert type(again) is snake.Stream
    assert repr(again) == repr(stream)
    assert again.to_list() == stream.to_list()


def test_a_copy_is_immutable_and_a_deep_copy_owns_its_source() -> None:
    items = [1, 2, 3]
    stream = snake.from_iterable(items).map(funcs.inc)
    deep, shallow = copy.deepcopy(stream), copy.copy(stream)
    items.append(4)
    assert deep.to_list() == [2, 3, 4]
    assert shallow.to_list() == [2, 3, 4, 5]  # the same source list, as for a tuple
    with pytest.raises(AttributeError, match="Stream is immutable"):
        deep._specs = ()


def test_a_stream_holding_a_lambda_fails_pickling_naming_it() -> None:
    stream = snake.from_iterable(range(3)).map(lambda x: x + 1)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises((pickle.PicklingError, AttributeError)) as info:
            pickle.dumps(stream, protocol=protocol)
        assert "<lambda>" in str(info.value), str(info.value)
        assert "immutable" not in str(info.value)
    # A deep copy does not need pickling: functions are copied as themselves.
    assert copy.deepcopy(stream).to_list() == [1, 2, 3]


def test_a_stream_of_a_generator_fails_pickling_naming_the_generator() -> None:
    stream = snake.from_iterable(x for x in range(3))
    with pytest.raises(TypeError, match="cannot pickle 'generator' object"):
        pickle.dumps(stream)


# -- snake.aio: receive() after the last item ---------------------------------------------


def test_aio_receive_after_the_last_item_raises_snake_aio_end_of_stream() -> None:
    async def main() -> list[int]:
        got = []
        async with snake.aio.open(snake.from_iterable(range(3))) as items:
            while True:
                try:
                    got.append(await items.receive())
                except snake.aio.EndOfStream:
                    break
            # Every later receive() says the same; receive_chunk() and async for just end.
            with pytest.raises(snake.aio.EndOfStream):
                await items.receive()
            assert await items.receive_chunk() is None
            assert [x async for x in items] == []
        return got

    assert asyncio.run(main()) == [0, 1, 2]


def test_aio_end_of_stream_is_a_trio_end_of_channel_for_code_that_caught_that() -> None:
    assert issubclass(snake.aio.EndOfStream, trio.EndOfChannel)
    assert not issubclass(snake.aio.EndOfStream, StopAsyncIteration)
    assert snake.aio.EndOfStream.__module__ == "snake.aio"

    async def main() -> None:
        empty: list[int] = []
        async with snake.aio.open(snake.from_iterable(empty)) as items:
            with pytest.raises(trio.EndOfChannel):
                await items.receive()

    asyncio.run(main())


def test_aio_receive_in_an_async_generator_ends_it_cleanly() -> None:
    # A StopAsyncIteration from receive() would become "RuntimeError: async generator raised
    # StopAsyncIteration" here; EndOfStream is an ordinary exception to catch.
    async def pairs(items: snake.aio.AsyncioItems[int]) -> AsyncIterator[tuple[int, int]]:
        while True:
            try:
                a = await items.receive()
                b = await items.receive()
            except snake.aio.EndOfStream:
                return
            yield a, b

    async def main() -> list[tuple[int, int]]:
        async with snake.aio.open(snake.from_iterable(range(7))) as items:
            return [p async for p in pairs(items)]

    assert asyncio.run(main()) == [(0, 1), (2, 3), (4, 5)]


def test_aio_async_for_still_ends_without_an_exception() -> None:
    async def main() -> list[int]:
        async with snake.aio.open(snake.from_iterable(range(2000)).map(funcs.double)) as items:
            return [x async for x in items]

    assert asyncio.run(main()) == [2 * x for x in range(2000)]


def test_aio_a_stage_error_comes_before_the_end() -> None:
    async def main() -> None:
        async with snake.aio.open(snake.from_iterable(range(10)).map(funcs.fail_on_7)) as items:
            while True:
                await items.receive()

    with pytest.raises(funcs.Boom):
        asyncio.run(main())
