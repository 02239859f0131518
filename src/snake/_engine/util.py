"""Small helpers shared by the stream builder and the stage runners."""

from __future__ import annotations

import functools
import inspect
import operator
import os
import pickle
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

from .errors import add_note as add_note

#: Largest number of items a single chunk carries between two stages.
CHUNK_CAP = 1024


@trio.lowlevel.enable_ki_protection
def spawn(nursery: trio.Nursery, async_fn: Callable[..., Awaitable[object]], *args: Any) -> None:
    """``nursery.start_soon(async_fn, *args)``, for every task of a pipeline.

    Ctrl-C is held off until the next checkpoint: trio's ``start_soon`` is not protected
    itself, and a KeyboardInterrupt landing between making the coroutine and scheduling
    its task leaves the coroutine never awaited (a ``RuntimeWarning`` at exit).

    The task releases the frames an exception leaves it with (see :func:`_task`).
    """
    coro = async_fn(*args)
    try:
        nursery.start_soon(_task, coro, name=async_fn)
    except BaseException:
        coro.close()  # type: ignore[attr-defined]
        raise


async def _task(coro: Awaitable[object]) -> None:
    # An exception that ends a task holds, through its traceback, the frames it unwound
    # and everything their locals refer to: chunks of items, arrays in shared memory.
    # trio keeps such exceptions in reference cycles (a nursery's exception groups, a
    # finished run's outcome) that only the garbage collector frees; with the collector
    # off, the items would stay. Every frame below this one has finished, so its locals
    # can go now: the traceback still names each frame and line.
    try:
        await coro
    except BaseException as exc:
        release_frames(exc)
        raise


_CO_GENERATORS = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR
#: snake's package directory: frames of files under it are snake's own.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def release_frames(exc: BaseException) -> None:
    """Clear the locals of the finished frames in the traceback of ``exc``, which just
    ended the task running this, and of the exceptions it groups: snake's own frames
    always, the user's too when ``exc`` is a cancellation, which nobody inspects.

    Only frames that ended with the task are touched. Frames of generators are left
    alone (clearing a suspended one would finalize it), as are frames still running
    (``clear()`` refuses those), and so is ``__context__``: an exception raised while
    another task handled one gets that one as its context, with frames of a task that
    still runs."""
    for e in exception_tree(exc):
        every = isinstance(e, trio.Cancelled)
        tb = e.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            code = frame.f_code
            if not code.co_flags & _CO_GENERATORS and (every or code.co_filename.startswith(_PACKAGE_DIR)):
                try:
                    frame.clear()
                except RuntimeError:  # still running (this task's own frame, say)
                    pass
            tb = tb.tb_next


def exception_tree(
    exc: BaseException, *, linked: bool = False, keep: BaseException | None = None
) -> Iterator[BaseException]:
    """``exc`` and the exceptions it groups (from its task, or from child tasks that
    ended), each once; with ``linked``, also their ``__context__`` and ``__cause__``,
    except ``keep``."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        if linked:
            todo.extend(x for x in (e.__context__, e.__cause__) if x is not None and x is not keep)


def describe_callable(fn: object) -> str:
    """A short, stable name for ``fn`` as it appears in a stream's ``repr``."""
    if isinstance(fn, functools.partial):
        parts = [describe_callable(fn.func)]
        parts += [repr(a) for a in fn.args]
        parts += [f"{k}={v!r}" for k, v in fn.keywords.items()]
        return f"partial({', '.join(parts)})"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if isinstance(name, str):
        # "outer.<locals>.inner" reads better as "inner".
        return name.rpartition("<locals>.")[2]
    return type(fn).__qualname__


def describe_iterable(it: object) -> str:
    """``<range len=100>`` for sized iterables, ``<generator>`` otherwise."""
    try:
        n = len(it)  # type: ignore[arg-type]
    except Exception:
        return f"<{type(it).__name__}>"
    return f"<{type(it).__name__} len={n}>"


