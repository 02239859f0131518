"""``pipelines()``: a Hypothesis strategy of random stage chains that know their reference."""

from __future__ import annotations

import pickle
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, final

import attrs
import trio
from hypothesis import strategies as st

from .._engine.util import describe_callable, is_async_callable
from .._stream import Stream, from_iterable
from .._workers.pool import WorkerPool
from ._model import (
    LAW_ERRORS,
    LAW_RUNS_AGREE,
    LAW_STOP,
    Expect,
    Tail,
    count,
    same_list,
    short,
)
from ._resume import resume_law
from ._run import collect_open, collect_sync, refuse_trio, release_check, run_coroutines, run_open

Backend = Literal["thread", "process"]
_BACKENDS = ("thread", "process")


def _identity(x: Any) -> Any:
    """A pass-through for par_map stages when no map function is given (picklable)."""
    return x


async def _aidentity(x: Any) -> Any:
    """A pass-through with a checkpoint, for then/par_then stages."""
    await trio.lowlevel.checkpoint()
    return x


@attrs.frozen
class _Op:
    """One body stage of a drawn pipeline, and what it means on a plain list."""

    name: Literal[
        "map", "filter", "flat_map", "take", "skip", "prefetch", "shuffle", "then", "par_then", "par_map"
    ]
    fn: Any = None
    n: int = 0
    ordered: bool = True
    backend: Backend = "thread"
    seed: int = 0
    pool: WorkerPool | None = attrs.field(default=None, eq=False)

    @property
    def unordered(self) -> bool:
        return self.name == "shuffle" or (self.name in ("par_then", "par_map") and not self.ordered)

    def add_to(self, s: Stream[Any]) -> Stream[Any]:
        name = self.name
        if name == "map":
            return s.map(self.fn)
        if name == "filter":
            return s.filter(self.fn)
        if name == "flat_map":
            return s.flat_map(self.fn)
        if name == "take":
            return s.take(self.n)
        if name == "skip":
            return s.skip(self.n)
        if name == "prefetch":
            return s.prefetch(self.n)
        if name == "shuffle":
            return s.shuffle(self.n, seed=self.seed)
        if name == "then":
            return s.then(self.fn)
        if name == "par_then":
            return s.par_then(self.fn, limit=self.n, ordered=self.ordered)
        if self.pool is not None:
            return s.par_map(self.fn, pool=self.pool, workers=self.n, ordered=self.ordered)
        return s.par_map(self.fn, workers=self.n, backend=self.backend, ordered=self.ordered)

    async def on_list(self, xs: list[Any]) -> list[Any]:
        """The stage applied to ``xs`` in order, one item after another."""
        name, fn = self.name, self.fn
        if name in ("map", "par_map"):
            return [fn(x) for x in xs]
        if name == "filter":
            return [x for x in xs if fn(x)]
        if name == "flat_map":
            return [y for x in xs for y in fn(x)]
        if name == "take":
            return xs[: self.n]
        if name == "skip":
            return xs[self.n :]
        if name in ("then", "par_then"):
            return await gather(fn, xs)
        return list(xs)  # prefetch; shuffle, whose order is not modelled

    async def on_expect(self, body: Expect) -> Expect:
        """What the body may give once this stage is added."""
        if self.name in ("take", "skip"):
            if body.kind == "exact":
                return Expect.exact(await self.on_list(list(body.items)))
            n = self.n
            if self.name == "take":
                return Expect("sub", body.items, min(body.lo, n), min(body.hi, n))
            return Expect("sub", body.items, max(0, body.lo - n), max(0, body.hi - n))
        if body.kind == "sub" and self.name == "flat_map":
            parts = [list(self.fn(x)) for x in body.items]
            counts = sorted(len(p) for p in parts)
            lo = sum(counts[: body.lo])
            hi = sum(counts[len(counts) - body.hi :]) if body.hi else 0
            return Expect("sub", tuple(y for p in parts for y in p), lo, hi)
        items = await self.on_list(list(body.items))
        if body.kind == "sub":
            lo, hi = body.lo, body.hi
            if self.name == "filter":
                fails = len(body.items) - len(items)
                lo, hi = max(0, lo - fails), min(hi, len(items))
            return Expect("sub", tuple(items), lo, hi)
        if body.kind == "bag" or self.unordered:
            return Expect.bag(items)
        return Expect.exact(items)


