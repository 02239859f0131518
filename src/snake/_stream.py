"""``Stream``: an immutable, lazy description of a pipeline.

Every method validates its arguments where the user calls it and returns a new
``Stream``; nothing runs until the stream is opened.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Generic, Literal, NoReturn, TypeVar, final, overload

from ._buffers.collate import check_buckets, check_collate, check_pad_value
from ._embed.sync import SyncItems, open_sync
from ._engine.epoch import check_seed
from ._engine.errors import ErrorMode, ErrorPolicy
from ._engine.run import Items, open_pipeline
from ._engine.spec import SourceSpec, Spec, chain_repr
from ._engine.util import check_bool, check_callable, check_importable, check_int, check_picklable
from ._ops.buffer import Prefetch
from ._ops.combine import Chain, Mix, Repeat, Zip
from ._ops.files import FromFiles, FromParquet, ParquetFilter, check_filters, resolve_paths
from ._ops.inline import (
    Batch,
    BucketByLength,
    CollateArg,
    Enumerate,
    Filter,
    FlatMap,
    Map,
    OnError,
    PadBatch,
    Skip,
    Take,
)
from ._ops.observe import Monitor, Progress
from ._ops.order import Shard, Shuffle, resolve_shard
from ._ops.parallel import Backend, ParMap, ParThen
from ._ops.source import FromAsyncIterable, FromIterable
from ._plan import plan
from ._workers.pool import WorkerPool, WorkerType, check_worker_type, default_workers
from ._workers.procs import preload as preload_in_workers
from ._workers.ray import check_options as check_ray_options
from ._workers.ray import check_picklable as check_ray_picklable
from ._workers.ray import need_ray

T = TypeVar("T")
U = TypeVar("U")

_ERROR_STAGES = (Map, Filter, FlatMap, ParThen, ParMap)

_BACKENDS = ("process", "thread", "ray")
_ON_ERROR_MODES = ("raise", "skip")


def _check_par_map_backend(
    fn: Callable[..., Any],
    workers: int,
    backend: str,
    worker_type: str,
    retries: int,
    timeout: float | None,
    pool: WorkerPool | None,
) -> None:
    """The checks of par_map's options that depend on one another."""
    if backend == "thread" and (retries or timeout is not None or pool is not None):
        raise ValueError(
            f'par_map: retries={retries!r}, timeout={timeout!r} and pool need backend="process" '
            "(a thread cannot crash alone or be stopped)"
        )
    if pool is not None and pool.backend != ("ray" if backend == "ray" else "process"):
        raise ValueError(
            f"par_map: backend={backend!r} does not match pool={pool!r}; "
            f"write par_map(fn, backend={pool.backend!r}, pool=pool)"
        )
    if backend == "ray":
        check_ray_picklable("par_map", fn)
        if worker_type != "auto":
            raise ValueError(f'par_map: worker_type={worker_type!r} only applies to backend="process"')
    if pool is not None:
        if workers > pool.workers:
            raise ValueError(f"par_map: workers={workers!r} is more than the pool's {pool.workers}")
        if worker_type != "auto":
            raise ValueError("par_map: worker_type is set by the pool; leave it out with pool=")
    if backend == "process":
        check_picklable("par_map", fn)
        check_importable("par_map", fn, worker_type if pool is None else pool.worker_type)
    elif worker_type != "auto":
        raise ValueError(f'par_map: worker_type={worker_type!r} only applies to backend="process"')


def _check_timeout(method: str, timeout: object, name: str = "timeout") -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{method}: {name}={timeout!r} must be a number of seconds or None")
    if not timeout > 0:
        raise ValueError(f"{method}: {name}={timeout!r} must be > 0")
    return float(timeout)


