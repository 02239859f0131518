"""``Stream``: an immutable, lazy description of a pipeline.

Every method validates its arguments where the user calls it and returns a new
``Stream``; nothing runs until the stream is opened.
"""

from __future__ import annotations

import os
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Generic, Literal, NoReturn, TypeVar, final, overload

from ._buffers.collate import check_buckets, check_collate, check_pad_value
from ._embed.sync import SyncItems, open_sync
from ._engine.epoch import check_seed
from ._engine.errors import ErrorMode, ErrorPolicy
from ._engine.resume import check_state
from ._engine.run import Items, open_pipeline, stage_labels
from ._engine.spec import SourceSpec, Spec, chain_repr
from ._engine.util import check_bool, check_callable, check_importable, check_int, check_picklable
from ._ops.buffer import Prefetch
from ._ops.combine import ON_EXHAUSTED, Chain, Mix, Repeat, Zip, check_weights
from ._ops.files import FromFiles, FromParquet, ParquetFilter, check_filters, resolve_paths
from ._ops.huggingface import FromHuggingFace
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
    Sliding,
    Take,
)
from ._ops.observe import Monitor, Progress
from ._ops.order import Shard, Shuffle, resolve_shard
from ._ops.pack import Fit, Pack, TooLong, check_pack
from ._ops.parallel import Backend, ParMap, ParThen
from ._ops.pipe import Pipe, check_pipe
from ._ops.source import FromAsyncIterable, FromIterable
from ._ops.tune import AUTO, Autotune
from ._plan import Plan, plan
from ._workers.pool import WorkerPool, WorkerType, check_worker_type, default_workers
from ._workers.procs import preload as preload_in_workers
from ._workers.procs import prestart as prestart_launcher
from ._workers.ray import check_options as check_ray_options
from ._workers.ray import check_picklable as check_ray_picklable
from ._workers.ray import need_ray
from ._workers.shm import cache_bytes as check_shm_cache_bytes

T = TypeVar("T")
U = TypeVar("U")

_ERROR_STAGES = (Map, Filter, FlatMap, ParThen, ParMap)

_BACKENDS = ("process", "thread", "ray")
_ON_ERROR_MODES = ("raise", "skip")


