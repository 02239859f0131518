"""Per-batch hand-off cost into the consumer: open(), open_sync(), snake.aio, and a plain
queue.Queue between two threads, measured in the same run.

    python bench/handoff.py           # 100,000 batches in bulk, 400 paced, best of 5
    python bench/handoff.py --quick   # 5,000 in bulk, 50 paced, once (the tests run this)

What is measured, for every consumer:

- bulk: batches that are all ready (a source over a list of arrays) go into the
  consumer's loop, which looks at each one; the time per batch. snake moves them in
  chunks, the queue.Queue baseline one by one (a producer thread puts, the consumer
  thread gets). "snake.aio chunks" reads them with receive_chunk() instead of async for.
- latency: one batch every millisecond (the consumer is always waiting); the median
  time from the moment a batch is made to the moment the consumer's loop holds it.
- start: the median time to open, read and close a one-item pipeline (for snake.aio:
  starting and stopping its trio guest run; "warm": while another pipeline keeps it up).
- engine (asyncio consumers and open()): items/s of a par_then and of a map pipeline,
  and the median lag of a 1 ms asyncio timer meanwhile (how long stage code holds the loop).

Besides snake.aio (trio in guest mode on the asyncio loop), the asyncio consumer is
also measured with the alternative that snake.aio does not use: trio in a helper
thread per pipeline, chunks handed to the loop with call_soon_threadsafe (the
``ThreadBridge`` below, with open_sync()'s bounded hand-off). Times and rates are the
best of the repeats, the consumers taking turns. docs/asyncio.md quotes these figures.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import trio
from _common import best_of, parser, write

import snake
import snake.aio

#: Batches the helper-thread hand-off holds, as open_sync()'s does.
_HANDOFF = 8
_PACE_S = 0.001


# -- the alternative to guest mode: trio in a helper thread -------------------------------------
class ThreadBridge:
    """``trio.run`` in a helper thread; chunks go to the asyncio loop through a bounded deque
    and ``loop.call_soon_threadsafe`` (a minimal, fair version of what snake.aio could be)."""

    def __init__(self, stream: snake.Stream[Any], loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop
        self._lock = threading.Lock()
        self._chunks: deque[list[Any]] = deque()
        self._finished = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._room: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=self._thread_main, daemon=True)

    def _thread_main(self) -> None:
        try:
            trio.run(self._trio_main)
        except BaseException as exc:
            self._error = exc
        finally:
            with self._lock:
                self._finished = True
            self._loop.call_soon_threadsafe(self._wake)

    async def _trio_main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._scope:
            async with self._stream.open() as items:
                while (chunk := await items.receive_chunk()) is not None:
                    while True:
                        with self._lock:
                            if len(self._chunks) < _HANDOFF:
                                self._chunks.append(chunk)
                                wake = self._waiter is not None
                                break
                            room = self._room = trio.Event()
                        await room.wait()
                    if wake:
                        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def chunks(self) -> AsyncIterator[list[Any]]:
        self._thread.start()
        try:
            while True:
                with self._lock:
                    if self._chunks:
                        chunk = self._chunks.popleft()
                        room = self._room if len(self._chunks) <= 2 else None
                        if room is not None:
                            self._room = None
                    elif self._finished:
                        break
                    else:
                        self._waiter = self._loop.create_future()
                        chunk, room = [], None
                if room is not None and self._token is not None:
                    self._token.run_sync_soon(room.set)
                if chunk:
                    yield chunk
                elif self._waiter is not None:
                    await self._waiter
        finally:
            if self._token is not None and self._scope is not None and self._thread.is_alive():
                try:
                    self._token.run_sync_soon(self._scope.cancel)
                except trio.RunFinishedError:
                    pass
            await asyncio.to_thread(self._thread.join)
        if self._error is not None:
            raise self._error


# -- consumers: each counts the items of make() that are ``mark``, one by one ------------------
Consume = Callable[[Callable[[], snake.Stream[Any]], object], int]


def consume_open(make: Callable[[], snake.Stream[Any]], mark: object) -> int:
    async def main() -> int:
        n = 0
        async with make().open() as items:
            async for x in items:
                n += x is mark
        return n

    return trio.run(main)


def consume_open_sync(make: Callable[[], snake.Stream[Any]], mark: object) -> int:
    n = 0
    with make().open_sync() as items:
        for x in items:
            n += x is mark
    return n


def consume_aio(make: Callable[[], snake.Stream[Any]], mark: object) -> int:
    async def main() -> int:
        n = 0
        async with snake.aio.open(make()) as items:
            async for x in items:
                n += x is mark
        return n

    return asyncio.run(main())


def consume_aio_chunks(make: Callable[[], snake.Stream[Any]], mark: object) -> int:
    async def main() -> int:
        n = 0
        async with snake.aio.open(make()) as items:
            while (chunk := await items.receive_chunk()) is not None:
                for x in chunk:
                    n += x is mark
        return n

    return asyncio.run(main())


def consume_thread_bridge(make: Callable[[], snake.Stream[Any]], mark: object) -> int:
    async def main() -> int:
        n = 0
        async for chunk in ThreadBridge(make(), asyncio.get_running_loop()).chunks():
            for x in chunk:
                n += x is mark
        return n

    return asyncio.run(main())


#: The consumers that latency and start-up are measured for.
LOOPS = ("open()", "open_sync()", "snake.aio", "asyncio+thread")

CONSUMERS: dict[str, Consume] = {
    "open()": consume_open,
    "open_sync()": consume_open_sync,
    "snake.aio": consume_aio,
    "snake.aio chunks": consume_aio_chunks,
    "asyncio+thread": consume_thread_bridge,
}


# -- the queue.Queue baseline ----------------------------------------------------------------------
def queue_bulk(batches: list[Any], mark: object) -> int:
    q: queue.Queue[Any] = queue.Queue(maxsize=64)
    end = object()

    def produce() -> None:
        for b in batches:
            q.put(b)
        q.put(end)

    t = threading.Thread(target=produce)
    t.start()
    n = 0
    while (x := q.get()) is not end:
        n += x is mark
    t.join()
    return n


def queue_latency(n: int) -> list[float]:
    q: queue.Queue[Any] = queue.Queue(maxsize=64)

    def produce() -> None:
        for _ in range(n):
            time.sleep(_PACE_S)
            q.put(time.perf_counter())
        q.put(None)

    t = threading.Thread(target=produce)
    t.start()
    lat = []
    while (stamp := q.get()) is not None:
        lat.append(time.perf_counter() - stamp)
    t.join()
    return lat


def paced_stream(n: int) -> snake.Stream[float]:
    async def gen() -> AsyncIterator[float]:
        for _ in range(n):
            await trio.sleep(_PACE_S)
            yield time.perf_counter()

    return snake.from_async_iterable(gen)


def measure_latency(name: str, n: int) -> list[float]:
    lat: list[float] = []
    if name == "open()":

        async def main_trio() -> None:
            async with paced_stream(n).open() as items:
                async for stamp in items:
                    lat.append(time.perf_counter() - stamp)

        trio.run(main_trio)
    elif name == "open_sync()":
        with paced_stream(n).open_sync() as items:
            for stamp in items:
                lat.append(time.perf_counter() - stamp)
    elif name == "snake.aio":

        async def main_aio() -> None:
            async with snake.aio.open(paced_stream(n)) as items:
                async for stamp in items:
                    lat.append(time.perf_counter() - stamp)

        asyncio.run(main_aio())
    else:

        async def main_thread() -> None:
            async for chunk in ThreadBridge(paced_stream(n), asyncio.get_running_loop()).chunks():
                now = time.perf_counter()
                lat.extend(now - stamp for stamp in chunk)

        asyncio.run(main_thread())
    assert len(lat) == n, (name, len(lat))
    return lat


def measure_start(name: str, n: int) -> float:
    """Median seconds to open, read and close a one-item pipeline, over ``n`` times.
    ``snake.aio warm``: while another pipeline keeps the loop's trio runtime running."""
    one = snake.from_iterable([1])
    took: list[float] = []
    if name == "open()":

        async def main_trio() -> None:
            for _ in range(n):
                t0 = time.perf_counter()
                async with one.open() as items:
                    assert [x async for x in items] == [1]
                took.append(time.perf_counter() - t0)

        trio.run(main_trio)
    elif name == "open_sync()":
        for _ in range(n):
            t0 = time.perf_counter()
            with one.open_sync() as items:
                assert list(items) == [1]
            took.append(time.perf_counter() - t0)
    else:

        async def opens() -> None:
            for _ in range(n):
                t0 = time.perf_counter()
                if name.startswith("snake.aio"):
                    async with snake.aio.open(one) as items:
                        assert [x async for x in items] == [1]
                else:
                    assert [c async for c in ThreadBridge(one, asyncio.get_running_loop()).chunks()] == [[1]]
                took.append(time.perf_counter() - t0)

        async def main_aio() -> None:
            if name != "snake.aio warm":
                await opens()
                return
            async with snake.aio.open(snake.from_iterable(itertools.count())):
                await opens()

        asyncio.run(main_aio())
    return statistics.median(took)