@final
class Stream(Generic[T]):
    """A pipeline description. Build it from a source, chain stages, then open it.

    ``repr(stream)`` replays the chain that built it::

        >>> snake.from_iterable(range(3)).map(str)
        from_iterable(<range len=3>).map(str)
    """

    __slots__ = ("_specs",)
    _specs: tuple[Spec, ...]

    def __init__(self, _specs: tuple[Spec, ...]) -> None:
        # Private: streams are made by the source functions and stage methods.
        if not _specs or not isinstance(_specs[0], SourceSpec):
            raise TypeError("Stream() is not built directly; start from snake.from_iterable(...)")
        object.__setattr__(self, "_specs", _specs)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Stream is immutable: every method returns a new Stream")

    def __reduce__(self) -> tuple[type[Stream[Any]], tuple[tuple[Spec, ...]]]:
        # pickle and copy rebuild the stream from its specs: their default restores the
        # slot with setattr, which an immutable Stream refuses.
        return (Stream, (self._specs,))

    def __repr__(self) -> str:
        return chain_repr(self._specs)

    def _then(self, spec: Spec) -> Stream[Any]:
        return Stream(self._specs + (spec,))

    # -- inline stages ---------------------------------------------------------------
    def map(self, fn: Callable[[T], U], /) -> Stream[U]:
        """Apply a sync ``fn`` to every item, inline (fused with adjacent inline stages)."""
        check_callable("map", fn, want_async=False)
        return self._then(Map(fn))

    def filter(self, pred: Callable[[T], object], /) -> Stream[T]:
        """Keep the items for which ``pred(item)`` is true."""
        check_callable("filter", pred, want_async=False)
        return self._then(Filter(pred))

    def flat_map(self, fn: Callable[[T], Iterable[U]], /) -> Stream[U]:
        """Replace every item by the items of the iterable ``fn(item)``."""
        check_callable("flat_map", fn, want_async=False)
        return self._then(FlatMap(fn))

    def enumerate(self) -> Stream[tuple[int, T]]:
        """Pair every item with its index: ``(0, a), (1, b), ...``."""
        return self._then(Enumerate())

    def take(self, n: int, /) -> Stream[T]:
        """The first ``n`` items; the stages before stop once they are produced."""
        return self._then(Take(check_int("take", "n", n, minimum=0)))

    def skip(self, n: int, /) -> Stream[T]:
        """Drop the first ``n`` items."""
        return self._then(Skip(check_int("skip", "n", n, minimum=0)))

    @overload
    def batch(
        self, size: int, /, *, drop_last: bool = ..., collate: Literal["default"] = ...
    ) -> Stream[Any]: ...
    @overload
    def batch(self, size: int, /, *, drop_last: bool = ..., collate: None) -> Stream[list[T]]: ...
    @overload
    def batch(self, size: int, /, *, drop_last: bool = ..., collate: Callable[[list[T]], U]) -> Stream[U]: ...
    def batch(self, size: int, /, *, drop_last: bool = False, collate: CollateArg = "default") -> Stream[Any]:
        """Group items into batches of ``size``; the last may be shorter unless ``drop_last``.

        ``collate="default"`` turns each list of items into arrays: NumPy arrays are
        stacked by ``snake.kernels.stack`` into a buffer reused once the consumer has let
        go of the batch before (and of every view of it); numbers become one array; dicts,
        tuples and lists are collated field by field; other items stay a list.
        ``collate=None`` gives plain lists; a sync function is called with each list.
        """
        size = check_int("batch", "size", size, minimum=1)
        check_bool("batch", "drop_last", drop_last)
        check_collate("batch", collate)
        return self._then(Batch(size, drop_last, collate))

    def pad_batch(
        self,
        size: int,
        /,
        *,
        pad_value: complex = 0,
        pad_to_multiple: int | None = None,
        drop_last: bool = False,
    ) -> Stream[Any]:
        """Batch variable-length arrays into ``(batch, lengths)``, padded with ``pad_value``.

        Each array (or list, converted with ``np.asarray``) of shape ``(n_i, *rest)`` is
        written by ``snake.kernels.pad_stack`` into ``batch[i, :n_i]`` of a reused buffer
        of shape ``(size, L, *rest)``, L being the longest n_i rounded up to a multiple of
        ``pad_to_multiple``; ``lengths`` holds the n_i. Dict and tuple items are padded
        field by field; their other fields are collated as by ``batch()``.
        """
        size = check_int("pad_batch", "size", size, minimum=1)
        check_pad_value("pad_batch", pad_value)
        if pad_to_multiple is not None:
            pad_to_multiple = check_int("pad_batch", "pad_to_multiple", pad_to_multiple, minimum=1)
        check_bool("pad_batch", "drop_last", drop_last)
        return self._then(PadBatch(size, pad_value, pad_to_multiple, drop_last))

    def bucket_by_length(
        self,
        boundaries: Sequence[int],
        batch_sizes: Sequence[int],
        /,
        *,
        length: Callable[[Any], int] = len,
        pad_value: complex = 0,
        drop_last: bool = False,
    ) -> Stream[Any]:
        """Group items of similar length into padded batches (as ``pad_batch`` makes them).

        An item goes to bucket ``i`` if ``boundaries[i-1] <= length(item) < boundaries[i]``
        (bucket 0 below ``boundaries[0]``, the last one from ``boundaries[-1]`` up), and a
        bucket that holds ``batch_sizes[i]`` items is emitted as one batch; so
        ``len(batch_sizes) == len(boundaries) + 1``. At the end, the partial buckets are
        emitted in bucket order, unless ``drop_last``.
        """
        bounds, sizes = check_buckets("bucket_by_length", boundaries, batch_sizes)
        check_callable("bucket_by_length", length, want_async=False)
        check_pad_value("bucket_by_length", pad_value)
        check_bool("bucket_by_length", "drop_last", drop_last)
        return self._then(BucketByLength(bounds, sizes, length, pad_value, drop_last))

    # -- concurrent stages -----------------------------------------------------------
    def then(self, afn: Callable[[T], Awaitable[U]], /, *, stall_timeout: float | None = 60.0) -> Stream[U]:
        """Await ``afn(item)`` for every item, one at a time.

        ``stall_timeout``: as in ``par_then``.
        """
        check_callable("then", afn, want_async=True)
        stall_timeout = _check_timeout("then", stall_timeout, name="stall_timeout")
        return self._then(ParThen(afn, 1, True, name="then", stall_timeout=stall_timeout))

    def par_then(
        self,
        afn: Callable[[T], Awaitable[U]],
        /,
        *,
        limit: int = 16,
        ordered: bool = True,
        timeout: float | None = None,
        stall_timeout: float | None = 60.0,
    ) -> Stream[U]:
        """Await ``afn(item)`` in up to ``limit`` concurrent trio tasks: for IO.

        With ``ordered=True`` (the default) items keep their input order; a slow
        item holds back at most ``limit`` others. ``ordered=False`` yields in
        completion order. With ``timeout`` (seconds), an item that takes longer is
        cancelled and raises ``TimeoutError`` (or is dropped under ``on_error("skip")``).

        ``stall_timeout``: when an item has been awaited this many seconds, a warning
        goes to the ``snake`` logger naming the stage, the item and how long it has
        run, with the stack of every busy task; it repeats every ``stall_timeout``
        seconds while the stage stays stuck (``None``: never). Nothing is cancelled:
        that is what ``timeout`` does.
        """
        check_callable("par_then", afn, want_async=True)
        limit = check_int("par_then", "limit", limit, minimum=1)
        check_bool("par_then", "ordered", ordered)
        timeout = _check_timeout("par_then", timeout)
        stall_timeout = _check_timeout("par_then", stall_timeout, name="stall_timeout")
        return self._then(ParThen(afn, limit, ordered, timeout=timeout, stall_timeout=stall_timeout))

    def par_map(
        self,
        fn: Callable[[T], U],
        /,
        *,
        workers: int | None = None,
        backend: Backend = "process",
        ordered: bool = True,
        worker_type: WorkerType = "auto",
        retries: int = 0,
        timeout: float | None = None,
        pool: WorkerPool | None = None,
        stall_timeout: float | None = 60.0,
        ray_options: Mapping[str, Any] | None = None,
    ) -> Stream[U]:
        """Run a sync ``fn`` on every item in parallel: for CPU work.

        ``backend="process"`` runs ``fn`` in ``workers`` worker processes, which
        need ``fn`` to be picklable (defined at module level; workers import the
        script's main module, so a script must open its pipelines under ``if
        __name__ == "__main__":``). ``backend="thread"`` runs it in threads: right
        for code that releases the GIL, such as ``snake.kernels`` and most NumPy.
        Items travel in chunks sized from the measured per-item time. ``workers``
        defaults to the number of CPUs this process may use.

        Worker processes are never forked from your process, which has threads
        (snake's own, pyarrow's, BLAS's), and a fork can inherit a lock another
        thread held and hang. ``worker_type`` picks how they start:

        - ``"auto"`` / ``"forkserver"``: forked from snake's launcher, a
          single-threaded process started once per process that has imported your
          main module, snake and NumPy: a few ms a worker.
        - ``"spawn"``: each worker a fresh interpreter (slower to start).
        - ``"fork"``: fork this process. Fast, and it sees everything your process
          has in memory, but **unsafe once the process has threads**: the worker
          can deadlock on a lock that another thread held at the fork. Only for
          processes known to be single-threaded.

        Idle workers wait in a process-wide cache for the next stage, run, epoch or
        ``open()`` (``SNAKE_WORKER_IDLE_TIMEOUT`` seconds, 60 by default), so only
        the first pipeline of a process pays for start-up. A worker never outlives
        your process, even while stuck in native code.

        Process workers only: a worker that dies (a crash, ``os._exit``, a signal)
        raises ``WorkerCrashedError`` naming the item; with ``retries=k`` the item
        is run again, on a fresh worker, up to k times. ``timeout`` (seconds per
        item) kills the worker of an item that runs longer and raises
        ``TimeoutError`` (or retries it). Large numpy arrays in results come back
        through shared memory. ``pool`` runs the stage on a :class:`WorkerPool`'s
        own workers.

        ``stall_timeout``: when an item has run this many seconds, a warning goes to
        the ``snake`` logger naming the stage, the item and how long it has run,
        with the Python stack of every busy worker; it repeats every
        ``stall_timeout`` seconds while the stage stays stuck (``None``: never).
        ``statistics()`` counts these as ``stalls``.

        ``backend="ray"`` runs ``fn`` on ``workers`` Ray actors, on the cluster this
        process has initialised (``ray.init()``, or ``RAY_ADDRESS``), else on a local
        one that snake starts. Ordering, ``retries``, ``timeout``, ``on_error``,
        ``pool`` (a ``WorkerPool(backend="ray")``) and statistics work as with
        processes. ``ray_options`` go to each actor (``num_cpus``, ``num_gpus``,
        ``resources``, ``runtime_env``, ...; one CPU by default). Needs Ray: ``pip
        install 'snake[ray]'``. See the "Scaling out" page of the docs.
        """
        check_callable("par_map", fn, want_async=False)
        if pool is not None and not isinstance(pool, WorkerPool):
            raise TypeError(f"par_map: pool={pool!r} must be a snake.WorkerPool")
        if workers is None:
            workers = pool.workers if pool is not None else default_workers()
        workers = check_int("par_map", "workers", workers, minimum=1)
        if backend not in _BACKENDS:
            raise ValueError(f"par_map: backend={backend!r} must be one of {_BACKENDS}")
        check_bool("par_map", "ordered", ordered)
        check_worker_type("par_map", worker_type, processes=backend == "process")
        retries = check_int("par_map", "retries", retries, minimum=0)
        timeout = _check_timeout("par_map", timeout)
        stall_timeout = _check_timeout("par_map", stall_timeout, name="stall_timeout")
        if backend == "ray":
            need_ray("par_map")
        _check_par_map_backend(fn, workers, backend, worker_type, retries, timeout, pool)
        if ray_options is not None:
            if backend != "ray":
                raise ValueError(f'par_map: ray_options={ray_options!r} only applies to backend="ray"')
            if pool is not None:
                raise ValueError("par_map: ray_options are set by the pool; leave them out with pool=")
            ray_options = check_ray_options("par_map", ray_options)
        return self._then(
            ParMap(
                fn,
                workers,
                backend,
                ordered,
                worker_type,
                retries,
                timeout,
                pool,
                stall_timeout=stall_timeout,
                ray_options=ray_options,
            )
        )

    def on_error(self, mode: ErrorMode, /, *, max_errors: float | None = None) -> Stream[T]:
        """Set what the stage just before does when its function raises for an item.

        ``"raise"`` (the default) fails the pipeline with the item's exception.
        ``"skip"`` drops the item, logs it once (logger ``snake.errors``) and counts
        it in ``statistics()``; past ``max_errors`` (a count, or a fraction of the
        items the stage has received, at least one) the pipeline fails with the
        last error. Applies to ``map``, ``filter``, ``flat_map``, ``then``,
        ``par_then`` and ``par_map``, including their timeouts and worker crashes.
        """
        if mode not in _ON_ERROR_MODES:
            raise ValueError(f"on_error: mode={mode!r} must be one of {_ON_ERROR_MODES}")
        if max_errors is not None:
            if mode != "skip":
                raise ValueError(f"on_error: max_errors={max_errors!r} only applies to 'skip'")
            if isinstance(max_errors, bool) or not isinstance(max_errors, (int, float)):
                raise TypeError(f"on_error: max_errors={max_errors!r} must be an int, a float or None")
            if isinstance(max_errors, int) and max_errors < 0:
                raise ValueError(f"on_error: max_errors={max_errors!r} must be >= 0")
            if isinstance(max_errors, float) and not 0 < max_errors < 1:
                raise ValueError(f"on_error: max_errors={max_errors!r} as a fraction must be in (0, 1)")
        specs = self._specs
        if isinstance(specs[-1], OnError):
            specs = specs[:-1]  # a second on_error() replaces the first
        last = specs[-1]
        if not isinstance(last, _ERROR_STAGES):
            raise ValueError(  # noqa: TRY004
                f"on_error applies to the stage before it (map, filter, flat_map, then, par_then "
                f"or par_map); that stage is {last.describe()}"
            )
        return Stream((*specs, OnError(ErrorPolicy(mode, max_errors))))

    # -- order, selection, epochs ----------------------------------------------------
    def shuffle(self, buffer: int, /, *, seed: int | None = None) -> Stream[T]:
        """Shuffle through a buffer of ``buffer`` items: each new item takes the place of a
        random buffered one, which is emitted; the rest come out shuffled at the end.

        The order depends only on ``seed`` and the input order (not on timing or chunk
        sizes); inside ``repeat()`` the seed is combined with the epoch, so every epoch
        is shuffled differently and reproducibly. ``seed=None`` draws fresh entropy on
        every run. A buffer at least as long as the stream gives a uniform shuffle.
        """
        buffer = check_int("shuffle", "buffer", buffer, minimum=1)
        return self._then(Shuffle(buffer, check_seed("shuffle", seed)))

    def shard(
        self, *, rank: int | None = None, world_size: int | None = None, equal: bool = False
    ) -> Stream[T]:
        """Keep this rank's share: the items whose index ``i`` has ``i % world_size == rank``.

        ``rank`` and ``world_size`` default to the ``RANK`` and ``WORLD_SIZE`` environment
        variables (as torchrun sets them), else to 0 and 1. Across the ranks every item
        appears exactly once, provided every rank builds the same stream (shuffle with
        the same ``seed`` on every rank). ``equal=True`` drops the last ``total %
        world_size`` items so that every rank gets ``total // world_size`` (the same
        number of steps in DDP); it needs the total before the stream runs, so the stream
        must be sized: a ``range`` or a list, Parquet files (their footers are read now),
        ``from_files``, and one-to-one stages after them, else a ``ValueError``.

        Directly after ``from_parquet`` or ``from_files``, the source shards itself: rank
        ``r`` takes the ``r``-th contiguous share of the rows (files), in the source's
        order of the epoch, and reads only the row groups that hold them (a row group
        at the edge of two shares is read by both, each keeping its own rows). Shares
        differ by at most one row; with ``equal=True`` each is ``total // world_size``
        rows, the total taken from the footers when the stream runs.
        """
        r, w = resolve_shard(rank, world_size)
        check_bool("shard", "equal", equal)
        source = self._specs[0]
        if isinstance(source, (FromParquet, FromFiles)):
            if source.shuffle and source.seed is None and w > 1:
                raise ValueError(
                    f"shard: {source.describe()} shuffles with fresh entropy, a different order "
                    "on every rank, so ranks would share items; pass the same seed= on every rank"
                )
            if len(self._specs) == 1 and source.shard is None:
                # The source shards itself (see _plan): it finds the total when it runs.
                if equal and isinstance(source, FromParquet) and source.filt is not None:
                    raise ValueError(
                        f"shard(equal=True) needs the number of rows of {self!r}, which its filters "
                        "decide only as the rows are read; use equal=False"
                    )
                return self._then(Shard(r, w, None, equal))
        total = None
        if equal:
            total = plan(self._specs).length()
            if total is None:
                raise ValueError(
                    f"shard(equal=True) needs the number of items before it, and {self!r} has no "
                    "known length (a sized source, then only one-to-one stages); use equal=False"
                )
        return self._then(Shard(r, w, total, equal))

    def repeat(self, epochs: int | None = None, /) -> Stream[T]:
        """Run the stream so far ``epochs`` times (forever with ``None``), one epoch after another.

        Each epoch opens the stages so far afresh, as a child pipeline inside this
        stream's source task; ``snake.current_epoch()`` tells them the epoch (0, 1, ...),
        and seeded ``shuffle``/``mix`` before ``repeat()`` reshuffle from ``(seed, epoch)``.
        An endless repeat of an epoch with no items raises ``ValueError``.
        """
        if epochs is not None:
            epochs = check_int("repeat", "epochs", epochs, minimum=0)
        return Stream((Repeat(self._specs, epochs),))

    def prefetch(self, n: int, /) -> Stream[T]:
        """Keep up to ``n`` items ready ahead of the consumer."""
        return self._then(Prefetch(check_int("prefetch", "n", n, minimum=1)))

    # -- handing over -----------------------------------------------------------------
    def to_torch(self, *, device: Any = None, pin_memory: bool = False) -> Stream[Any]:
        """Turn the NumPy arrays in every item (walking dicts, lists and tuples) into
        torch tensors with ``torch.from_numpy``: no copy, the tensor shares the
        array's memory. A batch buffer from snake's pool is not reused while a
        tensor made from it is alive. Read-only arrays are copied; arrays of strings
        or objects, and anything else, pass through unchanged.

        ``pin_memory=True`` copies tensors into page-locked memory and ``device``
        (``"cuda"``, ``"cuda:1"``, a ``torch.device``) moves them there; both run in
        a thread stage, off the event loop, and the copy from pinned memory is
        asynchronous (``non_blocking=True``). torch is optional: it is imported
        here, not by ``import snake``; without it this raises ``ImportError``.
        """
        from ._ops.tensors import ToTensors, ToTorchInline, ToTorchThread, check_device, import_torch

        torch = import_torch()
        check_bool("to_torch", "pin_memory", pin_memory)
        dev = check_device(torch, device, pin_memory)
        fn = ToTensors(dev, pin_memory)
        if dev is None and not pin_memory:
            return self._then(ToTorchInline(fn))
        return self._then(ToTorchThread(fn, 1, "thread"))

    # -- observing ---------------------------------------------------------------------
    def monitor(self, callback: Callable[[dict[str, float]], object], /, *, every: float = 10.0) -> Stream[T]:
        """Call ``callback(metrics)`` about every ``every`` seconds with a flat dict of
        floats about the items passing here: ``items``, ``items_per_s`` (since the last
        call), ``elapsed_s``, and ``bytes``/``bytes_per_s`` when items are NumPy arrays
        (or dicts/tuples of them). Fits ``wandb.log`` or ``mlflow.log_metrics``.

        A pass-through inline stage: it runs in the task of the stage before it when a
        chunk passes (no call while nothing passes), and once more at the end of the
        stream. Keep ``callback`` quick; an exception from it fails the pipeline.
        """
        check_callable("monitor", callback, want_async=False)
        if isinstance(every, bool) or not isinstance(every, (int, float)):
            raise TypeError(f"monitor: every={every!r} must be a number of seconds")
        if not every >= 0:
            raise ValueError(f"monitor: every={every!r} must be >= 0")
        return self._then(Monitor(callback, float(every)))

    def progress(self, *, total: int | None = None, desc: str | None = None) -> Stream[T]:
        """Show a tqdm progress bar of the items passing here (tqdm is optional: without
        it, a log line every 5 s on the ``snake.progress`` logger).

        ``total`` defaults to the stream's length when it is known before running (a
        sized source and one-to-one stages after it, as for ``shard(equal=True)``; none
        if sizing fails). A pass-through inline stage.
        """
        if total is None:
            try:
                total = plan(self._specs).length()
            except Exception:
                # Sizing read a file that failed (missing, not Parquet): no total here;
                # running the stream reports the error where it belongs.
                total = None
        else:
            total = check_int("progress", "total", total, minimum=0)
        if desc is not None and not isinstance(desc, str):
            raise TypeError(f"progress: desc={desc!r} must be a str or None")
        return self._then(Progress(total, desc))

    # -- running ---------------------------------------------------------------------
    def open(self) -> AbstractAsyncContextManager[Items[T]]:
        """Run the pipeline in a trio nursery: ``async with stream.open() as items:``.

        ``items`` is an async iterator (a trio ``ReceiveChannel``). Leaving the
        block, normally or by an exception, cancels every stage and waits for
        them; a stage's exception comes out of the block unchanged, with a note
        naming the stage and the item.
        """
        p = plan(self._specs)
        return open_pipeline(list(p.specs), p.notes)

    def open_sync(self) -> AbstractContextManager[SyncItems[T]]:
        """Run the pipeline in a helper thread: ``with stream.open_sync() as items:``."""
        p = plan(self._specs)
        return open_sync(list(p.specs), p.notes)

    def __iter__(self) -> Iterator[T]:
        """``for x in stream:`` runs the pipeline in a helper thread (see ``open_sync``)."""
        with self.open_sync() as items:
            yield from items

    def __aiter__(self) -> NoReturn:
        raise TypeError(
            "a Stream is a description, not an async iterator; run it with "
            "'async with stream.open() as items: async for x in items: ...'"
        )

    async def collect(self) -> list[T]:
        """Run the pipeline to the end and return its items as a list."""
        out: list[T] = []
        try:
            async with self.open() as items:
                while True:
                    chunk = await items.receive_chunk()
                    if chunk is None:
                        return out
                    out.extend(chunk)
        except BaseException:
            # A failed run returns nothing: the items read so far go now, not with the
            # error (whose traceback holds this frame) whenever that is collected.
            out.clear()
            chunk = None
            raise

    def to_list(self) -> list[T]:
        """Run the pipeline (in a helper thread) and return its items as a list."""
        with self.open_sync() as items:
            return list(items)


