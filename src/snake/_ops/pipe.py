"""``pipe(fn)``: a stage made of the user's generator over the stage's input.

``fn`` gets an iterator of the stage's input items and gives its output items.

- **Sync** (``fn(items)`` returns an iterable): it runs in one worker thread of its
  own (``trio.to_thread``, a private limiter of one), off the event loop. Items cross
  to the thread and back in chunks: when its input iterator has handed out the chunk it
  holds, the thread hands back the outputs made so far and takes the next input chunk,
  in one round trip to the event loop (with every other chunk that is ready, up to
  ``_GATHER`` items); outputs also go back on a trip of their own when more than that
  and a chunk have piled up. A cancelled stage waits for the thread, which stops at its next round
  trip: the generator gets ``GeneratorExit`` where it waits (in ``next(items)`` or at a
  ``yield``), so its ``finally`` blocks run, in its thread.
- **Async** (an async generator function over an async iterator): it runs in the
  stage's task; cancelled, the generator is closed with ``aclose()``.

Checkpoints (see ``resume.py``). The stage keeps a *ledger* of points ``(o, c,
state)``: its generator had given ``o`` outputs and taken ``c`` inputs, and ``state``
(or nothing) is what a fresh one needs to go on from there. To give its outputs from
``r`` on, it resumes at input ``c`` of the newest point with ``o <= r``, with that
state, and drops its first ``r - o`` outputs. A plain generator has one point, its
start: a resumed stage runs it again over its input from the start of the epoch (the
stages before it run again too) and drops the outputs the consumer had. A ``fn`` with
``state_dict()`` and ``load_state_dict(state)`` adds a point each time its input
iterator is about to take more input (between two inputs: a trip's worth, up to
``_GATHER`` items, for a sync one), so a resume reruns only the input since then.
"""

from __future__ import annotations

import bisect
import copy
import functools
import inspect
import operator
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._engine.chan import Chunk, Inbox, Outbox
from .._engine.resume import Cut, Resumable
from .._engine.spec import Fused, TaskSpec
from .._engine.util import CHUNK_CAP, add_note, describe_callable, spawn

if TYPE_CHECKING:
    from .._engine.context import Context
    from .._engine.stats import StageCounters


#: Items of input a sync ``pipe`` takes on one trip, when more than a chunk is ready.
_GATHER = 4 * CHUNK_CAP


def _target(fn: object) -> object:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def check_pipe(fn: object) -> tuple[bool, bool]:
    """``(is_async, stateful)`` for ``pipe(fn)``, or the ``TypeError`` that quotes ``fn``."""
    if not callable(fn):
        raise TypeError(f"pipe: fn={fn!r} is not callable")
    target = _target(fn)
    call = (
        target
        if inspect.isfunction(target) or inspect.ismethod(target)
        else getattr(type(target), "__call__", None)
    )
    if isinstance(target, type):
        call = None  # a class whose instances iterate: sync
    is_async = inspect.isasyncgenfunction(target) or inspect.isasyncgenfunction(call)
    if not is_async and (inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(call)):
        raise TypeError(
            f"pipe: {describe_callable(fn)} is an async function that is not a generator; pipe needs a "
            "generator function (def ... yield) or an async generator function (async def ... yield)"
        )
    if isinstance(fn, type):
        return is_async, False
    has_save = callable(getattr(fn, "state_dict", None))
    has_load = callable(getattr(fn, "load_state_dict", None))
    if has_save != has_load:
        have, lack = ("state_dict", "load_state_dict") if has_save else ("load_state_dict", "state_dict")
        name = describe_callable(type(fn))
        raise TypeError(f"pipe: fn={name} has {have}() but no {lack}(); give it both, or neither")
    if has_save:
        try:
            copy.deepcopy(fn)
        except Exception as exc:
            raise TypeError(
                f"pipe: fn={describe_callable(type(fn))} has state_dict() and load_state_dict(), so every run works "
                f"on a copy of it, and copy.deepcopy() failed ({type(exc).__name__}: {exc})"
            ) from None
    return is_async, has_save


