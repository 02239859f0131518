"""Chunked transport between stages.

Stages exchange *chunks* (lists of items) over bounded trio memory channels.
A producer that can outrun its consumer hands its items to an :class:`Outbox`:
a small buffer drained by a sender task, which sends *whatever has piled up*
each time the downstream can take it. A fast stream therefore moves large
chunks and a slow stream moves single items, with no timer involved.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from .util import CHUNK_CAP

Chunk = list[Any]

#: Chunks a channel between two stages holds (besides the one in transit).
CHANNEL_CHUNKS = 1


class _End(list[Any]):
    """The type of :data:`END`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


#: Sent by a stage that finished cleanly, just before it closes its channel. A
#: channel that closes *without* it belongs to a stage that failed or was
#: cancelled: its receiver waits for the pipeline's cancellation instead of
#: mistaking the failure for a clean end of the stream.
END: Chunk = _End()


class Inbox:
    """The receiving end of a stage: chunks, then ``None`` after a clean end."""

    __slots__ = ("_recv", "ended")

    def __init__(self, recv: trio.MemoryReceiveChannel[Chunk]) -> None:
        self._recv = recv
        #: True once the upstream stage's END marker has arrived.
        self.ended = False

    async def receive(self) -> Chunk | None:
        """The next chunk, or ``None`` once the upstream finished cleanly."""
        if self.ended:
            await trio.lowlevel.checkpoint()
            return None
        try:
            chunk = await self._recv.receive()
        except trio.EndOfChannel:
            # The upstream stage failed or was cancelled without END: the pipeline
            # is being cancelled, and this task with it. Never report a clean end.
            await trio.sleep_forever()
        if chunk is END:
            self.ended = True
            return None
        return chunk

    def receive_nowait(self) -> Chunk | None:
        """A ready chunk, ``None`` at a clean end; ``trio.WouldBlock`` if none is ready."""
        if self.ended:
            return None
        try:
            chunk = self._recv.receive_nowait()
        except trio.EndOfChannel:
            raise trio.WouldBlock from None
        if chunk is END:
            self.ended = True
            return None
        return chunk

    def close(self) -> None:
        self._recv.close()


def open_chunk_channel() -> tuple[trio.MemorySendChannel[Chunk], trio.MemoryReceiveChannel[Chunk]]:
    """The bounded channel between two stages; it carries chunks, never single items."""
    return trio.open_memory_channel[Chunk](CHANNEL_CHUNKS)


class Outbox:
    """A bounded buffer of produced items, drained by :meth:`run` into a channel."""

    __slots__ = (
        "_blocked_since",
        "_buf",
        "_closed",
        "_producers_parked",
        "_send",
        "_sender_parked",
        "_wake_producers",
        "_wake_sender",
        "blocked_s",
        "cap",
        "gone",
        "last_sent",
        "sending",
    )

    def __init__(self, send: trio.MemorySendChannel[Chunk], cap: int = CHUNK_CAP) -> None:
        self._send = send
        self._buf: Chunk = []
        self.cap = cap
        self._closed = False
        #: True once the downstream stage has gone away.
        self.gone = False
        # Waking a parking lot costs ~2 us even when nobody waits: track who does.
        self._wake_sender = trio.lowlevel.ParkingLot()
        self._sender_parked = False
        self._wake_producers = trio.lowlevel.ParkingLot()
        self._producers_parked = 0
        #: Seconds during which at least one producer waited for room (statistics).
        self.blocked_s = 0.0
        self._blocked_since = 0.0
        #: Items in the chunk being sent, and in the last chunk sent (statistics).
        self.sending = 0
        self.last_sent = 0

    def __len__(self) -> int:
        return len(self._buf)

    def discard(self) -> None:
        """Drop what is still buffered (the stage has ended; nothing will send it)."""
        self._buf = []

    def put(self, chunk: Chunk) -> None:
        """Append items (never blocks; call :meth:`wait_room` before producing)."""
        if chunk:
            if self._buf:
                self._buf.extend(chunk)
            else:
                self._buf = chunk
            if self._sender_parked:
                self._wake_sender.unpark_all()

    async def wait_room(self) -> None:
        """Block while the buffer holds a full chunk that the downstream has not taken."""
        while len(self._buf) >= self.cap and not self.gone:
            if not self._producers_parked:
                self._blocked_since = time.perf_counter()
            self._producers_parked += 1
            try:
                await self._wake_producers.park()
            finally:
                self._producers_parked -= 1
                if not self._producers_parked:
                    self.blocked_s += time.perf_counter() - self._blocked_since

    def blocked(self, now: float) -> float:
        """Seconds producers have waited for room so far (counting a wait in progress)."""
        if self._producers_parked:
            return self.blocked_s + now - self._blocked_since
        return self.blocked_s

    def held(self) -> int:
        """Items produced and not yet received downstream: the buffer, the chunk being
        sent, and the last chunk sent if it still sits in the channel."""
        n = len(self._buf) + self.sending
        if self.last_sent and self._send.statistics().current_buffer_used:
            n += self.last_sent
        return n

    def close(self) -> None:
        """No more items: the sender sends what is left and closes the channel."""
        self._closed = True
        self._wake_sender.unpark_all()

    async def run(self, cancel_producers: trio.CancelScope) -> None:
        """The sender task. If the downstream goes away, cancel the producers."""
        with self._send:
            while True:
                while not self._buf and not self._closed:
                    self._sender_parked = True
                    try:
                        await self._wake_sender.park()
                    finally:
                        self._sender_parked = False
                if not self._buf:
                    try:
                        await self._send.send(END)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    return
                chunk, self._buf = self._buf, []
                if self._producers_parked:
                    self._wake_producers.unpark_all()
                self.sending = len(chunk)
                try:
                    await self._send.send(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.sending = 0
                    self.gone = True
                    self._wake_producers.unpark_all()
                    cancel_producers.cancel()
                    return
                self.last_sent, self.sending = self.sending, 0