def work(x: int) -> int:
    """About 10 us of pure Python: an inline stage that holds the GIL."""
    s = 0
    for i in range(200):
        s += i
    return x + s - s


async def trivial(x: int) -> int:
    return x


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(_PACE_S)
        lags.append(time.perf_counter() - t - _PACE_S)


def measure_engine(name: str, make: Callable[[], snake.Stream[Any]]) -> tuple[float, float]:
    """(items/s, median lag of a 1 ms asyncio timer meanwhile; 0 for open()) of ``make()``."""
    if name == "open()":

        async def native() -> float:
            t0 = time.perf_counter()
            n = 0
            async with make().open() as items:
                while (chunk := await items.receive_chunk()) is not None:
                    n += len(chunk)
            return n / (time.perf_counter() - t0)

        return trio.run(native), 0.0

    async def main() -> tuple[float, float]:
        lags: list[float] = []
        stop = asyncio.Event()
        ticker = asyncio.create_task(_ticker(lags, stop))
        await asyncio.sleep(0.01)
        lags.clear()
        t0 = time.perf_counter()
        n = 0
        if name == "snake.aio":
            async with snake.aio.open(make()) as items:
                while (chunk := await items.receive_chunk()) is not None:
                    n += len(chunk)
        else:
            async for chunk in ThreadBridge(make(), asyncio.get_running_loop()).chunks():
                n += len(chunk)
        took = time.perf_counter() - t0
        stop.set()
        await ticker
        return n / took, statistics.median(lags)

    return asyncio.run(main())