def from_iterable(iterable: Iterable[T], /) -> Stream[T]:
    """A stream of the items of a sync iterable, iterated on the event loop.

    Iterating it must be cheap (a ``range``, a list, a fast generator): slow
    reads belong in ``par_then`` or ``from_async_iterable``. A generator can only
    be iterated once, so a stream built on one can only be opened once.
    """
    if not isinstance(iterable, Iterable):
        raise TypeError(f"from_iterable: {iterable!r} is not iterable")
    return Stream((FromIterable(iterable),))


def from_async_iterable(source: AsyncIterable[T] | Callable[[], AsyncIterable[T]], /) -> Stream[T]:
    """A stream of the items of an async iterable.

    Pass a function that returns one (an async generator function, say) to get
    a stream that can be opened more than once.
    """
    if not (isinstance(source, AsyncIterable) or callable(source)):
        raise TypeError(
            f"from_async_iterable: {source!r} is neither an async iterable nor a function returning one"
        )
    return Stream((FromAsyncIterable(source),))


def _check_streams(method: str, streams: object) -> tuple[tuple[Spec, ...], ...]:
    if isinstance(streams, Stream):
        raise TypeError(f"{method}: pass a list of streams, not one Stream")
    if not isinstance(streams, (list, tuple)):
        raise TypeError(f"{method}: streams={streams!r} must be a list of streams")
    if not streams:
        raise ValueError(f"{method}: needs at least one stream")
    for s in streams:
        if not isinstance(s, Stream):
            raise TypeError(f"{method}: {s!r} is not a snake.Stream")
    return tuple(s._specs for s in streams)