class _PipeResume(Resumable):
    """The checkpoint side of a ``pipe`` stage run: the ledger of the module docstring."""

    __slots__ = ("ledger", "outs")

    passes_refill = False
    replays = True

    def __init__(self) -> None:
        #: ``(o, c, state)`` points, ascending, from the newest one at or before the
        #: consumer's position on.
        self.ledger: list[tuple[int, int, Any]] = [(0, 0, None)]
        #: The ``o`` of each point, for bisecting.
        self.outs: list[int] = [0]

    def reset(self, o: int, c: int, state: Any) -> None:
        """A resumed run starts at the point ``(o, c, state)``."""
        self.ledger = [(o, c, state)]
        self.outs = [o]

    def add(self, o: int, c: int, state: Any) -> None:
        self.ledger.append((o, c, state))
        self.outs.append(o)

    def _at(self, r: int) -> int:
        return max(0, bisect.bisect_right(self.outs, r) - 1)

    def cut(self, r: int) -> Cut:
        o, c, state = self.ledger[self._at(r)]
        out: dict[str, Any] = {}
        if r > o:
            out["discard"] = r - o
        if state is not None:
            out["state"] = state
        return Cut(c, out)

    def prune(self, r: int) -> None:
        k = self._at(r)
        if k:
            del self.ledger[:k]
            del self.outs[:k]


@attrs.frozen
class Pipe(TaskSpec):
    """``pipe(fn)``; ``is_async`` and ``stateful`` as :func:`check_pipe` found them."""

    fn: Callable[[Any], Any]
    is_async: bool = False
    stateful: bool = False

    def describe(self) -> str:
        fn = self.fn
        if self.stateful:  # an object: by its class's name
            return f"pipe({describe_callable(type(fn))})"
        return f"pipe({describe_callable(fn)})"

    async def run(
        self, ctx: Context, label: str, inbox: Inbox, fused: Fused, send: trio.MemorySendChannel[Chunk]
    ) -> None:
        res = _PipeResume()
        entry = ctx.resumable(label, res)
        counters = ctx.counters(label)
        outbox = Outbox(send, cap=fused.outbox_cap())
        counters.outbox = outbox
        run = _Run(self, label, inbox, fused, outbox, counters, res)
        if entry is not None:
            run.restore(entry)
        try:
            async with trio.open_nursery() as nursery:
                spawn(nursery, outbox.run, nursery.cancel_scope)
                with run.stop:
                    if self.is_async:
                        await run.drive_async()
                    else:
                        await run.drive_thread()
                outbox.put(fused.flush())
                outbox.close()
        finally:
            outbox.discard()


