"""``check_stage()``: a user's own stage function checked against snake's laws."""

from __future__ import annotations

import contextlib
import functools
import inspect
import pickle
import re
import typing
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import hypothesis
import trio
from hypothesis import strategies as st

from .._engine.errors import RemoteError
from .._engine.util import describe_callable, is_async_callable
from .._stream import Stream, from_iterable
from .._workers.pool import WorkerPool
from ._model import (
    LAW_ERRORS,
    LAW_MULTISET,
    LAW_ORDERED,
    LAW_STOP,
    count,
    multiset_diff,
    not_included,
    same_list,
    short,
)
from ._pipelines import _aidentity, gather
from ._run import collect_sync, refuse_trio, release_check, run_coroutines, run_open

_BACKENDS = ("thread", "process")
_DEFAULT_SETTINGS = hypothesis.settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
    # The explain phase would list lines of snake.testing, not of the user's code.
    phases=[p for p in hypothesis.Phase if p != hypothesis.Phase.explain],
)
#: Workers of the par_map placements (and of the pool the process ones share).
_WORKERS = 2
#: Concurrent calls of the par_then placements.
_LIMIT = 4


@attrs.frozen
class _Placement:
    """The user's function or stage placed in a stream."""

    #: ``Stream -> Stream``: adds the stage after the source.
    build: Callable[[Stream[Any]], Stream[Any]]
    ordered: bool
    process: bool = False


@attrs.frozen
class _Outcome:
    """What the sequential reference gave for one input: items, or the exception types raised."""

    items: list[Any]
    errors: tuple[type[BaseException], ...] = ()


def _check_backends(backends: object, fn: Callable[..., Any]) -> tuple[str, ...]:
    if backends is None:
        try:
            pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            return ("thread",)
        return _BACKENDS
    if isinstance(backends, str) or not isinstance(backends, (list, tuple)):
        raise TypeError(f"check_stage: backends={backends!r} must be a list of 'thread' and 'process'")
    for b in backends:
        if b not in _BACKENDS:
            raise ValueError(f"check_stage: backends={backends!r} may only hold {_BACKENDS}")
    if "process" in backends:
        try:
            pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(
                f"check_stage: backends={backends!r} asks for worker processes, but "
                f"{describe_callable(fn)} cannot be pickled ({type(exc).__name__}: {exc})"
            ) from None
    return tuple(backends)


def _placements(
    stage: Callable[..., Any],
    reference: Callable[[list[Any]], list[Any]] | None,
    ordered: bool,
    backends: tuple[str, ...],
) -> list[_Placement]:
    if reference is not None:
        user_stage: Callable[[Stream[Any]], Stream[Any]] = stage

        def after_par_then(s: Stream[Any]) -> Stream[Any]:
            # par_then hands items on in small chunks: a stage must not depend on chunk sizes.
            return user_stage(s.par_then(_aidentity, limit=3))

        return [_Placement(user_stage, ordered), _Placement(after_par_then, ordered)]
    if is_async_callable(stage):
        return [
            _Placement(lambda s: s.then(stage), True),
            _Placement(lambda s: s.par_then(stage, limit=_LIMIT), True),
            _Placement(lambda s: s.par_then(stage, limit=_LIMIT, ordered=False), False),
        ]
    out = [_Placement(lambda s: s.map(stage), True)]
    if "thread" in backends:
        out.append(_Placement(lambda s: s.par_map(stage, workers=_WORKERS, backend="thread"), True))
        out.append(
            _Placement(lambda s: s.par_map(stage, workers=_WORKERS, backend="thread", ordered=False), False)
        )
    if "process" in backends:
        out.append(_Placement(lambda s: s, True, process=True))
        out.append(_Placement(lambda s: s, False, process=True))
    return out


def _raised_unexpectedly(header: str, exc: Exception) -> AssertionError:
    return AssertionError(
        f"{header}\n  law broken: {LAW_ERRORS}\n  it raised {type(exc).__name__}: {exc}, "
        "but the sequential reference did not raise"
    )