def _check_par_map_backend(
    fn: Callable[..., Any],
    workers: int | Literal["auto"],
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
        if not _is_auto(workers) and int(workers) > pool.workers:
            raise ValueError(f"par_map: workers={workers!r} is more than the pool's {pool.workers}")
        if worker_type != "auto":
            raise ValueError("par_map: worker_type is set by the pool; leave it out with pool=")
    if backend == "process":
        check_picklable("par_map", fn)
        check_importable("par_map", fn, worker_type if pool is None else pool.worker_type)
    elif worker_type != "auto":
        raise ValueError(f'par_map: worker_type={worker_type!r} only applies to backend="process"')


def _is_auto(value: object) -> bool:
    return isinstance(value, str) and value == AUTO


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
    """An immutable, lazy description of a pipeline.

    You get one from a source function (:func:`from_iterable`, :func:`from_parquet`,
    ...), and every method returns a new ``Stream`` with one more stage; nothing runs
    until the stream is opened. A stream can be opened any number of times, and each
    opening is an independent run (a source on a one-shot iterable, such as a
    generator, gives its items only at the first run).

    ``repr(stream)`` replays the chain that built it::

        >>> snake.from_iterable(range(3)).map(str)
        from_iterable(<range len=3>).map(str)

    A function appears by its ``__qualname__``, without the ``outer.<locals>.``
    prefix of a nested function; a ``functools.partial`` appears as
    ``partial(fn, arg, key=value)``. Options at their default are left out, except
    ``limit`` of ``par_then`` and ``workers`` of ``par_map``.

    Setting an attribute raises ``AttributeError: Stream is immutable: every method
    returns a new Stream``, and ``Stream(...)`` is not called directly: it raises
    ``TypeError: Stream() is not built directly; start from snake.from_iterable(...)``.

    **Argument errors.** A method checks its arguments when it is called, before
    anything runs, and the message quotes the argument; ``...`` in the messages
    quoted in snake's docstrings stands for the value, or the function's name, as the
    message shows it. Every method that takes a callable raises:

    - ``TypeError: METHOD: fn=... is not callable`` when the argument is not
      callable (``fn`` is the word for every method, ``filter`` included);
    - ``TypeError: METHOD needs a sync function; NAME is an async function (use
      then() or par_then() for async functions)`` for ``map``, ``filter``,
      ``flat_map`` and ``par_map`` given an ``async def`` function;
    - ``TypeError: METHOD needs an async function; NAME is a sync function (use
      map() or par_map() for sync functions)`` for ``then`` and ``par_then`` given a
      plain function. A ``lambda`` is a plain function, even if it returns a
      coroutine.

    The colour check looks through ``functools.partial`` and at the ``__call__`` of
    callable objects; a callable whose colour cannot be told is accepted. Integer
    and boolean options raise ``TypeError: METHOD: NAME=... must be an int`` (a
    ``bool`` is not accepted as an int), ``ValueError: METHOD: NAME=... must be >=
    MIN`` and ``TypeError: METHOD: NAME=... must be a bool``.

    **Stage numbers.** Stages are numbered from 0, the source, in the order of the
    chain. A stage's exception comes out of your loop unchanged, with a note that
    calls the stage ``#i`` followed by its part of the ``repr``, and names the item
    by its index among the items that reached that stage: ``snake: raised in stage
    #2 par_map(fib, workers=2) on item index 7``. :meth:`Items.statistics` uses the
    same numbers.
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
        """``fn(item)`` for every item. ``fn`` must be sync.

        An inline stage, as are ``filter``, ``flat_map``, ``enumerate``, ``take``,
        ``skip``, ``batch``, ``pad_batch``, ``bucket_by_length`` and ``sliding``: it has no task of its
        own, but is fused into the task of the stage before it and applied to whole
        chunks, keeping the order of the items. It runs on the trio event loop, so a slow
        ``fn`` delays every task of the pipeline: move slow work to :meth:`par_map`. An
        exception from ``fn`` gets the note ``snake: raised in stage #i map(fn) on item
        index k``, ``k`` counting the items that reached this stage.
        """
        check_callable("map", fn, want_async=False)
        return self._then(Map(fn))

    def filter(self, pred: Callable[[T], object], /) -> Stream[T]:
        """The items for which ``pred(item)`` is true. ``pred`` must be sync; an inline stage."""
        check_callable("filter", pred, want_async=False)
        return self._then(Filter(pred))

    def flat_map(self, fn: Callable[[T], Iterable[U]], /) -> Stream[U]:
        """Every item replaced by the items of the iterable ``fn(item)``, in order.

        ``fn`` must be sync; an inline stage.
        """
        check_callable("flat_map", fn, want_async=False)
        return self._then(FlatMap(fn))

    def enumerate(self) -> Stream[tuple[int, T]]:
        """Every item paired with its index: ``(0, a), (1, b), ...``. An inline stage."""
        return self._then(Enumerate())

    def take(self, n: int, /) -> Stream[T]:
        """The first ``n`` items; ``take(0)`` gives none.

        Once ``take`` has its ``n`` items, the stage it is fused into ends cleanly, and
        the stages before that one stop when they next try to send. When ``take`` is
        fused into the source (only inline stages between them), the source stops
        reading: :func:`from_iterable` reads exactly the items ``take`` needs, or up to
        one chunk more if a ``filter`` or ``flat_map`` sits between them.

        Raises, when called: ``TypeError: take: n=... must be an int``,
        ``ValueError: take: n=... must be >= 0``.
        """
        return self._then(Take(check_int("take", "n", n, minimum=0)))

    def skip(self, n: int, /) -> Stream[T]:
        """All items but the first ``n``. An inline stage.

        Raises, when called: ``TypeError: skip: n=... must be an int``,
        ``ValueError: skip: n=... must be >= 0``.
        """
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
        """Group items into batches of ``size`` items.

        The last batch holds the items left over and may be shorter; with
        ``drop_last=True`` it is dropped. Each group, a list, goes to ``collate``:

        - ``"default"``: NumPy arrays are stacked by :func:`snake.kernels.stack` into a
          buffer that is reused once no batch or view of it is referenced any more;
          numbers become ``np.asarray(group)``; dicts, tuples (named tuples too) and
          lists are collated field by field; other items (strings, ``None``, objects,
          masked arrays) stay a list. The first item decides the rule.
          :doc:`/batching` gives the rules, the buffer reuse and its safety rule, and
          the memory the pools keep.
        - ``None``: the list itself (typed ``Stream[list[T]]``).
        - a sync function: ``collate(group)`` (typed ``Stream[U]`` for a function
          returning ``U``), run inline.

        ``repr``: ``batch(32)``, ``batch(32, drop_last=True, collate=None)``,
        ``batch(32, collate=fn)``. The buffers of the stages from the one ``batch`` is
        fused into onwards count batches, not items (see the memory bound in
        :doc:`/concurrency`).

        At run time, a group the default collate cannot collate raises the kernel's
        ``ValueError`` (``stack: arrays[2] has shape (4,) dtype float64; expected shape
        (3,) dtype float64 like arrays[0]``) or ``TypeError``, or snake's
        ``ValueError``/``TypeError`` naming ``items[i]`` (dicts with other keys, tuples
        of another length, a non-number among numbers). The notes name the stage and
        the offending item's index among the items that reached the stage, then the
        batch: ``snake: raised in stage #2 batch(4) on item index 6``, ``snake: in batch
        index 1 (item indices 4..7), field ['x']``. An exception from a ``collate``
        function gets the same notes without the item index.

        Raises, when called:

        - ``TypeError: batch: size=... must be an int``;
        - ``ValueError: batch: size=... must be >= 1``;
        - ``TypeError: batch: drop_last=... must be a bool``;
        - ``ValueError: batch: collate='...' must be 'default', None or a sync
          function`` (another string);
        - ``TypeError: batch: collate=... must be 'default', None or a sync function``
          (not callable);
        - ``TypeError: batch needs a sync collate function; NAME is an async function``.
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
        """Batches of ``size`` variable-length arrays, padded: ``(batch, lengths)``.

        Groups items like :meth:`batch`. An array with at least one axis, of shape
        ``(n_i, *rest)``, or a list (converted with ``np.asarray``), is written by
        :func:`snake.kernels.pad_stack` into a reused buffer of shape ``(len(group), L,
        *rest)``, where ``L`` is the longest ``n_i`` rounded up to a multiple of
        ``pad_to_multiple`` (if given), and ``pad_value`` fills the rest; the result is
        ``(batch, lengths)``, ``lengths`` the ``int64`` array of the ``n_i``. Dict and
        tuple items are padded field by field, every array field with an axis and every
        list field becoming a ``(batch, lengths)`` pair; other fields are collated as by
        :meth:`batch`. See :doc:`/batching`.

        ``repr``: ``pad_batch(32)``, ``pad_batch(32, pad_value=-1, pad_to_multiple=8,
        drop_last=True)``.

        At run time, the kernel's errors, with the notes of :meth:`batch`: a dtype or
        trailing shape that differs from the first item's, a 0-d array, a
        ``pad_value`` the dtype cannot hold (``ValueError: pad_stack: pad_value=-1 does
        not fit dtype uint8``), a dtype that cannot be padded.

        Raises, when called:

        - ``TypeError: pad_batch: size=... must be an int``;
        - ``ValueError: pad_batch: size=... must be >= 1``;
        - ``TypeError: pad_batch: pad_value=... must be a bool, int, float or complex``;
        - ``TypeError: pad_batch: pad_to_multiple=... must be an int``;
        - ``ValueError: pad_batch: pad_to_multiple=... must be >= 1``;
        - ``TypeError: pad_batch: drop_last=... must be a bool``.
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
        """Group items of similar length into padded batches, as ``tf.data``'s
        ``bucket_by_sequence_length`` does.

        An item goes to bucket ``i`` if ``boundaries[i-1] <= length(item) <
        boundaries[i]`` (bucket 0 holds the lengths below ``boundaries[0]``, the last
        bucket those from ``boundaries[-1]`` up), so ``len(batch_sizes) ==
        len(boundaries) + 1``. When bucket ``i`` holds ``batch_sizes[i]`` items, they
        are emitted as one batch, padded as by :meth:`pad_batch` (without
        ``pad_to_multiple``). At the end of the input the partial buckets are emitted in
        bucket order, unless ``drop_last=True``. The stage holds up to
        ``sum(batch_sizes) - len(batch_sizes)`` items; batches come out in the order
        their buckets fill. See :doc:`/batching`.

        ``repr``: ``bucket_by_length([64, 128], [32, 16, 8])``, with ``length=fn``,
        ``pad_value=...`` and ``drop_last=True`` when they are not the defaults.

        At run time, ``length(item)`` must return an ``int`` or a NumPy integer
        (``TypeError: bucket_by_length: length(item) returned float; it must return an
        int``), ``>= 0`` (``ValueError: bucket_by_length: length(item) returned -1; a
        length must be >= 0``); these and exceptions raised by ``length`` get the note
        ``snake: raised in stage #i bucket_by_length(...) on item index k``. Padding
        errors are as for :meth:`pad_batch`, their batch note listing the batch's item
        indices.

        Raises, when called:

        - ``TypeError: bucket_by_length: boundaries=... must be a sequence of ints``;
        - ``ValueError: bucket_by_length: boundaries=... must hold ints >= 1
          (boundaries[i]=...)``;
        - ``ValueError: bucket_by_length: boundaries=... must be strictly increasing
          (...)``;
        - the first two for ``batch_sizes`` (ints ``>= 1``);
        - ``ValueError: bucket_by_length: batch_sizes=... has N sizes; it needs
          len(boundaries) + 1 = M, one per bucket``;
        - the callable errors of :class:`Stream` for ``length`` (as ``fn=``);
        - ``TypeError: bucket_by_length: pad_value=... must be a bool, int, float or
          complex``;
        - ``TypeError: bucket_by_length: drop_last=... must be a bool``.
        """
        bounds, sizes = check_buckets("bucket_by_length", boundaries, batch_sizes)
        check_callable("bucket_by_length", length, want_async=False)
        check_pad_value("bucket_by_length", pad_value)
        check_bool("bucket_by_length", "drop_last", drop_last)
        return self._then(BucketByLength(bounds, sizes, length, pad_value, drop_last))

    def pack(
        self,
        length: int,
        /,
        *,
        buffer: int = 16,
        fit: Fit = "best",
        too_long: TooLong = "split",
        pad_value: float = 0,
    ) -> Stream[dict[str, Any]]:
        """Pack variable-length token sequences into rows of ``length`` tokens, for
        language-model training, as Grain's packing transforms do.

        An item is a 1-D NumPy array (or a list of numbers) of tokens, or a dict of such
        arrays that have the same length in each item (``{"tokens": ..., "loss_mask":
        ...}``). Each output row is a dict: for every key (``"tokens"`` for plain
        arrays), the ``length`` values of the sequences packed into the row, one after
        the other, then ``pad_value``; ``KEY_segment_ids`` (``int32``), the number of
        each token's sequence in the row, from 1, and 0 for padding; ``KEY_positions``
        (``int32``), each token's position in its sequence, from 0 (0 for padding).
        Follow it with :meth:`batch` to get batches of rows.

        The stage keeps up to ``buffer`` rows open. A sequence goes into an open row
        that has room for it: with ``fit="best"``, the one with the least room; with
        ``fit="first"``, the one opened first. A row that becomes full goes out at once.
        When no open row has room and ``buffer`` rows are open, the fullest of them goes
        out, padded, and the sequence opens a new row; at the end of the input the open
        rows go out in the order they were opened. More rows pack tighter: on lognormal
        lengths (median 300 tokens) into rows of 2048, best fit leaves about 0.8 % of
        the tokens as padding with ``buffer=8`` and 0.4 % with ``buffer=64``; first fit
        about 0.9 % and 0.5 % (``bench/pack.py``). The stage holds up to ``buffer``
        rows' worth of items.

        A sequence longer than ``length`` is, by ``too_long``: ``"split"`` into pieces of
        ``length`` tokens, each a full row of its own, and the rest, packed as a
        sequence of its own (positions start again from 0 in each piece); cut to its
        first ``length`` tokens (``"truncate"``); or refused (``"raise"``). An empty
        sequence adds nothing. The rows' dtypes are the first item's; every item must
        be alike (an array, or a dict with the same keys and dtypes).

        :attr:`StageStatistics.padding` is the share of the token slots of the rows
        made so far that are padding, and :meth:`Items.report` shows it. Checkpoints
        hold the open rows by the numbers of the items in them (see :doc:`/tutorial`).

        ``repr``: ``pack(2048)``, with ``buffer=``, ``fit=``, ``too_long=`` and
        ``pad_value=`` when they are not the defaults.

        At run time, an item that is not alike raises ``TypeError`` or ``ValueError``
        (``pack: item['loss_mask'] has length 3; item['tokens'] has 4: every field of an
        item must have the same length``), with the note ``snake: raised in stage #i
        pack(...) on item index k``; so does a ``pad_value`` the dtype cannot hold, and,
        with ``too_long="raise"``, a sequence longer than ``length``.

        Raises, when called:

        - ``TypeError: pack: length=... must be an int``;
        - ``ValueError: pack: length=... must be >= 1``;
        - the same two for ``buffer``;
        - ``ValueError: pack: fit=... must be one of 'best', 'first'``;
        - ``ValueError: pack: too_long=... must be one of 'split', 'truncate', 'raise'``;
        - ``TypeError: pack: pad_value=... must be a bool, int or float``.
        """
        length = check_int("pack", "length", length, minimum=1)
        buffer = check_int("pack", "buffer", buffer, minimum=1)
        check_pack(fit, too_long, pad_value)
        return self._then(Pack(length, buffer, fit, too_long, pad_value))
    def sliding(self, size: int, /, *, step: int = 1) -> Stream[tuple[T, ...]]:
        """Windows of ``size`` consecutive items, as tuples, one every ``step`` items.

        Window ``w`` holds the items ``w*step`` to ``w*step + size - 1``:
        ``sliding(3)`` of ``0, 1, 2, 3, 4`` gives ``(0, 1, 2), (1, 2, 3), (2, 3, 4)``;
        ``sliding(2, step=3)`` of ``0 ... 6`` gives ``(0, 1), (3, 4)``. A window is
        given only when all its ``size`` items have come: a stream shorter than
        ``size`` gives none, and the items after the last full window are dropped
        (as ``more_itertools.sliding_window`` does; nothing is padded). With ``step >
        size`` the items between windows are dropped. For ``n`` items it gives
        ``(n - size) // step + 1`` windows (0 when ``n < size``).

        An inline stage; it holds up to ``size - 1`` items between chunks (the start of
        the next window). Windows share their items: a window is a new tuple, its items
        are not copied. A checkpoint inside the stream resumes at the first item of the
        next window, and the stages before it make its items again.

        ``repr``: ``sliding(3)``, ``sliding(3, step=2)``.

        Raises, when called: ``TypeError: sliding: size=... must be an int``,
        ``ValueError: sliding: size=... must be >= 1``, and the same two for ``step``.
        """
        size = check_int("sliding", "size", size, minimum=1)
        step = check_int("sliding", "step", step, minimum=1)
        return self._then(Sliding(size, step))

    # -- concurrent stages -----------------------------------------------------------
    def then(self, afn: Callable[[T], Awaitable[U]], /, *, stall_timeout: float | None = 60.0) -> Stream[U]:
        """Await ``afn(item)`` for every item, one at a time, in order.

        The same as ``par_then(afn, limit=1)``, with the ``repr`` ``then(afn)``; a
        failing call gets the note ``snake: raised in stage #i then(afn) on item index
        k``. ``stall_timeout`` is as for :meth:`par_then`; ``then`` has no ``timeout``.

        Raises, when called: the callable errors of :class:`Stream`, and those of
        ``stall_timeout`` listed under :meth:`par_then`.
        """
        check_callable("then", afn, want_async=True)
        stall_timeout = _check_timeout("then", stall_timeout, name="stall_timeout")
        return self._then(ParThen(afn, 1, True, name="then", stall_timeout=stall_timeout))

    def par_then(
        self,
        afn: Callable[[T], Awaitable[U]],
        /,
        *,
        limit: int | Literal["auto"] = 16,
        ordered: bool = True,
        timeout: float | None = None,
        stall_timeout: float | None = 60.0,
    ) -> Stream[U]:
        """Await ``afn(item)`` for up to ``limit`` items at once, each call in its own trio
        task: for IO (reads, HTTP requests, sleeps).

        - ``limit``: an ``int`` >= 1, or ``"auto"``: the stage starts at 16 calls at
          once and tunes itself while it runs, between 1 and 1024: it doubles its limit
          while its calls keep every slot busy and the items/s rise, and goes back
          when a step did not pay; within the pipeline's ``memory_budget``
          (:meth:`autotune`). The ``repr`` shows ``limit='auto'``;
          :attr:`StageStatistics.tuning` says what it chose and why.

        - ``ordered=True``: results come out in input order. Counting from the oldest
          call whose result has not come out yet, at most ``limit`` calls are started:
          while one call is slow, at most ``limit - 1`` later calls can start, and their
          results wait for it. ``ordered=False``: results come out in the order the
          calls finish.
        - ``timeout``: a number of seconds (``int`` or ``float``, stored as a
          ``float``), or ``None`` (the default) for no limit. A call still running
          ``timeout`` seconds after it started is cancelled, and the item fails with
          ``TimeoutError: stage #i par_then(afn, limit=16, timeout=2.0): item index k
          took longer than timeout=2.0s`` and the note ``snake: raised in stage #i ...
          on item index k``; under :meth:`on_error("skip") <on_error>` the item is
          dropped instead. :attr:`StageStatistics.timeouts` counts these items, and the
          ``repr`` shows ``timeout=2.0`` when it is set.
        - ``stall_timeout``: a number of seconds or ``None``; 60 by default. When a call
          has been awaited for ``stall_timeout`` seconds, the stage logs a ``WARNING``
          on the logger ``snake`` naming the stage, the item index and how long it has
          run, followed by where every busy task is waiting (its chain of awaits,
          trio's own frames left out). It repeats every ``stall_timeout`` seconds while
          a call stays stuck, and cancels nothing (that is ``timeout``). The watch looks
          at the calls in flight every ``min(stall_timeout / 4, 1 s)``, so the ages it
          reports are low by up to that much. :attr:`StageStatistics.stalls` counts the
          warnings; the ``repr`` shows ``stall_timeout=...`` when it is not 60.0.
          ``None`` turns the warnings off.

        Raises, when called:

        - the callable errors of :class:`Stream`;
        - ``TypeError: par_then: limit=... must be an int or 'auto'``;
        - ``ValueError: par_then: limit=... must be >= 1``;
        - ``TypeError: par_then: ordered=... must be a bool``;
        - ``TypeError: par_then: timeout=... must be a number of seconds or None`` (a
          ``bool`` is not accepted);
        - ``ValueError: par_then: timeout=... must be > 0``;
        - the same two for ``stall_timeout`` (of ``then`` too).
        """
        check_callable("par_then", afn, want_async=True)
        if not _is_auto(limit):
            limit = check_int("par_then", "limit", limit, minimum=1, auto=True)
        check_bool("par_then", "ordered", ordered)
        timeout = _check_timeout("par_then", timeout)
        stall_timeout = _check_timeout("par_then", stall_timeout, name="stall_timeout")
        return self._then(ParThen(afn, limit, ordered, timeout=timeout, stall_timeout=stall_timeout))

    def par_map(
        self,
        fn: Callable[[T], U],
        /,
        *,
        workers: int | Literal["auto"] | None = None,
        backend: Backend = "process",
        ordered: bool = True,
        worker_type: WorkerType = "auto",
        retries: int = 0,
        timeout: float | None = None,
        pool: WorkerPool | None = None,
        stall_timeout: float | None = 60.0,
        ray_options: Mapping[str, Any] | None = None,
    ) -> Stream[U]:
        """Run a sync ``fn`` on every item, in parallel: for CPU work.

        - ``workers``: the number of worker processes or threads. ``None`` means the
          number of CPUs this process may run on (``len(os.sched_getaffinity(0))`` where
          it exists, else ``os.cpu_count()``), resolved when ``par_map`` is called; with
          ``pool=``, the pool's ``workers``. ``"auto"`` (process and thread backends):
          the stage tunes its number of busy workers while it runs, within the
          pipeline's CPU budget (:meth:`autotune`; by default the CPUs this process may
          run on, less the workers of the pipeline's fixed ``par_map`` stages). It
          starts with its share of the budget, adds a worker while all of them are busy
          and that raises the items/s, and gives one back while they sit idle unless
          that lowers the items/s; with ``pool=``, at most the pool's workers.
          :attr:`StageStatistics.tuning` says what it chose and why.
        - ``backend="process"``: ``fn`` runs in snake's worker processes (below).
          ``fn`` and the items are pickled; so are the results, except large NumPy
          arrays, which come back through shared memory (below). The stage takes idle
          workers from a process-wide cache, starts new ones when there are not enough,
          and gives them back to the cache when it ends; or, with ``pool=``, uses the
          pool's. Scripts need the ``if __name__ == "__main__":`` guard.
        - ``backend="thread"``: ``fn`` runs in threads of this process: for code that
          releases the GIL, such as :mod:`snake.kernels` and most NumPy operations on
          large arrays. Nothing is pickled.
        - ``ordered``: as for :meth:`par_then`, with a window of ``2 * workers`` units.
        - ``worker_type``: how worker processes start. ``"auto"`` (the default) is
          ``"forkserver"``: each worker is forked from snake's launcher, a
          single-threaded process, in a few milliseconds. ``"spawn"``: the launcher
          starts each worker as a fresh interpreter, which imports everything again:
          slower to start. ``"fork"``: the worker is a fork of your own process. Fast,
          and the worker sees everything your process has in memory, but **unsafe once
          your process has threads** (snake's own, pyarrow's, BLAS's): the worker can
          deadlock on a lock that another thread held at the moment of the fork. Use it
          only in a process you know to be single-threaded. Worker processes need
          ``os.fork``: where it is missing, every type fails when called.
        - ``retries``: an ``int`` >= 0, process backend only. When the worker process
          running an item dies, or is killed for running past ``timeout``, the item is
          run again, alone in a call, up to ``retries`` times before the stage gives up
          on it. The other items of the lost call do not use up retries (below).
        - ``timeout``: a number of seconds (``int`` or ``float``, stored as a
          ``float``) or ``None`` (the default), process backend only. A call to a worker
          is given ``timeout`` seconds per item it carries (``timeout * len(unit)``);
          past that, its worker process is killed, and the item it was running is the
          one that timed out. A call of one item gets ``timeout`` seconds; but while
          items are fast, units hold many items, so a single slow item among them is
          stopped only once the whole unit has used up its time. An item that hangs is
          always stopped.
        - ``pool``: a :class:`WorkerPool`, process backend only. The stage runs on the
          pool's own worker processes instead of the process-wide cache; the pipeline
          must run inside the pool's ``with`` block.
        - ``stall_timeout``: a number of seconds (``int`` or ``float``, stored as a
          ``float``) or ``None``; 60 by default; both backends. When an item has been
          running for ``stall_timeout`` seconds, the stage logs a ``WARNING`` on the
          logger ``snake`` that names the stage, the item index and how long it has
          run, followed by the Python stack of every busy worker (from ``faulthandler``
          in a worker process; the thread's stack with ``backend="thread"``). The
          warning repeats every ``stall_timeout`` seconds while an item stays stuck. It
          only reports: the item goes on running (``timeout`` stops it).
          :attr:`StageStatistics.stalls` counts the warnings. ``None`` turns them off.

        The ``repr`` shows ``retries=...``, ``timeout=...``, ``stall_timeout=...`` (when
        it is not 60.0) and ``pool=<WorkerPool>`` when they are set.

        **Units.** Items go to the workers in units of several items. A unit's size is
        chosen from the measured time per item, so that one call carries about 20 ms of
        work on a process or 2 ms on a thread; the first unit holds one item, and no
        unit holds more than 1024 items. With the process backend, the stage makes one
        no-op call per worker as it opens, so the workers start while the source
        produces its first items.

        **Lost calls.** When a call is lost (its worker died, or was killed for its
        timeout), snake reads which item the worker was running: a worker writes the
        index of each item into a shared-memory slot before it starts the item. Then:

        1. the items of the call before that item had finished, but their results died
           with the worker: they run again, in a new call, whatever ``retries`` is;
        2. the item itself is run again alone, up to ``retries`` times; if it is lost
           every time, the stage fails with :class:`WorkerCrashedError` or
           ``TimeoutError``, or drops the item under :meth:`on_error("skip")
           <on_error>`;
        3. the items after it had not started: they run in a new call, as usual.

        Results keep their order. Where shared memory is not available (no writable
        ``/dev/shm``), snake cannot tell which item was running: it runs every item of
        the lost call alone, and the item whose own call is lost is the one; its
        retries start from there. :doc:`/concurrency` (Crashes and timeouts in worker
        processes) has the details.

        **Worker processes.** The first stage that needs one starts snake's
        *launcher*: one process per main process, a fresh interpreter (never a fork of
        your process), named ``snake-launcher`` in ``ps`` and ``top``. The launcher
        imports your main module (as ``__mp_main__``, so a script's code under ``if
        __name__ == "__main__":`` does not run there; without that guard it would),
        NumPy, snake's worker side and the modules of the stage functions, once; then it
        forks each worker, which starts with all of them loaded. Before each fork it
        checks that it has a single thread; if an import started threads, it starts that
        worker as a fresh interpreter instead and logs a warning on the logger
        ``snake``. Workers are named ``snake-worker``.

        - An idle worker waits in a process-wide cache for the next stage, run, epoch
          or ``open()`` of the process, for ``SNAKE_WORKER_IDLE_TIMEOUT`` seconds (an
          environment variable; 60 by default), then exits by itself. So only the first
          pipeline of a process pays for starting workers. The launcher starts when the
          first such stage is built, not when it first runs, so its start-up overlaps
          what your program does in between (building the model, say).
        - Breaking out of the loop, or cancelling the run, kills the workers that were
          busy (their calls are abandoned); the idle ones go back to the cache.
        - A worker never outlives your process: the kernel kills it when the launcher
          exits (``PR_SET_PDEATHSIG``), and the launcher exits when your process exits
          or dies; a worker also checks for its parent between calls. This holds even
          while ``fn`` is stuck in native code.
        - Workers ignore ``SIGINT``: Ctrl-C reaches your process, which cancels the run.
        - Worker processes run with ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``,
          ``MKL_NUM_THREADS`` and ``NUMEXPR_NUM_THREADS`` set to 1,
          ``JE_ARROW_MALLOC_CONF=background_thread:false``,
          ``ARROW_DEFAULT_MEMORY_POOL=system``, ``MALLOC_MMAP_THRESHOLD_=33554432``
          and ``MALLOC_TRIM_THRESHOLD_=67108864`` (glibc keeps freed memory for the
          next arrays instead of faulting in new pages), unless you set them.
        - A function defined in an interactive ``__main__`` (``python -c``, the REPL, a
          notebook) cannot be imported by a worker started from the launcher: define it
          in a module, or use ``worker_type="fork"`` in a single-threaded process.

        **Arrays through shared memory.** With the process backend, a NumPy array of 64
        KiB or more in a result (the result itself, or inside tuples, lists and dicts,
        nested; exactly those types, not subclasses; not ``dtype=object``) is written by
        the worker into a file in ``/dev/shm``, and the stage hands out an ordinary,
        writable ``ndarray`` over a mapping of that file: no pickling of its data and no
        copy in the main process. The array stays valid as long as you keep it, after
        the pipeline has ended too. The stage reuses a file for a later result only
        once nothing refers to the array any more (no view of it, no ``memoryview`` or
        other buffer export of it). Where ``/dev/shm`` is missing or not writable,
        arrays are pickled like the rest. When a run ends, however it ends, snake
        releases its progress slots and batch buffers without waiting for the garbage
        collector (it works with ``gc.disable()``), and hands its shared-memory files to
        a process-wide cache that the next run writes again (at most
        ``SNAKE_SHM_CACHE_BYTES``, 1 GiB by default, ``0`` to turn it off; emptied at
        exit); an array you still hold is never written and keeps its own mapping until
        you drop it. See :doc:`/concurrency` (Shared memory for arrays).

        **On a Ray cluster.** ``backend="ray"`` runs ``fn`` on ``workers`` Ray actors,
        on the cluster this process has initialised (``ray.init()``, or
        ``RAY_ADDRESS``), else on a local one that snake starts. Ordering, ``retries``
        (on a fresh actor), ``timeout``, ``on_error``, ``stall_timeout``, ``pool`` (a
        ``WorkerPool(backend="ray")``) and statistics work as with processes.
        ``ray_options`` go to each actor (``num_cpus``, ``num_gpus``, ``resources``,
        ``runtime_env``, ...; one CPU by default). Needs Ray: ``pip install
        'snake[ray]'``, else ``ImportError`` at the call. :doc:`/scaling` says what
        crosses Ray's object store and how failures behave.

        **Errors at run time.**

        - An exception raised by ``fn`` comes out unchanged, with the note ``snake:
          raised in stage #i par_map(...) on item index k``. From a worker process, it
          has a second note, ``snake: traceback in the worker process:`` and the
          worker's traceback text.
        - If that exception cannot be pickled: :class:`RemoteError`.
        - If a worker process dies running an item (and ``retries`` are used up):
          :class:`WorkerCrashedError`.
        - If an item runs past ``timeout`` (and ``retries`` are used up):
          ``TimeoutError: stage #i par_map(fn, workers=2, timeout=0.5): item index k
          took longer than timeout=0.5s; its worker process was killed``, with ``(N
          attempts)`` after ``timeout=0.5s`` when the item ran more than once, and the
          note ``snake: raised in stage #i ... on item index k``.
        - If the items or results cannot be pickled: the pickling error, with the note
          ``snake: stage #i ... could not exchange item indices a..b with a worker
          process``. ``on_error("skip")`` does not drop these.

        Raises, when called:

        - the callable errors of :class:`Stream`;
        - ``TypeError: par_map: pool=... must be a snake.WorkerPool``;
        - ``TypeError: par_map: workers=... must be an int or 'auto'``;
        - ``ValueError: par_map: workers=... must be >= 1``;
        - ``ValueError: par_map: workers='auto' needs backend='process' or 'thread'
          ...`` with ``backend="ray"``;
        - ``ValueError: par_map: backend=... must be one of ('process', 'thread', 'ray')``;
        - with ``backend="ray"`` and Ray not installed: ``ImportError`` saying ``pip
          install 'snake[ray]'``; ``ValueError: par_map: ray_options=... only applies to
          backend="ray"``, and with ``pool=``, ``ValueError: par_map: ray_options are set
          by the pool; leave them out with pool=``;
        - ``TypeError: par_map: ordered=... must be a bool``;
        - ``ValueError: par_map: worker_type=... must be one of ('auto', 'forkserver',
          'spawn', 'fork')``;
        - ``ValueError: par_map: worker processes need os.fork, which PLATFORM does not
          have``;
        - ``TypeError: par_map: retries=... must be an int``;
        - ``ValueError: par_map: retries=... must be >= 0``;
        - ``TypeError: par_map: timeout=... must be a number of seconds or None``;
        - ``ValueError: par_map: timeout=... must be > 0``;
        - the same two for ``stall_timeout``;
        - with ``backend="thread"`` and a ``retries`` other than 0, a ``timeout`` or a
          ``pool``: ``ValueError: par_map: retries=..., timeout=... and pool need
          backend="process" (a thread cannot crash alone or be stopped)`` (it shows both
          values, ``retries=0, timeout=None`` included);
        - with ``pool=``: ``ValueError: par_map: workers=... is more than the pool's
          N``, and ``ValueError: par_map: worker_type is set by the pool; leave it out
          with pool=`` for a ``worker_type`` other than ``"auto"``;
        - ``ValueError: par_map: worker_type=... only applies to backend="process"``
          (a ``worker_type`` other than ``"auto"`` with ``backend="thread"``);
        - with ``backend="process"``, a function that cannot be pickled: ``TypeError:
          par_map(backend="process") needs a picklable function; NAME is not
          (ErrorType: message). Define it at module level, or use backend="thread".``;
        - with ``backend="process"`` and a ``worker_type`` other than ``"fork"`` (the
          pool's, with ``pool=``), a function defined in an interactive ``__main__``:
          ``ValueError: par_map: NAME is defined in an interactive session (its
          __main__ has no file), which worker processes cannot import; define it in a
          module, or pass worker_type="fork" if this process has no other threads``.
        """
        check_callable("par_map", fn, want_async=False)
        if pool is not None and not isinstance(pool, WorkerPool):
            raise TypeError(f"par_map: pool={pool!r} must be a snake.WorkerPool")
        if workers is None:
            workers = pool.workers if pool is not None else default_workers()
        if not _is_auto(workers):
            workers = check_int("par_map", "workers", workers, minimum=1, auto=True)
        if backend not in _BACKENDS:
            raise ValueError(f"par_map: backend={backend!r} must be one of {_BACKENDS}")
        if _is_auto(workers) and backend == "ray":
            raise ValueError(
                "par_map: workers='auto' needs backend='process' or 'thread'; a Ray stage takes its "
                "actors from the cluster: give it a number of workers"
            )
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
        if backend == "process":
            check_shm_cache_bytes()
            if (worker_type if pool is None else pool.worker_type) != "fork":
                prestart_launcher()  # the launcher's start overlaps what comes before the first run
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

    @overload
    def pipe(self, fn: Callable[[Iterator[T]], Iterable[U]], /) -> Stream[U]: ...
    @overload
    def pipe(self, fn: Callable[[AsyncIterator[T]], AsyncIterable[U]], /) -> Stream[U]: ...
    def pipe(self, fn: Callable[[Any], Any], /) -> Stream[Any]:
        """A stage of your own: ``fn`` gets an iterator of the items and gives the stage's
        items, as many as it likes, keeping whatever state it needs across items.

        - **Sync**: ``fn(items)`` returns an iterable (a generator function, a class whose
          instances iterate, ...); ``items`` is a plain iterator. It runs in a worker
          thread of its own, off the event loop, so it may block and take its time.
          Items cross to the thread and back in chunks: each time its input iterator has
          given out what it holds, the thread hands back the items ``fn`` made
          meanwhile and takes the chunks that are ready (up to about 4096 items), in
          one round trip; made items also go back on a trip of their own once about
          5000 have piled up. So a generator that holds
          back its items (a running window, a packer) gives them on as it takes input.
        - **Async**: ``fn`` is an async generator function (``async def`` with
          ``yield``; also a ``functools.partial`` of one, or an object whose
          ``__call__`` is one), and ``items`` an async iterator. It runs in the stage's
          trio task, so it must not block; it may await. trio's rule holds: it must not
          ``yield`` inside a nursery or a cancel scope.

        The stage ends when ``fn``'s iterable ends; input it did not take is left
        (the stages before stop). Its items keep the order ``fn`` gives them in.

        **Errors.** An exception from ``fn`` comes out unchanged, with the note ``snake:
        raised in stage #i pipe(fn) on item index k``, ``k`` the last input it had taken
        (no index if it had taken none).

        **Stopping.** When the pipeline stops (``break``, an error elsewhere, a
        cancellation, a ``take()`` after it that has its items), the generator is
        closed: a sync one gets ``GeneratorExit`` where it waits, at a ``yield`` or in
        ``next(items)``, in its thread; an async one is closed with ``aclose()``. Its
        ``finally`` blocks and ``with`` blocks run. The stage waits for the thread to
        finish, so a sync ``fn`` that is busy stops when it next takes an input or gives
        an item.

        **Statistics.** ``items_in`` counts the items handed to ``fn``'s input iterator
        (a chunk at a time), ``items_out`` the items it gave; busy time is the stage's
        time less its waits on the stages before and after it.

        **Checkpoints.** A stage with ``fn`` in it resumes exactly when ``fn`` gives the
        same items for the same input (no randomness without a fixed seed, no clock),
        by one of two rules:

        - A plain ``fn``: a resumed run calls ``fn`` again from the start of the epoch,
          over the input from its start, and drops the items the consumer had. That
          runs the stages before it again up to the checkpoint.
        - An ``fn`` object with the methods ``state_dict()`` and
          ``load_state_dict(state)`` (``__call__`` being the generator, its state kept
          on the object, not in the generator's local variables): every run works on a
          ``copy.deepcopy(fn)``, so the object you pass is never changed. Each time its
          input iterator is about to take more input from snake (all the chunks that
          are ready, up to about 4096 items for a sync ``fn``; a chunk for an async
          one), between two inputs, snake calls ``state_dict()`` and keeps a copy. At that moment the state must hold all
          that the object needs to give the rest of its items from the inputs still to
          come (inputs it took and still needs included). A resumed run loads the
          newest such state at or before the checkpoint into a fresh copy, calls it
          over the input from there, and drops the items the consumer had: only the
          input since that state runs again. The state goes into the checkpoint, so keep it
          plain (ints, strings, lists, dicts: JSON turns tuples into lists).

        A checkpoint of a pipeline with an ``ordered=False`` stage before a ``pipe``
        raises ``ValueError`` (its input would come again in another order).

        ``repr``: ``pipe(fn)``, an object by its class name.

        Raises, when called:

        - ``TypeError: pipe: fn=... is not callable``;
        - ``TypeError: pipe: NAME is an async function that is not a generator; ...``;
        - ``TypeError: pipe: fn=NAME has state_dict() but no load_state_dict(); give
          it both, or neither`` (and the other way round);
        - ``TypeError: pipe: fn=NAME has state_dict() and load_state_dict(), so every
          run works on a copy of it, and copy.deepcopy() failed (...)``.

        At run time, a sync ``fn`` that returns no iterable (an async generator from a
        plain function, say) raises ``TypeError: pipe: NAME(items) returned
        'async_generator', not an iterable ...``; an async one that returns no async
        iterable, ``TypeError: pipe: NAME(items) returned '...', not an async iterable``.
        """
        is_async, stateful = check_pipe(fn)
        return self._then(Pipe(fn, is_async, stateful))

    def autotune(self, *, cpus: int | None = None, memory_budget: int | None = None) -> Stream[T]:
        """Set the budget that the pipeline's tuned stages share: those written with
        ``par_map(fn, workers="auto")`` or ``par_then(afn, limit="auto")``.

        It adds no stage, and may be written anywhere in the chain (the last one wins);
        the ``repr`` shows it where it was written. Without it, tuned stages have the
        default budget.

        - ``cpus``: the worker processes (or threads) that the tuned ``par_map`` stages
          may run at once, all together: an ``int`` >= 1, or ``None`` (the default) for
          the number of CPUs this process may run on. The workers of fixed ``par_map``
          stages of the same pipeline (``workers=N``, without ``pool=``) count against
          it; each tuned stage keeps at least one worker.
        - ``memory_budget``: bytes, an ``int`` >= 1, or ``None`` (the default: no
          bound). Each tuned stage gets an equal share and keeps the results it holds
          (in its calls and in its output buffer, sized from a sample of its results)
          under it: it does not grow past its share, and when over, it shrinks to the
          largest size that fits (one if none does). A share smaller than what the
          stage's output buffer alone may hold (a batch fused after the stage larger
          than a third of the share) no size can meet: the stage keeps its size, says
          so in its tuning line, and logs a warning on the ``snake`` logger.

        The streams inside ``chain``, ``zip``, ``mix`` and ``repeat`` are planned and
        run as pipelines of their own: their tuned stages share the budget of an
        ``autotune()`` written inside them (by default, the CPUs this process may run
        on), not the outer pipeline's.

        How the tuned stages move is in :doc:`/performance` (Tuned concurrency); what
        each chose and why is in :attr:`StageStatistics.tuning` and the report.

        Raises, when called: ``TypeError: autotune: cpus=... must be an int``,
        ``ValueError: autotune: cpus=... must be >= 1``, and the same two for
        ``memory_budget``.
        """
        if cpus is not None:
            cpus = check_int("autotune", "cpus", cpus, minimum=1)
        if memory_budget is not None:
            memory_budget = check_int("autotune", "memory_budget", memory_budget, minimum=1)
        return self._then(Autotune(cpus, memory_budget))

    def on_error(self, mode: ErrorMode, /, *, max_errors: float | None = None) -> Stream[T]:
        """Set what the stage just before does when its function raises for an item.

        It adds no stage: it changes the stage before it, and the ``repr`` shows it
        appended to that stage, as in ``par_map(decode, workers=2).on_error('skip',
        max_errors=5)``. It applies to ``map``, ``filter``, ``flat_map``, ``then``,
        ``par_then`` and ``par_map``. Calling it again replaces the setting;
        ``on_error("raise")`` restores the default, which the ``repr`` does not show.

        - ``"raise"`` (the default): the item's exception fails the pipeline.
        - ``"skip"``: the item is dropped (it has no result) and the stage goes on. Each
          dropped item is logged once, at ``WARNING`` on the logger ``snake.errors``:
          ``snake: skipped #i STAGE item index k after TYPE: message``, and counted in
          :attr:`StageStatistics.errors_skipped`.

        What ``"skip"`` drops: an ``Exception`` (not a ``BaseException`` such as
        ``KeyboardInterrupt``) raised by the stage's function for an item (by ``pred``
        for ``filter``; by ``fn`` or by iterating its result for ``flat_map``), and in
        ``par_then`` and ``par_map`` the item's ``TimeoutError``,
        :class:`WorkerCrashedError` and :class:`RemoteError`, once its ``retries`` are
        used up. It does not drop errors of the source or of other stages, nor a
        ``par_map`` item or result that cannot be pickled. Under ``"skip"``, ``map``,
        ``filter`` and ``flat_map`` call the function item by item instead of over a
        whole chunk at once.

        ``max_errors``, only with ``"skip"``:

        - ``None`` (the default): no limit.
        - an ``int`` ``n`` >= 0: at most ``n`` items are dropped; the next failure fails
          the pipeline. ``max_errors=0`` drops nothing.
        - a ``float`` ``f`` with ``0 < f < 1``: a fraction of the items the stage has
          received so far. When an item fails, the stage may have dropped at most
          ``max(1, int(f * r))`` items, counting this one, where ``r`` is the number of
          items the stage has received at that moment: for ``then``, ``par_then`` and
          ``par_map``, the items it has taken into calls, those in progress included;
          for ``map``, ``filter`` and ``flat_map``, the items up to and including the
          failing one. The first failure is always dropped, and failures early in the
          stream count against a small ``r``: with ``max_errors=0.02``, a second failure
          before the stage has received 100 items fails the pipeline.

        Past the limit, the failing item's exception is raised as under ``"raise"``,
        with one more note: ``snake: stage #i STAGE skipped N failing items already;
        max_errors=M allows no more (of R received)``.

        Raises, when called:

        - ``ValueError: on_error: mode=... must be one of ('raise', 'skip')``;
        - ``ValueError: on_error: max_errors=... only applies to 'skip'``;
        - ``TypeError: on_error: max_errors=... must be an int, a float or None`` (a
          ``bool`` is not accepted);
        - ``ValueError: on_error: max_errors=... must be >= 0`` (an ``int``);
        - ``ValueError: on_error: max_errors=... as a fraction must be in (0, 1)`` (a
          ``float``, ``1.0`` and ``0.0`` included);
        - when the stage before is of another kind: ``ValueError: on_error applies to
          the stage before it (map, filter, flat_map, then, par_then or par_map); that
          stage is STAGE``, where ``STAGE`` is that stage's part of the ``repr``, such as
          ``take(2)``.
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
        """A buffered shuffle: once ``buffer`` items are held, each new item takes the
        place of a random held one, which is emitted; the held items come out shuffled
        at the end.

        A buffer at least as long as the stream is a uniform shuffle. The order depends
        only on ``seed`` and the input order, not on chunk sizes or timing. Inside
        :meth:`repeat` the generator is seeded from ``(seed, epoch)``, so every epoch is
        shuffled differently and reproducibly. ``seed=None``: fresh entropy every run.
        Memory: ``buffer`` items.

        Raises, when called: ``ValueError: shuffle: buffer=0 must be >= 1``,
        ``TypeError: shuffle: seed=... must be an int or None``, ``ValueError: shuffle:
        seed=-1 must be >= 0``.
        """
        buffer = check_int("shuffle", "buffer", buffer, minimum=1)
        return self._then(Shuffle(buffer, check_seed("shuffle", seed)))

    def shard(
        self, *, rank: int | None = None, world_size: int | None = None, equal: bool = False
    ) -> Stream[T]:
        """Keep this rank's share: the items whose index ``i`` (counted at this stage) has
        ``i % world_size == rank``.

        ``rank`` and ``world_size`` default to the ``RANK`` and ``WORLD_SIZE``
        environment variables (as torchrun sets them), else to 0 and 1. Every rank must
        build the same stream (same files, same ``shuffle`` seed) for every item to go to
        exactly one rank. Sharding is by item, so every rank reads the whole source,
        except at the source (below).

        ``equal=True`` keeps only the first ``total // world_size * world_size`` items,
        so that every rank gets ``total // world_size`` (the same number of steps in
        DDP). The total is computed when ``shard`` is called, from a sized source
        (:func:`from_iterable` of something with ``len()``, :func:`from_parquet`, whose
        footers are read then, :func:`from_files`, :func:`chain`/:func:`zip`/:func:`mix`
        and ``repeat(n)`` of sized streams) through one-to-one stages (``map``,
        ``then``, ``par_then``, ``par_map``, ``enumerate``, ``shuffle``, ``prefetch``,
        ``take``, ``skip``, ``shard``, ``monitor``, ``progress``).

        **At the source.** Directly after :func:`from_parquet`, :func:`from_huggingface`
        (whose pieces are record batches or row groups) or :func:`from_files` (no
        stage between), ``shard()`` is done by the source: the rows of the epoch's row
        groups (in file order, or shuffled by ``shuffle_row_groups``), laid end to end,
        are cut into ``world_size`` contiguous shares, and rank ``r`` reads only the row
        groups that hold share ``r``. A row group at the edge of two shares is read by
        both ranks, each keeping its own rows, so every row goes to exactly one rank in
        every epoch, whatever the row-group sizes and even with more ranks than row
        groups. Shares are ``total * (r + 1) // world_size - total * r // world_size``
        rows (they differ by at most one); with ``equal=True``, ``total // world_size``
        each, the ``total % world_size`` rows at the end going to no rank. The total is
        the footers' row count, read when the stream runs. With ``filters``, shares are
        of the rows before filtering, and ``equal=True`` is refused. For
        :func:`from_files` the shares are of the paths. The ``repr`` shows it as
        written: ``from_parquet('a.parquet').shard(rank=0, world_size=2)``; a second
        ``shard()`` is by item. :attr:`PipelineStatistics.plan`
        says that the source did it.

        Raises, when called:

        - ``TypeError: shard: rank=... must be an int or None`` (and the same for
          ``world_size``);
        - ``ValueError: shard: rank=2 must be in range(world_size=2)``;
        - ``ValueError: shard: world_size=0 must be >= 1``;
        - ``ValueError: shard: rank=1 but no world_size (pass it, or set WORLD_SIZE)``;
        - ``ValueError: shard: world_size=2 but no rank (pass it, or set RANK)``;
        - ``ValueError: shard: the environment variable RANK='x' is not an int``;
        - ``ValueError: shard(equal=True) needs the number of items before it, and ...
          has no known length ...``;
        - ``ValueError: shard(equal=True) needs the number of rows of ..., which its
          filters decide only as the rows are read; use equal=False``;
        - with ``world_size > 1`` anywhere after ``from_parquet(...,
          shuffle_row_groups=True)`` or ``from_files(..., shuffle=True)`` without a
          ``seed`` (an order that differs from rank to rank): ``ValueError: shard: ...
          shuffles with fresh entropy, a different order on every rank, so ranks would
          share items; pass the same seed= on every rank``.
        """
        r, w = resolve_shard(rank, world_size)
        check_bool("shard", "equal", equal)
        source = self._specs[0]
        if isinstance(source, (FromParquet, FromFiles, FromHuggingFace)):
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
        """Run the stream so far ``epochs`` times in a row (forever with ``None``).

        Each epoch opens the stages so far afresh, as a child pipeline inside the new
        source's task (the workers of a ``par_map`` start again unless it uses a
        :class:`WorkerPool`); :func:`current_epoch` returns the epoch (0, 1, ...) in
        those stages, and a seeded ``shuffle``, ``mix``, ``from_parquet(...,
        shuffle_row_groups=True)`` or ``from_files(..., shuffle=True)`` before
        ``repeat()`` draws a new order from ``(seed, epoch)``. A stream built on a
        generator yields nothing after its first epoch; an endless ``repeat()`` of an
        epoch with no items raises ``ValueError: repeat(): epoch N of ... produced no
        items``. Exceptions get the note ``snake: in epoch N of repeat()``.

        ``repr``: ``from_iterable(<range len=4>).shuffle(8, seed=3).repeat(2)``.

        Raises, when called: ``TypeError: repeat: epochs=... must be an int``,
        ``ValueError: repeat: epochs=... must be >= 0``.
        """
        if epochs is not None:
            epochs = check_int("repeat", "epochs", epochs, minimum=0)
        return Stream((Repeat(self._specs, epochs),))

    def prefetch(self, n: int, /) -> Stream[T]:
        """A stage with a buffer: it pulls items from the stages before it, without waiting
        for the next stage, while its buffer holds fewer than ``n`` items.

        When a ``batch(size)`` is fused into it (follows it directly), the buffer counts
        batches and holds fewer than ``max(1, n // size)``. It moves whole chunks, so it
        can hold more than ``n`` items; :doc:`/concurrency` gives the memory bound.

        Raises, when called: ``TypeError: prefetch: n=... must be an int``,
        ``ValueError: prefetch: n=... must be >= 1``.
        """
        return self._then(Prefetch(check_int("prefetch", "n", n, minimum=1)))

    # -- handing over -----------------------------------------------------------------
    def to_torch(self, *, device: Any = None, pin_memory: bool = False) -> Stream[Any]:
        """Turn every NumPy array in an item into a ``torch.Tensor`` with
        ``torch.from_numpy``.

        No copy: the tensor shares the array's memory and holds a reference to it, so a
        ``batch()`` buffer is not reused while a tensor made from it lives (see
        :doc:`/batching`, Reused buffers). It walks dicts, lists, tuples and named tuples
        like torch's ``default_convert``; NumPy scalars become 0-d tensors; arrays of
        strings or objects, and anything else, pass through. A read-only array is
        copied (a tensor could otherwise write into it).

        With ``device=None`` and ``pin_memory=False`` it is an inline stage
        (microseconds a batch). ``pin_memory=True`` copies each tensor into page-locked
        memory and ``device`` (``"cuda"``, ``"cuda:1"``, a ``torch.device``) moves it
        there; then the stage runs in one thread (``par_map(backend="thread",
        workers=1)``), off the event loop, in order, and the copy from pinned memory is
        ``non_blocking``.

        torch is an optional dependency: ``import snake`` never imports it;
        ``to_torch`` does, and without torch raises ``ImportError: to_torch needs
        PyTorch, ...`` with how to install a CPU build.

        Raises, when called:

        - ``TypeError: to_torch: device=... must be a str, a torch.device or None``;
        - ``ValueError: to_torch: device='...' is not a torch device (...)``;
        - ``ValueError: to_torch: device='cuda' needs CUDA, and
          torch.cuda.is_available() is False``, and the same for ``pin_memory=True``;
        - ``TypeError: to_torch: pin_memory=... must be a bool``.
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
        """A pass-through stage that calls ``callback(metrics)`` with a flat
        ``dict[str, float]`` about the items passing it.

        The keys: ``items`` (so far), ``items_per_s`` (since the previous call),
        ``elapsed_s`` (since the first item), and, when the items are NumPy arrays or
        dicts/tuples of them, ``bytes`` and ``bytes_per_s`` (from ``nbytes``). It fits
        ``wandb.log``, ``mlflow.log_metrics``, or setting a Prometheus gauge.

        An inline stage: it runs in the task of the stage before it, each time a chunk
        passes, and calls ``callback`` when ``every`` seconds have passed since the
        previous call (``every=0``: at every chunk), and once more at the end of the
        stream. Nothing is called while no chunk passes. Keep ``callback`` quick; an
        exception from it fails the pipeline, with a note naming the stage.

        Raises, when called: ``TypeError: monitor: every=... must be a number of
        seconds``, ``ValueError: monitor: every=... must be >= 0``, and the callable
        errors of :class:`Stream` for ``callback`` (which must be sync).
        """
        check_callable("monitor", callback, want_async=False)
        if isinstance(every, bool) or not isinstance(every, (int, float)):
            raise TypeError(f"monitor: every={every!r} must be a number of seconds")
        if not every >= 0:
            raise ValueError(f"monitor: every={every!r} must be >= 0")
        return self._then(Monitor(callback, float(every)))

    def progress(self, *, total: int | None = None, desc: str | None = None) -> Stream[T]:
        """A pass-through inline stage that draws a `tqdm <https://tqdm.github.io/>`_ bar
        of the items passing it, on stderr.

        ``total`` defaults to the stream's length when it is known before running, as
        for ``shard(equal=True)``: a sized source (a ``range``, a list,
        :func:`from_parquet`, whose footers are read then, :func:`from_files`,
        ``chain``/``zip``/``mix`` and ``repeat(n)`` of sized streams) and only
        one-to-one stages after it (``map``, ``then``, ``par_then``, ``par_map``,
        ``enumerate``, ``shuffle``, ``prefetch``, ``take``, ``skip``, ``shard``,
        ``monitor``, ``progress``); if sizing fails (a missing file), no total. tqdm is
        an optional dependency: without it, ``progress()`` logs ``N/TOTAL items, R
        items/s`` at level ``INFO`` on the ``snake.progress`` logger every 5 s and at
        the end.

        Raises, when called: ``TypeError: progress: total=... must be an int``,
        ``ValueError: progress: total=... must be >= 0``, ``TypeError: progress:
        desc=... must be a str or None``.
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
    def open(self, *, state_dict: dict[str, Any] | None = None) -> AbstractAsyncContextManager[Items[T]]:
        """Run the pipeline in the current trio run: ``async with stream.open() as
        items: async for x in items: ...``.

        Starts every stage in one trio nursery and yields an :class:`Items`. Must be
        used inside a trio run (from asyncio code, use :func:`snake.aio.open`). Leaving
        the block, normally or by an exception, cancels every stage and waits for all of
        them, worker processes and threads included. If a stage fails, the block raises
        the stage's exception unchanged, with its notes (never an ``ExceptionGroup`` of
        one). An exception raised in the block's body also comes out unchanged.

        ``state_dict``: a checkpoint of this pipeline, from :meth:`Items.state_dict`, to
        resume from: the items come as an uninterrupted run would have given them after
        it (for a pipeline with unordered stages, the same items in another order).
        Raises ``ValueError`` at the call for a checkpoint of another pipeline, naming
        the first stage that differs, or of another format, or when the source cannot
        be resumed (a one-shot iterator; :doc:`/tutorial`, Checkpoints).
        """
        p = self._planned(state_dict)
        return open_pipeline(list(p.specs), p.notes, state_dict)

    def open_sync(self, *, state_dict: dict[str, Any] | None = None) -> AbstractContextManager[SyncItems[T]]:
        """Run the pipeline in a helper thread: ``with stream.open_sync() as items: for x
        in items: ...``.

        Runs the pipeline under ``trio.run`` in a helper thread (named
        ``snake-pipeline``) and yields a :class:`SyncItems`. Iterating blocks the
        calling thread, so this is for code that is not async, such as a PyTorch or JAX
        training loop; items cross to your thread in whole chunks. Leaving the block
        cancels the run and joins the thread. Errors of the pipeline are raised from the
        loop, or from the end of the block if you stopped reading first. If the helper
        thread has not stopped 30 s after being cancelled, leaving the block raises
        ``RuntimeError: snake: the pipeline thread did not stop within 30 s of being
        cancelled ...``.

        ``state_dict``: a checkpoint to resume from, as for :meth:`open`.
        """
        p = self._planned(state_dict)
        return open_sync(list(p.specs), p.notes, state_dict)

    def _planned(self, state_dict: dict[str, Any] | None) -> Plan:
        """The plan to run; a checkpoint to resume from is checked against it here, at the call."""
        p = plan(self._specs)
        if state_dict is not None:
            check_state(state_dict, stage_labels(list(p.specs)))
            check = getattr(p.specs[0], "check_resumable", None)
            if check is not None:
                check()
        return p

    def __iter__(self) -> Iterator[T]:
        """``for x in stream:`` runs the pipeline with :meth:`open_sync` for the duration
        of the loop.

        Every ``for`` is a new run. The pipeline stops when the loop's iterator is
        closed; on CPython that is as soon as the loop ends, by ``break`` or an
        exception. Use ``with stream.open_sync() as items:`` to choose the point where
        it stops, whatever the interpreter.
        """
        with self.open_sync() as items:
            yield from items

    def __aiter__(self) -> NoReturn:
        """Not supported: a ``Stream`` is a description, not an async iterator.

        ``async for x in stream`` raises ``TypeError: a Stream is a description, not an
        async iterator; run it with 'async with stream.open() as items: async for x in
        items: ...'``.
        """
        raise TypeError(
            "a Stream is a description, not an async iterator; run it with "
            "'async with stream.open() as items: async for x in items: ...'"
        )

    async def collect(self) -> list[T]:
        """Run the pipeline in the current trio run (with :meth:`open`) to the end and
        return its items as a list.
        """
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
        """Run the pipeline in a helper thread (with :meth:`open_sync`) to the end and
        return its items as a list.
        """
        with self.open_sync() as items:
            return list(items)

    def write_parquet(
        self,
        directory: str | os.PathLike[str],
        /,
        *,
        max_shard_size: int | str = "500MB",
        split: str | None = "train",
        features: Any = None,
        row_group_rows: int = 1000,
        progress: bool = True,
        overwrite: bool = False,
    ) -> list[str]:
        """Run the pipeline (with :meth:`open_sync`, as :meth:`to_list`) and write its
        items to Parquet shards in ``directory``, named as on the Hugging Face Hub:
        ``train-00000-of-00003.parquet``, ... (``00000-of-00003.parquet`` with
        ``split=None``). Returns the shards' paths, in order.

        The items are rows (dicts of column values) or pyarrow ``RecordBatch`` /
        ``Table`` objects (:func:`from_parquet` with ``rows=False``). The columns'
        types come from ``features`` (a ``datasets.Features``, whose rows are
        encoded by ``Features.encode_example``, so an ``Image`` column takes
        ``PIL`` images, and whose schema is stored in the shards so that
        ``datasets`` and :func:`from_huggingface` decode them; or a
        ``pyarrow.Schema``), else from the first row group. Binary columns are
        stored as they are; an Image or Audio struct ``{'bytes': None, 'path':
        FILE}`` gets the file's bytes embedded (its path cut to the file name), so
        the shards stand alone.

        Row groups hold ``row_group_rows`` rows (1,000 by default), or fewer once
        their bytes and strings reach 64 MiB. A shard is closed after the row group
        that brings it to ``max_shard_size`` bytes on disk (so it may pass that by
        one row group); ``max_shard_size`` is an int or a str: ``"500MB"`` (units
        of 1000: B, KB, MB, GB, TB) or ``"1GiB"`` (of 1024: KiB, MiB, GiB, TiB).

        Each shard is written under a hidden temporary name (``.train-00003-….parquet.tmp``)
        and flushed to disk when it is full; all of them are renamed to their
        final names when the stream ends and their number is known. A crash
        (a killed process, a power cut) never leaves a file under a final name
        that is not complete; an exception removes the temporary files and comes
        out unchanged. Existing shards of ``split`` in ``directory`` make it raise
        ``FileExistsError`` before anything runs, unless ``overwrite=True`` (then
        they are removed once the new shards are in place).

        ``progress=True`` adds :meth:`progress` (a tqdm bar of the rows) before
        writing. The rows are turned into Parquet in the calling thread while the
        pipeline runs ahead. From trio code, call it in a thread:
        ``await trio.to_thread.run_sync(functools.partial(stream.write_parquet, "out"))``.

        Raises, when called:

        - ``TypeError: write_parquet: directory=... must be a str path``;
        - ``TypeError: write_parquet: max_shard_size=... must be a number of bytes
          or a str such as '500MB'``, ``ValueError: write_parquet:
          max_shard_size='500 MBs' is not a size: ...``, ``ValueError:
          write_parquet: max_shard_size=0 must be at least 1 byte``;
        - ``ValueError: write_parquet: split='a/b' must be a name of letters,
          digits, '_' and '.', or None``;
        - ``TypeError: write_parquet: features=... must be a datasets.Features, a
          pyarrow.Schema or None``;
        - ``TypeError``/``ValueError`` for ``row_group_rows`` (``must be an int``,
          ``must be >= 1``); ``TypeError: write_parquet: NAME=... must be a bool``
          for ``progress`` and ``overwrite``;
        - ``FileExistsError: write_parquet: '...' already holds shards of split
          'train' (...); pass overwrite=True to replace them``.

        While it runs: ``TypeError: write_parquet: item 3 is a list, not a row
        ...``, and ``TypeError: write_parquet: rows 1000..1999 have the schema
        {...}, which does not fit the schema {...} of the rows before them or of
        features= ...``.
        """
        from ._ops.write import ShardWriter, check_features, check_split, parse_size, write_rows

        method = "write_parquet"
        if not isinstance(directory, (str, os.PathLike)) or not isinstance(os.fspath(directory), str):
            raise TypeError(f"{method}: directory={directory!r} must be a str path")
        path = str(os.fspath(directory))
        max_bytes = parse_size(method, "max_shard_size", max_shard_size)
        split = check_split(method, split)
        features = check_features(method, features)
        row_group_rows = check_int(method, "row_group_rows", row_group_rows, minimum=1)
        check_bool(method, "progress", progress)
        check_bool(method, "overwrite", overwrite)
        os.makedirs(path, exist_ok=True)
        writer = ShardWriter(path, split, max_bytes, row_group_rows, features, overwrite)
        existing = writer.existing()
        if existing and not overwrite:
            raise FileExistsError(
                f"{method}: {path!r} already holds shards of split {split!r} ({existing[0]}, ...); "
                "pass overwrite=True to replace them"
            )
        stream = self.progress(desc=f"write_parquet {split or ''}".rstrip()) if progress else self
        with stream.open_sync() as items:
            return write_rows(items, writer)

def from_iterable(iterable: Iterable[T] | Callable[[], Iterable[T]], /) -> Stream[T]:
    """A stream of the items of a sync iterable, or of the iterable a function of no
    arguments returns.

    snake iterates it on the trio event loop, in chunks, so iterating must be cheap
    (a ``range``, a list, a fast generator): slow reads belong in
    :meth:`Stream.par_then` or :func:`from_async_iterable`. A generator can only be
    iterated once: a stream built on one gives its items at the first run and no
    items at later runs. Pass a function of no arguments that returns the iterable (a
    generator function, say) to get a stream that can be opened again: for every
    epoch of ``repeat()``, and to resume from a checkpoint.

    Resuming from a checkpoint: a ``Sequence`` (a list, a ``range``) seeks to the
    position; any other iterable is iterated again from its start and the items
    before the position are skipped (counted as ``replayed`` in statistics); a
    one-shot iterator cannot be resumed (``ValueError`` at ``open``).

    ``repr``: the iterable's type name, and its length if ``len()`` works on it:
    ``from_iterable(<range len=100>)``, ``from_iterable(<generator>)``; for a function,
    its name: ``from_iterable(numbers)``.

    At run time, an exception raised by ``iter(iterable)`` or by iterating it gets
    the note ``snake: raised in stage #0 from_iterable(...)``; an exception while
    iterating also gets ``snake: N items had been produced before it``, where ``N``
    counts the items of the chunks before the one being read when it failed.

    Raises, when called: ``TypeError: from_iterable: ... is neither iterable nor a
    function returning an iterable`` for anything else, and ``TypeError`` for an
    async function.
    """
    if not isinstance(iterable, Iterable):
        if not callable(iterable):
            raise TypeError(f"from_iterable: {iterable!r} is neither iterable nor a function returning an iterable")
        check_callable("from_iterable", iterable, want_async=False)
    return Stream((FromIterable(iterable),))


def from_async_iterable(source: AsyncIterable[T] | Callable[[], AsyncIterable[T]], /) -> Stream[T]:
    """A stream of the items of an async iterable.

    ``source`` is either an async iterable or a function that returns one (such as
    an async generator function). snake calls the function once per run, so a stream
    built on a function can be opened many times; a stream built on an async
    iterable object iterates that one object. An async generator is closed
    (``aclose()``) when the run ends.

    Resuming from a checkpoint iterates the source again from its start and skips the
    items before the position (counted as ``replayed`` in statistics), so it needs a
    function; a stream built on an async iterable object cannot be resumed
    (``ValueError`` at ``open``).

    ``repr``: ``from_async_iterable(fn)`` for a function,
    ``from_async_iterable(<async_generator>)`` for an object.

    At run time, if the function returns something without ``__aiter__``, the run
    fails with ``TypeError: from_async_iterable: fn() returned 'list', not an async
    iterable``. Exceptions from the source get the note ``snake: raised in stage #0
    from_async_iterable(...)``.

    Raises, when called: ``TypeError: from_async_iterable: ... is neither an async
    iterable nor a function returning one`` if ``source`` is neither an async
    iterable nor callable.
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

    Each input runs as a child pipeline, opened inside the combined source's task,
    one at a time: its stages are tasks of nurseries nested in that task, so they
    live and die inside the outer pipeline. An input's exception comes out unchanged
    with the note ``snake: in input I of chain()``; leaving the outer ``open()``
    block cancels every input. The outer :meth:`Items.statistics` shows the
    combined source as one stage. The same holds for :func:`zip` and :func:`mix`,
    whose inputs run all at once.

    Raises, when called: ``ValueError: chain: needs at least one stream``,
    ``TypeError: chain: ... is not a snake.Stream``.
    """
    return Stream((Chain(_check_streams("chain", streams)),))


def zip(*streams: Stream[Any]) -> Stream[tuple[Any, ...]]:
    """Tuples of one item of each stream, until the shortest ends (like the builtin
    ``zip``).

    The inputs run concurrently, as child pipelines inside the zip's source task
    (see :func:`chain`); an input's exception gets the note ``snake: in input I of
    zip()``.

    Raises, when called: ``ValueError: zip: needs at least one stream``,
    ``TypeError: zip: ... is not a snake.Stream``.
    """
    return Stream((Zip(_check_streams("zip", streams)),))


def mix(
    streams: Sequence[Stream[T]],
    /,
    weights: Sequence[float] | Callable[[int], Sequence[float]] | None = None,
    *,
    seed: int | None = None,
    on_exhausted: Literal["drop", "stop", "restart"] = "drop",
    max_restarts: int | None = None,
) -> Stream[T]:
    """Interleave streams at random: each item comes from stream ``i`` with
    probability proportional to ``weights[i]`` (equal weights by default).

    ``on_exhausted`` says what happens when the stream drawn has no items left:

    - ``"drop"`` (the default): it drops out, the weights of the others
      renormalise, and the mix ends once every stream has ended. Every item of
      every stream comes out exactly once, so the proportions follow the weights
      only until the first stream ends; over a whole run they follow the
      streams' sizes.
    - ``"stop"``: the mix ends there (tf.data's ``stop_on_empty_dataset=True``).
      The proportions follow the weights to the end; what the other streams had
      left is not given.
    - ``"restart"``: the stream is opened again and the mix goes on: sampling
      with replacement, a small stream comes round several times. Its ``r``-th
      restart runs in epoch ``e + r``, where ``e`` is the epoch around the mix
      (:func:`current_epoch`, 0 outside a :meth:`Stream.repeat`), so a seeded
      ``shuffle`` in it draws a new order each time. With ``max_restarts=None``
      the mix is endless (end it with ``take()``); with ``max_restarts=n`` each
      stream is opened again at most ``n`` times, and the mix ends, as with
      ``"stop"``, when a stream that has used its restarts ends once more. The
      proportions follow the weights to the end.

    ``"drop"`` is the default because it neither loses nor repeats an item: a
    finite mix gives everything its streams hold, like :func:`chain`. Choose
    ``"stop"`` or ``"restart"`` when the proportions matter more than seeing
    each item once.

    ``weights`` may also be a function of the epoch, ``weights(epoch)``
    returning one weight per stream: it is asked at the start of each run of
    the mix, with the epoch of the ``repeat()`` around it (0 without one), which
    makes a schedule of weights over epochs. It is called once, with 0, when
    ``mix()`` is called, to check it. For checkpoints to resume exactly it must
    give the same weights whenever it is asked for the same epoch. Weights given
    as a list are part of the stage's description, so a checkpoint of a mix
    with other list weights is refused; to change them between separate runs
    and resume, use a function of the epoch: its checkpoints resume with the
    weights of their epoch.

    The sequence of choices depends only on ``seed`` and the epoch, not on
    timing; ``seed=None`` draws fresh entropy on every run. The inputs run
    concurrently, as child pipelines inside the mix's source task (see
    :func:`chain`); an input's exception gets the note ``snake: in input I of
    mix()``, and after a restart also ``snake: in restart R (epoch E) of input
    I of mix()``. A checkpoint (``items.state_dict()``) holds the position of
    the random draws, each input's own checkpoint and, with ``"restart"``, the
    run it is in.

    ``repr``: ``mix([from_iterable(<range len=3>), from_iterable(<list len=1>)],
    weights=[3.0, 1.0], seed=0, on_exhausted='restart', max_restarts=2)``;
    ``on_exhausted`` and ``max_restarts`` appear when not default, a function of
    the epoch by its name.

    Raises, when called:

    - ``TypeError: mix: pass a list of streams, not one Stream``;
    - ``TypeError: mix: streams=... must be a list of streams``;
    - ``ValueError: mix: needs at least one stream``;
    - ``TypeError: mix: ... is not a snake.Stream``;
    - ``TypeError: mix: weights=... must be a list of numbers``, ``TypeError: mix:
      weights=[...] must be numbers``;
    - ``ValueError: mix: weights=[...] has N weights for M streams``;
    - ``ValueError: mix: weights=[...] must all be > 0 and finite``;
    - the same with ``weights(0)=...`` for what a function of the epoch returns
      for epoch 0 (and ``weights(E)=...`` when a run asks it for epoch ``E``);
    - ``TypeError: mix: seed=... must be an int or None``, ``ValueError: mix:
      seed=-1 must be >= 0``;
    - ``ValueError: mix: on_exhausted=... must be one of ('drop', 'stop',
      'restart')``;
    - ``TypeError: mix: max_restarts=... must be an int``, ``ValueError: mix:
      max_restarts=-1 must be >= 0``, ``ValueError: mix: max_restarts=2 needs
      on_exhausted='restart'``.

    At run time, ``on_exhausted="restart"`` with ``max_restarts=None`` raises
    ``ValueError: mix(): input I, ..., gave no items in its run R`` for an
    input that gives no items (a stream built on a generator, restarted).
    """
    inputs = _check_streams("mix", streams)
    ws: tuple[float, ...] | Callable[[int], Sequence[float]]
    if weights is None:
        ws = (1.0,) * len(inputs)
    elif callable(weights):
        check_weights("weights(0)", weights(0), len(inputs))
        ws = weights
    else:
        ws = check_weights("weights", weights, len(inputs))
    if on_exhausted not in ON_EXHAUSTED:
        raise ValueError(f"mix: on_exhausted={on_exhausted!r} must be one of {ON_EXHAUSTED}")
    if max_restarts is not None:
        max_restarts = check_int("mix", "max_restarts", max_restarts, minimum=0)
        if on_exhausted != "restart":
            raise ValueError(f"mix: max_restarts={max_restarts} needs on_exhausted='restart'")
    return Stream((Mix(inputs, ws, check_seed("mix", seed), on_exhausted, max_restarts),))


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
    """The rows of Parquet files: dicts (``rows=True``), or pyarrow record batches
    of up to ``batch_rows`` rows (``rows=False``).

    ``paths`` is a path, a glob pattern (its matches, sorted) or a list of paths.
    Row groups are read in up to ``readers`` threads at once (``trio.to_thread``,
    one pyarrow reader per read) and come out in file and row-group order; at most
    ``readers`` row groups wait in memory. Only ``columns`` are read. Binary columns
    come through as ``bytes``. pyarrow is imported when the stream runs or is sized
    (or when ``filters`` in list form are checked), never by ``import snake``.

    - ``filters``: keep the rows that match, applied as each row group is read. A
      ``pyarrow.compute.Expression`` (``(pc.field("label") < 10) &
      (pc.field("split") == "train")``), or the disjunctive normal form of
      ``pyarrow.parquet``: a list of ``(column, op, value)`` tuples, AND-ed (ops
      ``=``/``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in``, ``not in``), or a
      list of such lists, OR-ed. Row groups whose min/max statistics rule out every
      row are not read (pyarrow's ``ParquetFileFragment.subset``); the other rows
      are filtered with ``Table.filter``. The filter may use columns outside
      ``columns``: they are read, used and dropped. With ``filters``, the number of
      rows is not known before running (a later ``shard(equal=True)`` or
      ``progress()`` cannot size it).
    - ``shuffle_row_groups=True``: the row groups of all files in a random order
      drawn from ``(seed, epoch)`` (``epoch`` from :meth:`Stream.repeat`, 0 outside
      one): the same order on every rank and every run for a ``seed``, a new one
      each epoch; ``seed=None`` is fresh entropy on every run. Rows within a row
      group keep their order (follow with :meth:`Stream.shuffle`). All footers are
      read before the first row group.
    - ``read=False``: yield one :class:`ParquetRowGroup` handle per row group (per
      row range, after ``shard()``) instead of its rows; nothing is read in the main
      process but the footers, and ``readers`` does not apply. Read the handles in
      ``par_map`` worker processes, so that the data never passes through the main
      process.

    :meth:`Stream.shard` directly after ``from_parquet`` shards at the source, by
    rows.

    ``repr``: ``from_parquet('data/part-0.parquet', columns=['id'])``, or
    ``from_parquet(<3 files: 'a.parquet', ...>, filters=[('label', '<', 10)],
    shuffle_row_groups=True, seed=0).shard(rank=0, world_size=2)`` (an expression
    shows as ``filters=<Expression (label < 10)>``).

    At run time, a missing file raises ``FileNotFoundError`` whose ``filename`` is
    the path; a file pyarrow cannot read raises pyarrow's error unchanged with the
    note ``snake: while reading the Parquet file '...'`` (and ``snake: in row group
    N`` when a row group fails). A filter on a column that a file lacks raises
    ``ValueError: from_parquet: filters=[('nope', '=', 1)] refer to the column
    'nope', which the Parquet file 'a.parquet' does not have (its columns: id,
    label)``; a filter pyarrow cannot apply to a file (a string column compared
    with a number) raises pyarrow's error with the file's note.

    Raises, when called:

    - ``ValueError: from_parquet: the pattern '...' matches no file``;
    - ``TypeError: from_parquet: ... must be a path, a glob pattern or a list of
      paths``, ``TypeError: from_parquet: ... in paths is not a str path``;
    - ``TypeError: from_parquet: columns=... must be a list of column names``;
    - ``TypeError``/``ValueError`` for ``batch_rows`` and ``readers``: ``must be an
      int``, ``must be >= 1``;
    - ``TypeError: from_parquet: filters='id > 3' must be a
      pyarrow.compute.Expression or a list of (column, op, value) tuples (or a list
      of such lists, OR-ed)``;
    - ``ValueError: from_parquet: filters=[('id', '~', 3)] is not a valid filter:
      "~" is not a valid operator in predicates.``;
    - ``ValueError: from_parquet: filters=[] is empty; leave it out (None) to keep
      every row``;
    - ``TypeError: from_parquet: NAME=... must be a bool`` for ``rows``,
      ``shuffle_row_groups`` and ``read``;
    - ``ValueError: from_parquet: seed=1 only applies with
      shuffle_row_groups=True``, and the seed errors of :meth:`Stream.shuffle`.
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


def from_huggingface(
    dataset: Any,
    /,
    *,
    split: str | None = None,
    columns: Sequence[str] | None = None,
    decode: bool = True,
    workers: int | None = None,
    backend: Literal["process", "thread"] = "process",
    shuffle_row_groups: bool = False,
    seed: int | None = None,
    read: bool = True,
) -> Stream[dict[str, Any]]:
    """The rows of a Hugging Face dataset, as dicts, read and decoded in parallel
    from the dataset's own files.

    ``dataset`` is a ``datasets.Dataset`` (its ``cache_files``: the Arrow files
    that ``load_from_disk``, ``load_dataset`` or ``map`` wrote), a ``DatasetDict``
    (with ``split=``), the path of a directory written by ``save_to_disk`` (of a
    ``Dataset``, or of a ``DatasetDict`` with ``split=``), or the path of a
    directory of Parquet shards laid out as on the Hub (``train-00000-of-00004.parquet``,
    ``data/train-*.parquet``, ``train/0000.parquet``: the splits are found by the
    rules of ``datasets``; ``split=`` picks one, and may be left out when there is
    one). The files are found when ``from_huggingface`` is called; only their sizes
    are read in the main process, when the stream runs.

    The rows are cut into *pieces*: the record batches of the Arrow files (as
    ``datasets`` wrote them: up to 1,000 rows, 100 for images and audio), or the
    row groups of the Parquet shards. Each piece is read and decoded in one of
    ``workers`` ``par_map`` workers (processes, or threads with
    ``backend="thread"``), and the rows come out in the dataset's order. Decoding
    is the dataset's ``Features.decode_example``: an ``Image`` column gives a
    ``PIL.Image.Image``, an ``Audio`` column a dict of samples and sampling rate,
    a ``ClassLabel`` an int, as indexing the dataset does. With ``decode=False``
    the rows are as stored (an ``Image`` is ``{'bytes': b'...', 'path': ...}``).
    For a Parquet directory, the features are those that ``datasets`` wrote into
    the first shard's schema, else what ``Features.from_arrow_schema`` infers.

    - ``columns``: read only these.
    - ``shuffle_row_groups=True``: the pieces in a random order drawn from
      ``(seed, epoch)``, as :func:`from_parquet` does with its row groups; rows
      within a piece keep their order (follow with :meth:`Stream.shuffle`).
    - ``read=False``: yield one :class:`HuggingFacePiece` handle per piece
      instead, and read them in your own ``par_map``, with your transforms after
      the decoding, then ``flat_map``: the decoded rows never pass through the
      main process. ``workers`` and ``backend`` do not apply.

    :meth:`Stream.shard` directly after ``from_huggingface`` shards at the source,
    by rows, as for :func:`from_parquet`. The stream is sized (``progress()`` and
    ``shard(equal=True)`` know its rows), and takes part in checkpoints: a resumed
    stream reads again only the piece of the checkpoint, from its row.

    ``datasets`` is optional: ``import snake`` never imports it.

    ``repr``: ``from_huggingface('data/cats', split='train', workers=4)``, or
    ``from_huggingface(<Dataset 250 rows>, workers=2, shuffle_row_groups=True,
    seed=0).shard(rank=0, world_size=2)``.

    At run time, a piece that cannot be read raises pyarrow's error with the note
    ``snake: while reading the Arrow file '...', record batch N`` (or the notes of
    :func:`from_parquet`); a value that cannot be decoded (a broken image) raises
    the decoder's error, with the notes of the ``par_map`` stage.

    Raises, when called:

    - ``ImportError: from_huggingface needs the Hugging Face datasets package: pip
      install "snake[huggingface]" (or pip install datasets)``;
    - ``FileNotFoundError: from_huggingface: no such directory``, with the path;
    - ``TypeError: from_huggingface: ... must be a datasets.Dataset, a
      DatasetDict, or the path of a directory (save_to_disk's, or Parquet
      shards)``, and for an ``IterableDataset`` (``streaming=True``), which has
      no files;
    - ``ValueError: from_huggingface: <Dataset 250 rows> is held in memory, not
      in files, ...`` (a dataset made by ``from_dict`` and not saved);
    - ``ValueError: from_huggingface: ... has an indices mapping ...; call
      .flatten_indices() first`` (after ``select``, ``shuffle``, ``filter``);
    - ``ValueError: from_huggingface: ... differs from its files ...`` (sliced,
      renamed, cast, or with columns added in memory);
    - ``ValueError: from_huggingface: ... has the splits ['test', 'train']; pass
      split= to choose one``, ``ValueError: from_huggingface: split='dev' is not
      one of the splits of ...``, ``ValueError: from_huggingface: '...' holds no
      Parquet files``;
    - ``TypeError: from_huggingface: columns=... must be a list of column
      names``, ``ValueError: from_huggingface: columns=['nope']: 'nope' is not a
      column of ...``;
    - ``TypeError: from_huggingface: NAME=... must be a bool`` for ``decode``,
      ``shuffle_row_groups`` and ``read``; the ``workers`` and ``backend`` errors
      of :meth:`Stream.par_map`; ``ValueError: from_huggingface: seed=1 only
      applies with shuffle_row_groups=True``, and the seed errors of
      :meth:`Stream.shuffle`.
    """
    from ._ops.huggingface import Found, check_columns, resolve

    method = "from_huggingface"
    check_bool(method, "decode", decode)
    check_bool(method, "shuffle_row_groups", shuffle_row_groups)
    check_bool(method, "read", read)
    seed = check_seed(method, seed)
    if seed is not None and not shuffle_row_groups:
        raise ValueError(f"{method}: seed={seed!r} only applies with shuffle_row_groups=True")
    workers = check_int(method, "workers", default_workers() if workers is None else workers, minimum=1)
    if backend not in ("process", "thread"):
        raise ValueError(f"{method}: backend={backend!r} must be one of ('process', 'thread')")
    found: Found = resolve(method, dataset, split)
    cols = check_columns(method, columns, found)
    # The workers read with pyarrow: the launcher imports it once, so no worker pays for it.
    preload_in_workers("pyarrow.parquet", "datasets")
    return Stream(
        (FromHuggingFace(found, cols, decode, workers, backend, shuffle_row_groups, seed, read, split),)
    )


def from_files(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    /,
    *,
    shuffle: bool = False,
    seed: int | None = None,
) -> Stream[str]:
    """File paths: the sorted matches of a glob pattern, or the given paths in order.

    Read them with ``.par_then(snake.read_bytes, limit=N)`` to overlap the reads
    (:func:`read_bytes`). The stream is sized: ``shard(equal=True)`` and
    ``progress()`` know its length. ``shuffle=True`` gives the paths in a random
    order drawn from ``(seed, epoch)``, as ``from_parquet``'s
    ``shuffle_row_groups``: the same on every rank for a ``seed``, a new one in
    each epoch of :meth:`Stream.repeat`. A :meth:`Stream.shard` right after takes
    this rank's contiguous share of that order.

    Raises, when called: ``ValueError: from_files: the pattern '...' matches no
    file``, the path errors of :func:`from_parquet`, ``ValueError: from_files:
    seed=... only applies with shuffle=True``, and the seed errors of
    :meth:`Stream.shuffle`.
    """
    resolved = resolve_paths("from_files", paths)
    check_bool("from_files", "shuffle", shuffle)
    seed = check_seed("from_files", seed)
    if seed is not None and not shuffle:
        raise ValueError(f"from_files: seed={seed!r} only applies with shuffle=True")
    return Stream((FromFiles(resolved, shuffle, seed),))