class _Run:
    """One run of a ``pipe`` stage: the trio side, and the driver of the generator."""

    def __init__(
        self,
        spec: Pipe,
        label: str,
        inbox: Inbox,
        fused: Fused,
        outbox: Outbox,
        counters: StageCounters,
        res: _PipeResume,
    ) -> None:
        self.spec = spec
        self.label = label
        self.inbox = inbox
        self.fused = fused
        self.outbox = outbox
        self.counters = counters
        self.res = res
        #: Stopped cleanly once a ``take()`` after it has what it needs.
        self.stop = trio.CancelScope()
        #: Where this run starts: its first output and input numbers, the state to load,
        #: and the outputs to drop (the consumer had them).
        self.base_o = 0
        self.base_c = 0
        self.state: Any = None
        self.discard = 0
        #: Inputs handed to the generator (whole chunks), and the chunk it takes from.
        self.handed = 0
        self.chunk: Chunk = []
        self.it: Iterator[Any] = iter(())
        #: Outputs the generator gave (those dropped included) and those waiting to go.
        self.produced = 0
        self.out: Chunk = []
        #: Sync: input chunks that are ready go to the thread together (up to ``_GATHER``).
        self.gather = not spec.is_async
        #: Sync: what stopped the thread's trip to the event loop (see ``_inputs``).
        self.failed: BaseException | None = None

    def restore(self, entry: dict[str, Any]) -> None:
        self.discard = int(entry.get("discard", 0))
        self.base_c = int(entry["resume"])
        self.base_o = int(entry["at"]) - self.discard
        self.state = entry.get("state")
        self.res.reset(self.base_o, self.base_c, self.state)

    # -- shared --------------------------------------------------------------------------
    def taken(self) -> int | None:
        """The number of the last input the generator took (for error notes)."""
        n = self.handed - operator.length_hint(self.it)
        return self.base_c + n - 1 if n else None

    def open_fn(self) -> Callable[[Any], Any]:
        """The callable this run calls: ``fn``, or a copy with the checkpoint's state."""
        fn = self.spec.fn
        if not self.spec.stateful:
            return fn
        fn = copy.deepcopy(fn)
        if self.state is not None:
            fn.load_state_dict(copy.deepcopy(self.state))  # type: ignore[attr-defined]
        return fn

    def snapshot(self, fn: Any) -> Any:
        """The state of a stateful ``fn`` between two inputs (a copy: it goes on changing)."""
        return copy.deepcopy(fn.state_dict()) if self.spec.stateful else None

    def note(self, point: tuple[int, Any] | None) -> None:
        """Record a ledger point: ``(produced, state)`` when every input handed was taken."""
        if point is not None:
            self.res.add(self.base_o + point[0], self.base_c + self.handed, point[1])

    async def put(self, out: Chunk) -> None:
        """Hand outputs on (waits while the output buffer is full)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if not out:
            return
        await self.outbox.wait_room()
        self.counters.items_out += len(out)
        self.outbox.put(self.fused(out))
        if self.fused.done:
            self.stop.cancel()

    async def get(self, out: Chunk, point: tuple[int, Any] | None) -> Chunk | None:
        """Hand on ``out``, record ``point``, then the next input chunk (None: the end)."""
        await self.put(out)
        self.note(point)
        counters = self.counters
        t0 = time.perf_counter()
        chunk = await self.inbox.receive()
        counters.wait_up_s += time.perf_counter() - t0
        if chunk is None:
            return None
        if self.gather:
            # A trip to the thread costs far more than a chunk: take what else is ready.
            while len(chunk) < _GATHER:
                try:
                    more = self.inbox.receive_nowait()
                except trio.WouldBlock:
                    break
                if more is None:
                    break  # the next get() sees the end
                chunk = chunk + more
        counters.items_in += len(chunk)
        return chunk

    def _take(self, chunk: Chunk) -> Iterator[Any]:
        self.handed += len(chunk)
        self.chunk = chunk
        self.it = iter(chunk)
        return self.it

    # -- sync: the generator in a thread -------------------------------------------------
    async def drive_thread(self) -> None:
        limiter = trio.CapacityLimiter(1)
        try:
            cancelled = await trio.to_thread.run_sync(
                self._thread, thread_name=f"snake {self.label}", limiter=limiter
            )
        except Exception as exc:
            add_note(exc, self.label, self.taken())
            raise
        finally:
            self.chunk, self.out, self.it = [], [], iter(())
        if cancelled:
            await trio.lowlevel.checkpoint()  # raises this task's own Cancelled
            raise AssertionError("snake: pipe stopped for a cancellation that is gone")  # pragma: no cover

    def _thread(self) -> bool:
        """Run the generator to its end; True if it stopped for a cancellation."""
        fn = self.open_fn()
        gen: Any = None
        # Outputs go back with the next input trip; on a trip of their own only past what
        # a trip's input and a chunk make (a generator that gives more than it takes).
        cap = _GATHER + self.outbox.cap
        call = trio.from_thread.run
        try:
            got = fn(self._inputs(fn))
            try:
                gen = iter(got)
            except TypeError:
                raise TypeError(
                    f"pipe: {describe_callable(self.spec.fn)}(items) returned {type(got).__name__!r}, not an "
                    "iterable (an async generator function is detected by its definition: pass one, not a "
                    "function returning one)"
                ) from None
            drop = self.discard
            for y in gen:
                if drop:
                    drop -= 1
                    self.produced += 1
                    continue
                self.out.append(y)
                if len(self.out) >= cap:
                    out, self.out = self.out, []
                    self.produced += len(out)
                    call(self.put, out)
            out, self.out = self.out, []
            self.produced += len(out)
            call(self.put, out)
        except BaseException as exc:
            # What stopped it on the event loop's side (a cancellation, or an error of the
            # stages fused after it) comes first: the generator only saw GeneratorExit.
            failed = self.failed if self.failed is not None else exc
            self.failed = None
            if isinstance(failed, trio.Cancelled):
                return True
            if failed is exc:
                raise
            raise failed from None  # its context would be the GeneratorExit
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()
        return False

    def _inputs(self, fn: Any) -> Iterator[Any]:
        """The generator's input: chunks fetched from the event loop, with the outputs made
        meanwhile handed back on the same trip."""
        call = trio.from_thread.run
        while True:
            out, self.out = self.out, []
            self.produced += len(out)
            point = (self.produced, self.snapshot(fn)) if self.spec.stateful else None
            try:
                chunk = call(self.get, out, point)
            except BaseException as exc:
                # Cancelled, or a stage fused after this one failed: not the generator's
                # business. It is closed, as close() would (its finally blocks run).
                self.failed = exc
                raise GeneratorExit from None
            if chunk is None:
                return
            yield from self._take(chunk)

    # -- async: the generator in the stage's task ----------------------------------------
    async def drive_async(self) -> None:
        fn = self.open_fn()
        try:
            got = fn(_AsyncInputs(self, fn))
            if not hasattr(got, "__aiter__"):
                raise TypeError(
                    f"pipe: {describe_callable(self.spec.fn)}(items) returned {type(got).__name__!r}, not an "
                    "async iterable"
                )
            agen = got.__aiter__()
            if hasattr(agen, "aclose"):
                async with aclosing(agen):
                    await self._pump(agen)
            else:
                await self._pump(agen)
        except Exception as exc:
            add_note(exc, self.label, self.taken())
            raise
        finally:
            self.chunk, self.out, self.it = [], [], iter(())

    async def _pump(self, agen: AsyncIterator[Any]) -> None:
        # Outputs wait in ``out`` while the stage's output buffer is not empty (its sender
        # has not run yet): they go with the next input fetch, at a chunk's worth, or as
        # soon as the buffer is empty, so that the stage never sits on them while the next
        # stage waits.
        outbox = self.outbox
        cap = outbox.cap
        async for y in agen:
            self.produced += 1
            if self.discard:
                self.discard -= 1
                continue
            out = self.out
            out.append(y)
            if len(out) >= cap or not len(outbox):
                self.out = []
                await self.put(out)
        out, self.out = self.out, []
        await self.put(out)


class _AsyncInputs:
    """The async iterator an async ``pipe`` generator takes its input from."""

    __slots__ = ("fn", "run")

    def __init__(self, run: _Run, fn: Any) -> None:
        self.run = run
        self.fn = fn

    def __aiter__(self) -> _AsyncInputs:
        return self

    async def __anext__(self) -> Any:
        run = self.run
        while True:
            try:
                return next(run.it)
            except StopIteration:
                pass
            out, run.out = run.out, []
            point = (run.produced, run.snapshot(self.fn)) if run.spec.stateful else None
            chunk = await run.get(out, point)
            if chunk is None:
                raise StopAsyncIteration
            run._take(chunk)