async def gather(afn: Callable[[Any], Awaitable[Any]], xs: list[Any]) -> list[Any]:
    """``[await afn(x) for x in xs]``, the calls run concurrently (the results do not
    depend on it for a function of its item alone)."""
    out: list[Any] = [None] * len(xs)

    async def one(i: int, x: Any) -> None:
        out[i] = await afn(x)

    async with trio.open_nursery() as nursery:
        for i, x in enumerate(xs):
            nursery.start_soon(one, i, x)
    return out


def _out_lengths(body: Expect, tail: Tail | None) -> tuple[int, int]:
    lo, hi = body.lo, body.hi
    if tail is None or tail.name == "enumerate":
        return lo, hi
    n = tail.size
    if tail.drop_last:
        return lo // n, hi // n
    return -(-lo // n), -(-hi // n)


@final
class Pipeline:
    """A random pipeline drawn by :func:`pipelines`: a stream over a drawn input, and the
    laws its output must obey.

    ``check()`` (or ``await check_async()`` in trio) runs it and checks every law;
    ``verify(items)`` checks one output you obtained yourself.
    """

    __slots__ = (
        "_body",
        "_deterministic",
        "_error",
        "_tail",
        "ordered",
        "reference",
        "source",
        "stop",
        "stream",
    )

    def __init__(
        self,
        stream: Stream[Any],
        source: list[Any],
        stop: int,
        body: Expect,
        tail: Tail | None,
        reference: list[Any],
        deterministic: bool,
        error: BaseException | None,
    ) -> None:
        #: The stream: ``from_iterable(source)`` and the drawn stages.
        self.stream = stream
        #: The drawn input items.
        self.source = source
        #: How many items the stop-early law consumes before it breaks out.
        self.stop = stop
        #: The sequential reference: each stage applied in order to a plain list.
        self.reference = reference
        #: True when the output must equal ``reference`` exactly (no unordered stage, no shuffle).
        self.ordered = body.kind == "exact"
        self._body = body
        self._tail = tail
        self._deterministic = deterministic
        self._error = error

    def __repr__(self) -> str:
        return f"Pipeline({self.stream!r}, source={short(self.source)}, stop={self.stop})"

    # -- laws -----------------------------------------------------------------------
    def _header(self, how: str) -> str:
        lines = [f"snake.testing: pipeline {self.stream!r}", f"  input: {short(self.source)}"]
        if how:
            lines.append(f"  consumed through: {how}")
        return "\n".join(lines)

    def _fail(self, law: str, how: str, problem: str, got: object) -> AssertionError:
        return AssertionError(
            f"{self._header(how)}\n  law broken: {law}\n  reference: {short(self.reference)}\n"
            f"  got: {short(got)}\n  {problem}"
        )

    def _raise_reference_error(self) -> None:
        if self._error is not None:
            self._error.add_note(
                "snake.testing: the sequential reference of this pipeline raised it: pipelines() "
                "needs functions that do not raise on the items the strategy draws"
            )
            raise self._error

    def verify(self, items: list[Any], *, how: str = "") -> None:
        """Raise ``AssertionError`` naming the law if ``items`` is not an output this pipeline may
        give (``how``, e.g. ``"open()"``, goes into the message)."""
        self._raise_reference_error()
        if self._body.kind == "exact":
            problem = same_list(self.reference, items)
        elif self._tail is None:
            problem = self._body.problem(items)
        else:
            problem = self._tail.problem(self._body, items)
        if problem:
            law = self._body.law()
            raise self._fail(law, how, problem, items)

    def _verify_stop(self, items: list[Any], how: str) -> None:
        k = self.stop
        if self._body.kind == "exact":
            problem = same_list(self.reference[:k], items)
        else:
            lo, hi = _out_lengths(self._body, self._tail)
            problem = "" if min(k, lo) <= len(items) <= min(k, hi) else f"got {count(len(items))}"
        if problem:
            raise self._fail(LAW_STOP + f" (k={k})", how, problem, items)

    def _unexpected(self, exc: Exception, how: str) -> AssertionError:
        err = AssertionError(
            f"{self._header(how)}\n  law broken: {LAW_ERRORS}\n  the pipeline raised "
            f"{type(exc).__name__}: {exc}, but its sequential reference did not raise"
        )
        err.__cause__ = exc
        return err

    def _agree(self, first: list[Any], second: list[Any]) -> None:
        if self._deterministic:
            problem = same_list(first, second)
            if problem:
                raise self._fail(LAW_RUNS_AGREE, "open() then open_sync()", problem, second)

    # -- running --------------------------------------------------------------------
    def _run_sync(self, how: str, run: Callable[[], list[Any]]) -> list[Any]:
        with release_check(self._header(how)):
            try:
                return run()
            except Exception as exc:
                raise self._unexpected(exc, how) from exc

    def _sync_laws(self) -> list[Any]:
        got = self._run_sync("open_sync()", lambda: collect_sync(self.stream))
        self.verify(got, how="open_sync()")
        how = f"open_sync(), breaking out after {self.stop} items"
        stopped = self._run_sync(how, lambda: collect_sync(self.stream, self.stop))
        self._verify_stop(stopped, how)
        return got

    def check(self) -> None:
        """Run the pipeline through ``open()`` (under ``trio.run``) and ``open_sync()``, and
        check every law: the output (exact, or as a multiset after unordered stages),
        both runs agree without unordered stages, breaking out early after ``stop`` items
        gives them, and every run releases what it started (:func:`assert_no_leaks`).

        Raises ``RuntimeError`` inside trio: use ``await check_async()`` there.
        """
        refuse_trio("Pipeline.check()", "await pipeline.check_async()")
        self._raise_reference_error()
        got = self._run_sync("open()", lambda: run_open(self.stream))
        self.verify(got, how="open()")
        how = f"open(), breaking out after {self.stop} items"
        stopped = self._run_sync(how, lambda: run_open(self.stream, self.stop))
        self._verify_stop(stopped, how)
        self._agree(got, self._sync_laws())

    def check_resume(self, at: Sequence[int] | None = None) -> None:
        """Check the resume law (see :func:`check_resume`) at the checkpoints ``at`` (by
        default 0, 1, ``stop``, the middle and the end), through ``open()``,
        ``open_sync()`` and ``snake.aio``: the items before a checkpoint and after it must
        be an output this pipeline may give (:meth:`verify`)."""
        refuse_trio("Pipeline.check_resume()", "trio.to_thread.run_sync(pipeline.check_resume)")
        self._raise_reference_error()
        n = len(self.reference)
        points = at if at is not None else (0, 1, min(self.stop, n), n // 2, n)

        def problem(got: list[Any]) -> str:
            try:
                self.verify(got)
            except AssertionError as exc:
                return str(exc).rsplit("\n", 1)[-1]
            return ""

        resume_law(self.stream, n, problem, at=points)

    async def check_async(self) -> None:
        """:meth:`check` from inside trio: ``open()`` runs in the current trio run, and
        ``open_sync()`` in a worker thread."""
        self._raise_reference_error()
        for stop in (None, self.stop):
            how = "open()" if stop is None else f"open(), breaking out after {stop} items"
            async with release_check(self._header(how)):
                try:
                    items = await collect_open(self.stream, stop)
                except Exception as exc:
                    raise self._unexpected(exc, how) from exc
            if stop is None:
                self.verify(items, how=how)
                got = items
            else:
                self._verify_stop(items, how)
        self._agree(got, await trio.to_thread.run_sync(self._sync_laws))


# -- the strategy ---------------------------------------------------------------------


def _check_fns(name: str, fns: object, *, want_async: bool) -> tuple[Callable[..., Any], ...]:
    if isinstance(fns, (str, bytes)) or not isinstance(fns, Iterable):
        raise TypeError(f"pipelines: {name}={fns!r} must be a list of functions")
    out = tuple(fns)
    for fn in out:
        if not callable(fn):
            raise TypeError(f"pipelines: {name}={fns!r} holds {fn!r}, which is not callable")
        colour = is_async_callable(fn)
        if want_async and colour is False:
            raise TypeError(
                f"pipelines: {name}={fns!r} must hold async functions; {describe_callable(fn)} is sync"
            )
        if not want_async and colour is True:
            raise TypeError(
                f"pipelines: {name}={fns!r} must hold sync functions; {describe_callable(fn)} is async"
            )
    return out


def _picklable(fn: object) -> bool:
    try:
        pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return False
    return True


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"pipelines: {name}={value!r} must be an int")
    if value < minimum:
        raise ValueError(f"pipelines: {name}={value!r} must be >= {minimum}")
    return value


def pipelines(
    items: st.SearchStrategy[Any] | None = None,
    *,
    maps: Sequence[Callable[[Any], Any]] = (),
    predicates: Sequence[Callable[[Any], object]] = (),
    flat_maps: Sequence[Callable[[Any], Iterable[Any]]] = (),
    async_maps: Sequence[Callable[[Any], Awaitable[Any]]] = (),
    backends: Sequence[Backend] = ("thread",),
    unordered: bool = True,
    tails: bool = True,
    max_stages: int = 4,
    max_items: int = 50,
    pool: WorkerPool | None = None,
) -> st.SearchStrategy[Pipeline]:
    """A Hypothesis strategy of random pipelines over your items and functions.

    Each :class:`Pipeline` is ``from_iterable(source)`` with up to ``max_stages`` stages
    drawn from: ``map``, ``filter``, ``flat_map`` (with your ``maps``, ``predicates``,
    ``flat_maps``), ``then`` and ``par_then`` (with your ``async_maps`` or a pass-through),
    ``par_map`` on each of ``backends`` (your ``maps``, or a pass-through; process stages
    only use the picklable ones), ``take``, ``skip``, ``prefetch``, ``shuffle(seed=...)``,
    then maybe one tail (``enumerate()`` or ``batch(collate=None)``, if ``tails``).
    ``unordered=False`` draws no ``ordered=False`` stage and no shuffle. ``source`` is a
    list of up to ``max_items`` items drawn from ``items`` (default: integers).

    The functions must be pure (the result depends on the item only), map items to items
    of the same kind (so that any chain is valid), and not raise on the items drawn.
    Process ``par_map`` stages start 1 or 2 workers of their own or, with ``pool`` (a
    :class:`snake.WorkerPool` that is open while the pipelines run; ``backends`` must
    hold ``"process"``), all run on the pool's workers, which they share.

    Raises, when called: ``TypeError: pipelines: maps=... must hold sync functions; ...
    is async`` (and the like for ``predicates``, ``flat_maps``, ``async_maps``);
    ``ValueError: pipelines: backends=... may only hold ('thread', 'process')``;
    ``ValueError: pipelines: pool=... runs process par_map stages, but backends=...
    draws none; add 'process' to backends``; and the ``TypeError`` and ``ValueError`` of
    the other arguments, quoting them.
    """
    if items is None:
        items = st.integers()
    if not isinstance(items, st.SearchStrategy):
        raise TypeError(f"pipelines: items={items!r} must be a Hypothesis strategy")
    map_fns = _check_fns("maps", maps, want_async=False)
    pred_fns = _check_fns("predicates", predicates, want_async=False)
    flat_fns = _check_fns("flat_maps", flat_maps, want_async=False)
    async_fns = _check_fns("async_maps", async_maps, want_async=True)
    if isinstance(backends, str) or not isinstance(backends, Iterable):
        raise TypeError(f"pipelines: backends={backends!r} must be a list of 'thread' and 'process'")
    chosen = tuple(backends)
    for b in chosen:
        if b not in _BACKENDS:
            raise ValueError(f"pipelines: backends={backends!r} may only hold {_BACKENDS}")
    if not isinstance(unordered, bool):
        raise TypeError(f"pipelines: unordered={unordered!r} must be a bool")
    if not isinstance(tails, bool):
        raise TypeError(f"pipelines: tails={tails!r} must be a bool")
    _check_int("max_stages", max_stages, 0)
    _check_int("max_items", max_items, 0)
    if pool is not None and not isinstance(pool, WorkerPool):
        raise TypeError(f"pipelines: pool={pool!r} must be a snake.WorkerPool or None")
    if pool is not None and "process" not in chosen:
        raise ValueError(
            f"pipelines: pool={pool!r} runs process par_map stages, but backends={backends!r} draws "
            "none; add 'process' to backends"
        )

    orders = st.booleans() if unordered else st.just(True)
    ops: list[st.SearchStrategy[_Op]] = []
    if map_fns:
        ops.append(st.sampled_from(map_fns).map(lambda f: _Op("map", f)))
    if pred_fns:
        ops.append(st.sampled_from(pred_fns).map(lambda f: _Op("filter", f)))
    if flat_fns:
        ops.append(st.sampled_from(flat_fns).map(lambda f: _Op("flat_map", f)))
    ops.append(st.integers(0, max_items).map(lambda n: _Op("take", n=n)))
    ops.append(st.integers(0, max(1, max_items // 2)).map(lambda n: _Op("skip", n=n)))
    ops.append(st.integers(1, 8).map(lambda n: _Op("prefetch", n=n)))
    if unordered:
        ops.append(
            st.builds(lambda n, s: _Op("shuffle", n=n, seed=s), st.integers(1, 16), st.integers(0, 2**16))
        )
    afns = st.sampled_from((*async_fns, _aidentity))
    ops.append(afns.map(lambda f: _Op("then", f)))
    ops.append(st.builds(lambda f, n, o: _Op("par_then", f, n, o), afns, st.integers(1, 4), orders))
    for backend in chosen:
        fns = (*map_fns, _identity) if backend == "thread" else (*filter(_picklable, map_fns), _identity)
        ops.append(
            st.builds(
                lambda f, n, o, b=backend: _Op("par_map", f, n, o, b),
                st.sampled_from(fns),
                st.integers(1, 2),
                orders,
            )
        )
    tail_st: st.SearchStrategy[Tail | None] = st.none()
    if tails:
        tail_st = st.one_of(
            st.none(),
            st.just(Tail("enumerate")),
            st.builds(lambda n, d: Tail("batch", n, d), st.integers(1, 7), st.booleans()),
        )

    @st.composite
    def draw_pipeline(draw: st.DrawFn) -> Pipeline:
        source = draw(st.lists(items, max_size=max_items))
        chain = draw(st.lists(st.one_of(ops), max_size=max_stages))
        tail = draw(tail_st)
        stop = draw(st.integers(0, max_items))
        if pool is not None:
            # The stages of one trio run share a pool: every process stage runs on it.
            chain = [
                attrs.evolve(op, pool=pool, n=min(op.n, pool.workers))
                if op.name == "par_map" and op.backend == "process"
                else op
                for op in chain
            ]
        return _build(source, chain, tail, stop)

    return draw_pipeline()


def _build(source: list[Any], chain: list[_Op], tail: Tail | None, stop: int) -> Pipeline:
    stream: Stream[Any] = from_iterable(source)
    for op in chain:
        stream = op.add_to(stream)
    if tail is not None:
        stream = (
            stream.enumerate()
            if tail.name == "enumerate"
            else stream.batch(tail.size, drop_last=tail.drop_last, collate=None)
        )

    async def model() -> tuple[Expect, list[Any]]:
        body = Expect.exact(source)
        reference = list(source)
        for op in chain:
            body = await op.on_expect(body)
            reference = await op.on_list(reference)
        return body, reference

    error: BaseException | None = None
    try:
        if any(op.name in ("then", "par_then") for op in chain):
            body, reference = run_coroutines(model)
        else:
            body, reference = _no_await(model())
    except Exception as exc:
        error = exc
        body, reference = Expect.exact(()), []
    if tail is not None:
        reference = tail.apply(reference)
        if body.kind == "exact":
            body = Expect.exact(reference)
    deterministic = not any(op.unordered and op.name != "shuffle" for op in chain)
    return Pipeline(stream, source, stop, body, tail, reference, deterministic, error)


def _no_await(coro: Any) -> Any:
    """Run a coroutine that never suspends (no async function in the chain) to its end."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("snake.testing: the reference suspended without an async stage")