def _unwrap_partial(fn: object) -> object:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def is_async_callable(fn: object) -> bool | None:
    """True for async functions, False for plain sync functions, None if unknowable."""
    target = _unwrap_partial(fn)
    if inspect.iscoroutinefunction(target):
        return True
    if inspect.isfunction(target) or inspect.ismethod(target) or inspect.isbuiltin(target):
        return False
    if isinstance(target, type):
        return False
    call = getattr(type(target), "__call__", None)
    if call is not None and inspect.iscoroutinefunction(call):
        return True
    if call is not None and inspect.isfunction(call):
        return False
    return None


def check_callable(method: str, fn: object, *, want_async: bool) -> None:
    """Raise ``TypeError`` if ``fn`` is not callable or is of the wrong colour."""
    if not callable(fn):
        raise TypeError(f"{method}: fn={fn!r} is not callable")
    colour = is_async_callable(fn)
    if want_async and colour is False:
        raise TypeError(
            f"{method} needs an async function; {describe_callable(fn)} is a sync "
            f"function (use map() or par_map() for sync functions)"
        )
    if not want_async and colour is True:
        raise TypeError(
            f"{method} needs a sync function; {describe_callable(fn)} is an async "
            f"function (use then() or par_then() for async functions)"
        )


def check_picklable(method: str, fn: Callable[..., Any]) -> None:
    """Raise ``TypeError`` naming ``fn`` if it cannot be sent to a worker process."""
    try:
        pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(
            f'{method}(backend="process") needs a picklable function; '
            f"{describe_callable(fn)} is not ({type(exc).__name__}: {exc}). "
            f'Define it at module level, or use backend="thread".'
        ) from None


def check_importable(method: str, fn: Callable[..., Any], worker_type: str) -> None:
    """Raise ``ValueError`` if worker processes could not import ``fn``: it is defined in
    a main module that has no file (``python -c``, a REPL, a notebook)."""
    if worker_type == "fork":
        return  # a forked worker has the parent's __main__
    target = _unwrap_partial(fn)
    if getattr(target, "__module__", None) != "__main__":
        return
    import sys

    main = sys.modules.get("__main__")
    if getattr(main, "__file__", None) or getattr(getattr(main, "__spec__", None), "name", None):
        return
    raise ValueError(
        f"{method}: {describe_callable(fn)} is defined in an interactive session (its __main__ has "
        "no file), which worker processes cannot import; define it in a module, or pass "
        'worker_type="fork" if this process has no other threads'
    )


def check_int(method: str, name: str, value: object, *, minimum: int, auto: bool = False) -> int:
    """Validate an integer argument, quoting it in the error, and return it as a plain ``int``.

    Anything ``operator.index`` takes is an int here (``np.int64(45)``, say), so a spec
    stores a plain ``int`` whatever the caller passed; bools and floats are refused.
    ``auto``: the argument may also be ``"auto"`` (checked by the caller); the error
    says so.
    """
    what = "an int or 'auto'" if auto else "an int"
    if isinstance(value, bool):
        raise TypeError(f"{method}: {name}={value!r} must be {what}")
    try:
        n = int(operator.index(value))  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{method}: {name}={value!r} must be {what}") from None
    if n < minimum:
        raise ValueError(f"{method}: {name}={value!r} must be >= {minimum}")
    return n


def check_bool(method: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{method}: {name}={value!r} must be a bool")
    return value


def publish(module: str, namespace: dict[str, Any]) -> None:
    """Give the public names of ``module`` (its ``__all__``) their public home as
    ``__module__``, as trio does: ``snake.Stream``, not ``snake._stream.Stream``, in
    reprs, pickles of classes, tracebacks and the generated reference."""
    for name in namespace["__all__"]:

        obj = namespace[name]
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__.startswith("snake._"):
            obj.__module__ = module
