"""Large arrays from worker processes, batched: snake against the loaders users would pick.

Every runner does the same work: item ``i`` of ``range(n)`` is built in one of 2 worker
processes as ``np.full((3, 512, 512), i, float32)`` (3 MiB, as ``bench/arrays.py``
builds it), and the main process receives batches of 32 stacked items, a
``(32, 3, 512, 512)`` array (a tensor for torch). The figure is array bytes delivered /
wall time from the start of the run to the last batch, worker start-up included (their
shutdown after the last batch is not): each round starts its workers again, except
where a loader keeps them on purpose (snake's process-wide cache of idle workers,
torch's ``persistent_workers=True``), whose later rounds find them warm. "main CPU s"
is the CPU time of the main process (all its threads) over the same span.

Every batch is checked: its shape, dtype, and each item's first and last element, which
must both be the item's index; at the end, the indices seen must be ``range(n)`` exactly
(the loaders that do not keep the order are checked as a set).

Runners:

- ``snake``: ``from_iterable(range(n)).par_map(build, workers=2).batch(32)``, ``async for``
  under ``trio.run`` (workers from snake's cache after the first round);
- ``snake (for)``: the same stream through ``with stream.open_sync() as items: for ...``;
- ``snake (new WorkerPool)``: the same with ``pool=WorkerPool(2)`` made and closed each
  round, so every round starts its workers (forked from snake's launcher);
- ``torch DataLoader``: a map-style ``Dataset`` returning the NumPy array,
  ``DataLoader(ds, batch_size=32, num_workers=2)`` with the defaults a user writes
  (``pin_memory=False``, ``persistent_workers=False``), default collate, a new loader each round;
- ``torch DataLoader (persistent_workers)``: one loader made once with
  ``persistent_workers=True`` and iterated each round (its first round starts the workers);
- ``tinypl``: ``pl.process.map(range(n), build, workers=2)``, ``pl.partition(..., 32)``,
  ``np.stack`` (results pickled through multiprocessing queues; unordered);
- ``squirrel``: ``IterableSource(range(n)).async_map(build, executor=ProcessPoolExecutor(2))
  .batched(32, np.stack)``;
- ``SPDL``: ``PipelineBuilder`` with a ``pipe(build, executor=ProcessPoolExecutor(2),
  concurrency=2, output_order="input")`` stage, ``aggregate(32)``, ``pipe(np.stack)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from _driver import Figure, lazy, need

TITLE = "arrays: 256 x 3 MiB float32 built in 2 worker processes, batched by 32"
UNIT = "GB/s"
BETTER = "higher"

SHAPE = (3, 512, 512)
BATCH = 32
WORKERS = 2


def build(i: int) -> np.ndarray[Any, Any]:
    """The item function of every runner (module level: the workers import it)."""
    return np.full(SHAPE, i, dtype=np.float32)


class Checker:
    """Checks each batch and the indices delivered; ``figure()`` gives the runner's result."""

    def __init__(self, n: int, ordered: bool = True) -> None:
        self.n = n
        self.ordered = ordered
        self.seen: list[int] = []
        self.batches = 0
        self.t0 = self.t_last = time.perf_counter()
        self.cpu0 = self.cpu_last = time.process_time()

    def add(self, b: Any) -> None:
        a = b.numpy() if hasattr(b, "numpy") else b
        assert isinstance(a, np.ndarray), type(b)
        assert a.dtype == np.float32 and a.shape[1:] == SHAPE, (a.dtype, a.shape)
        assert 0 < len(a) <= BATCH, len(a)
        first = a[:, 0, 0, 0]
        last = a[:, -1, -1, -1]
        assert np.array_equal(first, last), (first, last)
        self.seen.extend(int(v) for v in first)
        self.batches += 1
        self.t_last = time.perf_counter()  # the figure ends at the last batch (shutdown not counted)
        self.cpu_last = time.process_time()

    def figure(self) -> Figure:
        wall = self.t_last - self.t0
        cpu = self.cpu_last - self.cpu0
        got = self.seen if self.ordered else sorted(self.seen)
        assert got == list(range(self.n)), f"indices delivered: {got[:8]}... ({len(got)} of {self.n})"
        assert self.batches == -(-self.n // BATCH), self.batches
        nbytes = self.n * int(np.prod(SHAPE)) * 4
        return nbytes / wall / 1e9, {"main CPU s": cpu}


# -- snake ------------------------------------------------------------------------------


def snake_stream(n: int, pool: Any = None) -> Any:
    import snake

    kw = {"pool": pool} if pool is not None else {"workers": WORKERS}
    return snake.from_iterable(range(n)).par_map(build, **kw).batch(BATCH)


def run_snake(n: int) -> Figure:
    import trio

    async def main() -> Figure:
        c = Checker(n)
        async with snake_stream(n).open() as batches:
            async for b in batches:
                c.add(b)
        return c.figure()

    return trio.run(main)


def run_snake_for(n: int) -> Figure:
    c = Checker(n)
    with snake_stream(n).open_sync() as batches:
        for b in batches:
            c.add(b)
    return c.figure()


def run_snake_pool(n: int) -> Figure:
    import trio

    import snake

    async def main() -> Figure:
        c = Checker(n)
        with snake.WorkerPool(WORKERS) as pool:
            async with snake_stream(n, pool).open() as batches:
                async for b in batches:
                    c.add(b)
            result = c.figure()
        return result

    return trio.run(main)


# -- torch ------------------------------------------------------------------------------


class BuildDataset:
    """A map-style torch Dataset (``__len__`` and ``__getitem__``) of ``build(i)``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray[Any, Any]:
        return build(i)


@lazy
def torch_loader() -> Callable[[], Figure]:
    torch = need("torch")

    def run(n: int) -> Figure:
        c = Checker(n)
        loader = torch.utils.data.DataLoader(BuildDataset(n), batch_size=BATCH, num_workers=WORKERS)
        for b in loader:
            c.add(b)
        del loader  # a non-persistent loader's workers have exited at the end of the pass
        return c.figure()

    return run  # type: ignore[return-value]


@lazy
def torch_persistent() -> Callable[[], Figure]:
    torch = need("torch")
    loaders: dict[int, Any] = {}

    def run(n: int) -> Figure:
        c = Checker(n)
        if n not in loaders:  # made in the first round, timed there, kept for the next
            loaders[n] = torch.utils.data.DataLoader(
                BuildDataset(n), batch_size=BATCH, num_workers=WORKERS, persistent_workers=True
            )
        for b in loaders[n]:
            c.add(b)
        return c.figure()

    return run  # type: ignore[return-value]


# -- tinypl, squirrel, SPDL -----------------------------------------------------------


@lazy
def tinypl_map() -> Callable[[], Figure]:
    pl = need("tinypl")

    def run(n: int) -> Figure:
        c = Checker(n, ordered=False)
        pipe = pl.process.map(range(n), build, workers=WORKERS)
        for group in pl.partition(pipe, BATCH):
            c.add(np.stack(group))
        return c.figure()

    return run  # type: ignore[return-value]


@lazy
def squirrel_map() -> Callable[[], Figure]:
    source = need("squirrel.iterstream", "squirrel-core")
    from concurrent.futures import ProcessPoolExecutor

    def run(n: int) -> Figure:
        c = Checker(n)
        with ProcessPoolExecutor(WORKERS) as ex:
            it = (
                source.IterableSource(range(n))
                .async_map(build, executor=ex)
                .batched(BATCH, collation_fn=np.stack, drop_last_if_not_full=False)
            )
            for b in it:
                c.add(b)
        return c.figure()

    return run  # type: ignore[return-value]


@lazy
def spdl_pipeline() -> Callable[[], Figure]:
    pipeline = need("spdl.pipeline", "spdl")
    from concurrent.futures import ProcessPoolExecutor

    def run(n: int) -> Figure:
        c = Checker(n)
        with ProcessPoolExecutor(WORKERS) as ex:
            p = (
                pipeline.PipelineBuilder()
                .add_source(range(n))
                .pipe(build, executor=ex, concurrency=WORKERS, output_order="input")
                .aggregate(BATCH)
                .pipe(np.stack)
                .add_sink(3)
                .build(num_threads=2)
            )
            with p.auto_stop():
                for b in p:
                    c.add(b)
        return c.figure()

    return run  # type: ignore[return-value]


def _bind(factory: Callable[[], Callable[[int], Figure]], n: int) -> Callable[[], Callable[[], Figure]]:
    """A lazy factory of a runner of ``n`` items."""

    def make() -> Callable[[], Figure]:
        run = factory()
        return lambda: run(n)  # type: ignore[call-arg]

    return lazy(make)


def runners(quick: bool) -> dict[str, Callable[[], Figure]]:
    n = 64 if quick else 256
    peers: Iterable[tuple[str, Any]] = [
        ("torch DataLoader", torch_loader),
        ("torch DataLoader (persistent_workers)", torch_persistent),
        ("tinypl", tinypl_map),
        ("squirrel", squirrel_map),
        ("SPDL", spdl_pipeline),
    ]
    return {
        "snake": lambda: run_snake(n),
        "snake (for)": lambda: run_snake_for(n),
        "snake (new WorkerPool)": lambda: run_snake_pool(n),
        **{name: _bind(factory, n) for name, factory in peers},  # type: ignore[dict-item]
    }