class _Checker:
    """Runs every placement on one input and checks the laws."""

    def __init__(
        self,
        stage: Callable[..., Any],
        reference: Callable[[list[Any]], list[Any]] | None,
        placements: list[_Placement],
        pool: WorkerPool | None,
    ) -> None:
        self.stage = stage
        self.reference = reference
        self.placements = placements
        self.pool = pool

    def stream(self, p: _Placement, xs: list[Any]) -> Stream[Any]:
        src = from_iterable(xs)
        if p.process:
            assert self.pool is not None
            return src.par_map(self.stage, pool=self.pool, ordered=p.ordered)
        return p.build(src)

    def outcome(self, xs: list[Any]) -> _Outcome:
        if self.reference is not None:
            try:
                out = self.reference(list(xs))
            except Exception as exc:
                return _Outcome([], (type(exc),))
            if isinstance(out, Stream) or not isinstance(out, list):
                raise TypeError(
                    f"check_stage: reference={describe_callable(self.reference)} must return a list; "
                    f"it returned {short(out)}"
                )
            return _Outcome(out)
        fn = self.stage
        if is_async_callable(fn):

            async def safe(x: Any) -> Any:
                try:
                    return await fn(x)
                except Exception as exc:
                    return _Raised(exc)

            results = run_coroutines(functools.partial(gather, safe, list(xs)))
        else:
            results = []
            for x in xs:
                try:
                    results.append(fn(x))
                except Exception as exc:
                    misuse = _stage_called_with_item(fn, x, exc)
                    if misuse is not None:
                        raise misuse from exc
                    results.append(_Raised(exc))
        errors = tuple(dict.fromkeys(type(r.exc) for r in results if isinstance(r, _Raised)))
        return _Outcome([] if errors else results, errors)

    def check(self, xs: list[Any], k: int) -> None:
        expected = self.outcome(xs)
        for p in self.placements:
            stream = self.stream(p, xs)
            self.check_run(stream, p, "open()", xs, expected, functools.partial(run_open, stream))
            self.check_run(stream, p, "open_sync()", xs, expected, functools.partial(collect_sync, stream))
            if expected.errors:
                continue  # which items run before the error stops the pipeline depends on timing
            taken = stream.take(k)
            run_taken = functools.partial(run_open, taken)
            self.check_stop(taken, p, "open()", xs, expected, k, run_taken)
            how = f"open_sync(), breaking out after {k} items"
            self.check_stop(stream, p, how, xs, expected, k, functools.partial(collect_sync, stream, k))

    def header(self, stream: Stream[Any], how: str, xs: list[Any]) -> str:
        return (
            f"snake.testing.check_stage: {describe_callable(self.stage)} placed as {stream!r}\n"
            f"  consumed through: {how}\n  input: {short(xs)}"
        )

    def check_run(
        self,
        stream: Stream[Any],
        p: _Placement,
        how: str,
        xs: list[Any],
        expected: _Outcome,
        run: Callable[[], list[Any]],
    ) -> None:
        header = self.header(stream, how, xs)
        with release_check(header):
            try:
                got = run()
            except Exception as exc:
                if expected.errors:
                    self.check_error(header, exc, expected.errors)
                    return
                raise _raised_unexpectedly(header, exc) from exc
        if expected.errors:
            names = ", ".join(e.__name__ for e in expected.errors)
            raise AssertionError(
                f"{header}\n  law broken: {LAW_ERRORS}\n  the sequential reference raised {names}, "
                f"but the pipeline gave {short(got)} without raising"
            )
        if p.ordered:
            law, problem = LAW_ORDERED, same_list(expected.items, got)
        else:
            law, problem = LAW_MULTISET, multiset_diff(expected.items, got)
        if problem:
            raise AssertionError(
                f"{header}\n  law broken: {law}\n  expected: {short(expected.items)}\n  got:      {short(got)}\n"
                f"  {problem}"
            )

    def check_error(self, header: str, exc: Exception, allowed: tuple[type[BaseException], ...]) -> None:
        names = ", ".join(e.__name__ for e in allowed)
        if isinstance(exc, RemoteError) and any(_remote_error_of(exc, e) for e in allowed):
            return  # an exception that cannot be pickled comes back from a worker as text
        if type(exc) not in allowed:
            raise AssertionError(
                f"{header}\n  law broken: {LAW_ERRORS}\n  the function raised {names} in the sequential "
                f"reference, but the pipeline raised {type(exc).__name__}: {exc}"
            ) from exc
        notes = getattr(exc, "__notes__", [])
        if self.reference is None and not any(n.startswith("snake: raised in stage") for n in notes):
            raise AssertionError(
                f"{header}\n  law broken: {LAW_ERRORS}\n  {type(exc).__name__} came out without the note "
                f"'snake: raised in stage ...'; its notes: {notes!r}"
            ) from exc

    def check_stop(
        self,
        stream: Stream[Any],
        p: _Placement,
        how: str,
        xs: list[Any],
        expected: _Outcome,
        k: int,
        run: Callable[[], list[Any]],
    ) -> None:
        header = self.header(stream, how, xs)
        with release_check(header):
            try:
                got = run()
            except Exception as exc:
                raise _raised_unexpectedly(header, exc) from exc
        want = expected.items[:k]
        if p.ordered:
            problem = same_list(want, got)
        elif len(got) != len(want):
            problem = f"expected {count(len(want))}, got {len(got)}"
        else:
            extra = not_included(got, expected.items)
            problem = f"items the reference does not hold (as many times): {extra}" if extra else ""
        if problem:
            raise AssertionError(
                f"{header}\n  law broken: {LAW_STOP} (k={k})\n  reference: {short(expected.items)}\n"
                f"  got: {short(got)}\n  {problem}"
            )


