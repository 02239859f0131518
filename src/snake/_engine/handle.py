"""The buffering shared by the async consumer handles (``Items``, ``snake.aio``'s
``AsyncioItems``): the items of the current chunk are handed out without suspending,
and the next chunk is fetched only once they are used up."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Generic, TypeVar

import trio

T = TypeVar("T")


class ChunkReader(abc.ABC, Generic[T]):
    """``receive()`` and ``async for`` over chunks that :meth:`_refill` brings."""

    __slots__ = ("_buf", "_pos")
    #: What ``receive()`` raises after the last item.
    _END: ClassVar[type[BaseException]] = trio.EndOfChannel

    def __init__(self) -> None:
        self._buf: list[Any] = []
        self._pos = 0

    @abc.abstractmethod
    async def _refill(self) -> bool:
        """Make ``_buf[_pos:]`` hold items (True), or tell that there are no more (False)."""

    async def receive(self) -> T:
        """The next item; raises ``trio.EndOfChannel`` after the last one
        (:class:`snake.aio.EndOfStream`, a subclass of it, for :class:`snake.aio.AsyncioItems`).
        """
        pos = self._pos
        if pos >= len(self._buf):
            if not await self._refill():
                raise self._END
            pos = self._pos
        self._pos = pos + 1
        return self._buf[pos]  # type: ignore[no-any-return]

    async def __anext__(self) -> T:
        pos = self._pos
        if pos >= len(self._buf):
            if not await self._refill():
                raise StopAsyncIteration
            pos = self._pos
        self._pos = pos + 1
        return self._buf[pos]  # type: ignore[no-any-return]

    def _take_buffered(self) -> list[T]:
        """The items of the current chunk not handed out yet (emptying the buffer)."""
        out = self._buf[self._pos :] if self._pos else self._buf
        self._buf, self._pos = [], 0
        return out