def chain(*streams: Stream[T]) -> Stream[T]:
    """The items of each stream in turn: all of the first, then all of the second, ...

    Each input runs as a child pipeline opened inside the chain's source task, one at
    a time; an input's exception fails the chain with a note naming the input.
    """
    return Stream((Chain(_check_streams("chain", streams)),))


def zip(*streams: Stream[Any]) -> Stream[tuple[Any, ...]]:
    """Tuples of one item of each stream, until the shortest ends (like the builtin ``zip``).

    The inputs run concurrently, as child pipelines inside the zip's source task.
    """
    return Stream((Zip(_check_streams("zip", streams)),))


def mix(
    streams: Sequence[Stream[T]], /, weights: Sequence[float] | None = None, *, seed: int | None = None
) -> Stream[T]:
    """Interleave streams at random: each item comes from stream ``i`` with probability
    proportional to ``weights[i]`` (equal weights by default), until all are exhausted.

    An exhausted stream drops out and the weights of the others renormalise. The
    sequence of choices depends only on ``seed`` (and, inside ``repeat()``, the epoch);
    ``seed=None`` draws fresh entropy on every run.
    """
    inputs = _check_streams("mix", streams)
    if weights is None:
        ws = (1.0,) * len(inputs)
    else:
        if not isinstance(weights, (list, tuple)):
            raise TypeError(f"mix: weights={weights!r} must be a list of numbers")
        if len(weights) != len(inputs):
            raise ValueError(
                f"mix: weights={list(weights)!r} has {len(weights)} weights for {len(inputs)} streams"
            )
        for w in weights:
            if isinstance(w, bool) or not isinstance(w, (int, float)):
                raise TypeError(f"mix: weights={list(weights)!r} must be numbers")
            if not (w > 0 and w < float("inf")):
                raise ValueError(f"mix: weights={list(weights)!r} must all be > 0 and finite")
        ws = tuple(float(w) for w in weights)
    return Stream((Mix(inputs, ws, check_seed("mix", seed)),))