def _remote_error_of(exc: RemoteError, cls: type[BaseException]) -> bool:
    """Whether a worker's ``RemoteError`` stands for an exception of exactly type ``cls``.

    Its message is ``"<qualname>: <message>"`` then the worker's traceback, whose last
    exception line names the type as ``traceback`` does (``module.qualname``, builtins and
    ``__main__`` without the module).
    """
    text = str(exc)
    if not text.startswith(f"{cls.__qualname__}: "):
        return False
    name = cls.__qualname__
    if cls.__module__ not in ("builtins", "__main__"):
        name = f"{cls.__module__}.{name}"
    return any(line == name or line.startswith(f"{name}: ") for line in text.splitlines()[1:])


_STAGE_ANNOTATION = re.compile(r"(?<![\w.])(?:[\w.]*\.)?Stream\b")


def _is_stream_annotation(annotation: object) -> bool:
    if isinstance(annotation, str):  # not evaluated (``from __future__ import annotations``)
        return bool(_STAGE_ANNOTATION.search(annotation))
    return annotation is Stream or typing.get_origin(annotation) is Stream


def _annotated_as_stage(fn: Callable[..., Any]) -> bool:
    """Whether ``fn``'s annotations say it takes or returns a Stream (it is not called)."""
    try:
        sig = inspect.signature(fn, eval_str=True)
    except Exception:
        try:
            sig = inspect.signature(fn)  # annotations that do not evaluate stay text
        except (TypeError, ValueError):
            return False  # a builtin without a signature
    params = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    annotations = [sig.return_annotation, *(p.annotation for p in params[:1])]
    return any(a is not sig.empty and _is_stream_annotation(a) for a in annotations)


def _refuse_stage_without_reference(fn: Callable[..., Any]) -> None:
    """A function annotated as taking or returning a Stream is a stage: it needs ``reference=``.

    Decided from the annotations alone: ``fn`` is never called with a Stream (a function of
    items may do IO). An unannotated stage is caught when it first meets an item
    (:func:`_stage_called_with_item`).
    """
    if _annotated_as_stage(fn):
        raise TypeError(
            f"check_stage: {describe_callable(fn)} is annotated with Stream: for a stage "
            "(a function of a Stream), pass reference= too"
        )


#: Public attributes of a Stream: a stage calls them on its argument.
_STREAM_ATTRIBUTES = frozenset(n for n in dir(Stream) if not n.startswith("_"))


def _stage_called_with_item(fn: Callable[..., Any], x: Any, exc: Exception) -> TypeError | None:
    """The error for a stage without ``reference=`` called with an item ``x``, if ``exc`` is
    what such a call raises: ``x.map`` (any Stream method) missing on the item."""
    if (
        isinstance(exc, AttributeError)
        and exc.obj is x
        and exc.name in _STREAM_ATTRIBUTES
        and not hasattr(type(x), exc.name)
    ):
        return TypeError(
            f"check_stage: {describe_callable(fn)}({short(x)}) raised AttributeError: {exc}; "
            f"{exc.name!r} is a Stream method: for a stage (a function of a Stream), pass reference= too"
        )
    return None


@attrs.frozen
class _Raised:
    exc: Exception