def interleaved(repeats: int, names: list[str], run: Callable[[str], float]) -> dict[str, float]:
    """The smallest of ``repeats`` values of ``run(name)`` per name, the names taking turns
    (so that a busy moment of the machine does not fall on one name only)."""
    best = dict.fromkeys(names, float("inf"))
    for _ in range(repeats):
        for name in names:
            best[name] = min(best[name], run(name))
    return best


def main() -> int:
    args = parser(__doc__ or "").parse_args()
    n_bulk = 5_000 if args.quick else 100_000
    n_paced = 50 if args.quick else 400
    n_start = 20 if args.quick else 200
    n_engine = 2_000 if args.quick else 50_000
    repeats = 1 if args.quick else 5
    batch = np.zeros((32, 64), dtype=np.float32)
    batches = [batch] * n_bulk

    def make() -> snake.Stream[Any]:
        return snake.from_iterable(batches)

    for name, consume in CONSUMERS.items():
        assert consume(make, batch) == n_bulk, name
    assert queue_bulk(batches, batch) == n_bulk

    def bulk_run(name: str) -> float:
        if name == "queue.Queue":
            return best_of(1, lambda: queue_bulk(batches, batch)) / n_bulk
        return best_of(1, lambda: CONSUMERS[name](make, batch)) / n_bulk

    bulk = interleaved(repeats, ["queue.Queue", *CONSUMERS], bulk_run)

    lat = {"queue.Queue": statistics.median(queue_latency(n_paced))}
    for name in LOOPS:
        lat[name] = statistics.median(measure_latency(name, n_paced))

    start = {name: measure_start(name, n_start) for name in [*LOOPS, "snake.aio warm"]}

    engines: dict[str, Callable[[], snake.Stream[Any]]] = {
        "par_then(trivial, limit=16)": lambda: snake.from_iterable(range(n_engine)).par_then(
            trivial, limit=16
        ),
        "map(work)": lambda: snake.from_iterable(range(n_engine // 5)).map(work),
    }
    engine: dict[str, dict[str, float]] = {}
    for label, mk in engines.items():
        lags: dict[str, list[float]] = {"snake.aio": [], "asyncio+thread": []}

        def engine_run(
            name: str, mk: Callable[[], snake.Stream[Any]] = mk, lags: dict[str, list[float]] = lags
        ) -> float:
            rate, lag = measure_engine(name, mk)
            if name in lags:
                lags[name].append(lag)
            return -rate  # interleaved() keeps the smallest: the best rate

        best = interleaved(repeats, ["open()", "snake.aio", "asyncio+thread"], engine_run)
        engine[label] = {f"{name}_items_per_s": -v for name, v in best.items()}
        for name, values in lags.items():
            engine[label][f"{name}_loop_lag_s"] = statistics.median(values)

    print(
        f"bulk: {n_bulk:,} ready batches of {batch.shape} {batch.dtype}, time per batch (best of {repeats})"
    )
    for name, s in bulk.items():
        print(f"  {name:16s} {s * 1e6:9.3f} us  {s / bulk['queue.Queue']:6.3f}x queue.Queue")
    print(f"latency: one batch every {_PACE_S * 1e3:g} ms, median from made to received ({n_paced} batches)")
    for name, s in lat.items():
        print(f"  {name:16s} {s * 1e6:9.1f} us  {s / lat['queue.Queue']:6.3f}x queue.Queue")
    print(f"start: open, read one item, close (median of {n_start})")
    for name, s in start.items():
        print(f"  {name:16s} {s * 1e6:9.1f} us")
    print("engine: items/s through an asyncio consumer, and the median lag of a 1 ms asyncio timer meanwhile")
    for label, e in engine.items():
        print(f"  {label}: open() {e['open()_items_per_s']:,.0f}/s")
        for name in ("snake.aio", "asyncio+thread"):
            print(
                f"    {name:16s} {e[name + '_items_per_s']:10,.0f}/s "
                f"({e[name + '_items_per_s'] / e['open()_items_per_s']:.2f}x open()), "
                f"loop lag {e[name + '_loop_lag_s'] * 1e3:.2f} ms"
            )
    print(
        f"snake.aio / asyncio+thread: bulk {bulk['snake.aio chunks'] / bulk['asyncio+thread']:.3f}x, "
        f"latency {lat['snake.aio'] / lat['asyncio+thread']:.3f}x, "
        f"start {start['snake.aio'] / start['asyncio+thread']:.3f}x "
        f"(warm {start['snake.aio warm'] / start['asyncio+thread']:.3f}x)"
    )

    results = {
        "bulk_batches": n_bulk,
        "paced_batches": n_paced,
        "bulk_s_per_batch": bulk,
        "bulk_ratio_to_queue": {k: v / bulk["queue.Queue"] for k, v in bulk.items()},
        "latency_median_s": lat,
        "latency_ratio_to_queue": {k: v / lat["queue.Queue"] for k, v in lat.items()},
        "start_s": start,
        "engine_items": n_engine,
        "engine": engine,
    }
    write("handoff", results, args.json)
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"({time.perf_counter() - t0:.1f} s)")
    sys.exit(rc)