def from_parquet(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    /,
    *,
    columns: Sequence[str] | None = None,
    filters: Any = None,
    batch_rows: int = 1024,
    rows: bool = True,
    readers: int = 4,
    shuffle_row_groups: bool = False,
    seed: int | None = None,
    read: bool = True,
) -> Stream[Any]:
    """The rows of Parquet files, as dicts (``rows=True``) or pyarrow ``RecordBatch``es of up
    to ``batch_rows`` rows (``rows=False``).

    ``paths`` is a path, a glob pattern (its matches, sorted: one that matches nothing
    is a ``ValueError`` now) or a list of paths. Row groups are read in up to
    ``readers`` threads at once and come out in file and row-group order; only the
    ``columns`` asked for are read. Binary columns come through as ``bytes``. A missing
    or unreadable file raises when the stream runs, with a note naming the file.
    Needs pyarrow (imported when the stream runs).

    ``filters`` keeps the rows that match: a ``pyarrow.compute.Expression``
    (``pc.field("label") < 10``) or the form ``pyarrow.parquet`` takes
    (``[("label", "<", 10)]``, a list of such lists for OR). Row groups whose statistics
    rule out every row are not read; a filter on a column a file lacks raises a
    ``ValueError`` naming the column and the file.

    ``shuffle_row_groups=True`` reads the row groups in a random order drawn from
    ``(seed, epoch)``: the same on every rank for a ``seed``, a new one in each epoch of
    ``repeat()`` (rows within a row group keep their order; follow with ``shuffle()``).
    A ``shard()`` right after shards by rows at the source (see ``Stream.shard``).

    ``read=False`` yields :class:`ParquetRowGroup` handles instead of rows: small,
    picklable, read by ``handle.read()`` wherever you call it, such as in ``par_map``
    worker processes, so the data never passes through the main process.
    """
    resolved = resolve_paths("from_parquet", paths)
    cols: tuple[str, ...] | None = None
    if columns is not None:
        if isinstance(columns, str) or not isinstance(columns, Sequence):
            raise TypeError(f"from_parquet: columns={columns!r} must be a list of column names")
        if not all(isinstance(c, str) for c in columns):
            raise TypeError(f"from_parquet: columns={columns!r} must be a list of column names")
        cols = tuple(columns)
    batch_rows = check_int("from_parquet", "batch_rows", batch_rows, minimum=1)
    check_bool("from_parquet", "rows", rows)
    readers = check_int("from_parquet", "readers", readers, minimum=1)
    filt: ParquetFilter | None = check_filters("from_parquet", filters)
    check_bool("from_parquet", "shuffle_row_groups", shuffle_row_groups)
    check_bool("from_parquet", "read", read)
    seed = check_seed("from_parquet", seed)
    if seed is not None and not shuffle_row_groups:
        raise ValueError(f"from_parquet: seed={seed!r} only applies with shuffle_row_groups=True")
    if not read:
        # Worker processes read the row groups: the launcher imports pyarrow.parquet once,
        # so that no worker pays for the import.
        preload_in_workers("pyarrow.parquet")
    return Stream(
        (FromParquet(resolved, cols, batch_rows, rows, readers, filt, shuffle_row_groups, seed, read),)
    )


def from_files(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    /,
    *,
    shuffle: bool = False,
    seed: int | None = None,
) -> Stream[str]:
    """The paths of files: the sorted matches of a glob pattern, or the given paths in order.

    Read them with ``.par_then(snake.read_bytes, limit=...)`` to overlap the reads.
    A pattern that matches nothing is a ``ValueError`` now. ``shuffle=True`` gives the
    paths in a random order drawn from ``(seed, epoch)``: the same on every rank for a
    ``seed``, a new one in each epoch of ``repeat()``. A ``shard()`` right after takes
    this rank's contiguous share of that order.
    """
    resolved = resolve_paths("from_files", paths)
    check_bool("from_files", "shuffle", shuffle)
    seed = check_seed("from_files", seed)
    if seed is not None and not shuffle:
        raise ValueError(f"from_files: seed={seed!r} only applies with shuffle=True")
    return Stream((FromFiles(resolved, shuffle, seed),))