def check_stage(
    stage: Callable[..., Any],
    /,
    *,
    items: st.SearchStrategy[Any],
    reference: Callable[[list[Any]], list[Any]] | None = None,
    ordered: bool = True,
    backends: Sequence[str] | None = None,
    settings: hypothesis.settings | None = None,
    max_items: int = 20,
) -> tuple[str, ...]:
    """Check a stage of your own against snake's laws, on inputs drawn from ``items``.

    ``stage`` is either a function of one item, sync or async, or, with ``reference=``,
    a function that adds stages to a stream (``Stream -> Stream``) while ``reference``
    computes, from a list of items, the list it must give. A function of one item is
    placed as ``map``, ``par_map`` on threads and on worker processes (ordered and
    not; processes only if it can be pickled, on a shared :class:`snake.WorkerPool`)
    or, if async, as ``then`` and ``par_then`` (ordered and not). Each placement runs
    through ``open()`` (under ``trio.run``) and ``open_sync()``, and must give:

    - ordered: exactly ``[fn(x) for x in xs]`` (or ``reference(xs)``), in order;
    - unordered: the same multiset, so every item exactly once;
    - where the reference raises: an exception of the same type, with snake's note;
    - with ``take(k)``, or breaking out after ``k`` items: ``k`` of those items;
    - in every run: nothing left behind (:func:`assert_no_leaks`, 1 s grace).

    ``ordered=False`` says that the stage itself does not keep order (only with
    ``reference=``). Hypothesis runs it with ``settings`` (default: 20 examples; the
    deadline is always off) on lists of up to ``max_items`` items; a broken law raises
    ``AssertionError`` naming the law, the placement and the smallest input found.
    Returns the placements checked, as ``repr`` of their streams over an empty input.
    Runs ``trio.run`` itself: inside trio, ``await check_stage_async(...)``. docs/testing.md
    explains the laws, the placements and how items are compared.

    Raises, when called:

    - ``TypeError: check_stage: items=... must be a Hypothesis strategy``;
    - ``TypeError: check_stage: ... is annotated with Stream: for a stage (a function of
      a Stream), pass reference= too`` (for a stage without annotations, at its first
      item: ``... raised AttributeError: ...; 'map' is a Stream method: ...``);
    - ``TypeError: check_stage: backends=['process'] asks for worker processes, but ...
      cannot be pickled (...)``;
    - ``ValueError: check_stage: ordered=False applies to a stage given with
      reference=; ...``;
    - ``ValueError: check_stage: max_items=0 must be >= 1``, and the ``TypeError`` and
      ``ValueError`` of the other arguments, quoting them;
    - ``RuntimeError`` in a trio task, naming ``check_stage_async``. asyncio code with
      ``snake.aio`` pipelines open is not in a trio task.
    """
    if not callable(stage):
        raise TypeError(f"check_stage: stage={stage!r} is not callable")
    if not isinstance(items, st.SearchStrategy):
        raise TypeError(f"check_stage: items={items!r} must be a Hypothesis strategy")
    if reference is not None and not callable(reference):
        raise TypeError(f"check_stage: reference={reference!r} must be a function of a list, or None")
    if not isinstance(ordered, bool):
        raise TypeError(f"check_stage: ordered={ordered!r} must be a bool")
    if not ordered and reference is None:
        raise ValueError(
            "check_stage: ordered=False applies to a stage given with reference=; a function of "
            "one item is checked in ordered and unordered placements anyway"
        )
    if reference is not None:
        if backends is not None:
            raise ValueError(
                f"check_stage: backends={backends!r} applies to a function of one item, not a stage"
            )
        chosen: tuple[str, ...] = ()
    elif is_async_callable(stage):
        if backends is not None:
            raise ValueError(f"check_stage: backends={backends!r} applies to sync functions (par_map)")
        chosen = ()
    else:
        chosen = _check_backends(backends, stage)
        _refuse_stage_without_reference(stage)
    if settings is not None and not isinstance(settings, hypothesis.settings):
        raise TypeError(f"check_stage: settings={settings!r} must be a hypothesis.settings")
    if isinstance(max_items, bool) or not isinstance(max_items, int):
        raise TypeError(f"check_stage: max_items={max_items!r} must be an int")
    if max_items < 1:
        raise ValueError(f"check_stage: max_items={max_items!r} must be >= 1")
    refuse_trio("check_stage()", "await snake.testing.check_stage_async(...)")

    placements = _placements(stage, reference, ordered, chosen)
    use = hypothesis.settings(settings or _DEFAULT_SETTINGS, deadline=None)
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(WorkerPool(_WORKERS)) if any(p.process for p in placements) else None
        checker = _Checker(stage, reference, placements, pool)

        def laws(xs: list[Any], k: int) -> None:
            checker.check(xs, k)

        # Keep each stage's failing examples apart in Hypothesis's database.
        laws._hypothesis_internal_add_digest = (  # type: ignore[attr-defined]
            f"{getattr(stage, '__module__', '')}.{describe_callable(stage)}".encode()
        )
        test = hypothesis.given(xs=st.lists(items, max_size=max_items), k=st.integers(0, max_items))(laws)
        use(test)()
        empty = repr(from_iterable([])) + "."
        return tuple(repr(checker.stream(p, [])).removeprefix(empty) for p in placements)


async def check_stage_async(
    stage: Callable[..., Any],
    /,
    *,
    items: st.SearchStrategy[Any],
    reference: Callable[[list[Any]], list[Any]] | None = None,
    ordered: bool = True,
    backends: Sequence[str] | None = None,
    settings: hypothesis.settings | None = None,
    max_items: int = 20,
) -> tuple[str, ...]:
    """:func:`check_stage` from inside trio (an async test): it runs in a worker thread, with
    trio runs of its own, while this task waits (it cannot be cancelled meanwhile)."""
    call = functools.partial(
        check_stage,
        stage,
        items=items,
        reference=reference,
        ordered=ordered,
        backends=backends,
        settings=settings,
        max_items=max_items,
    )
    return await trio.to_thread.run_sync(call)
