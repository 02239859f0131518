"""``snake run module:attr``: run a user's pipeline with progress and the report."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

#: Frames from these directories are snake's or its machinery's, not the user's.
_HIDDEN = tuple(
    os.path.dirname(os.path.abspath(m.__file__ or ""))
    for m in (
        importlib.import_module("snake"),
        importlib.import_module("trio"),
        importlib.import_module("contextlib"),
    )
)


def print_user_traceback(exc: BaseException) -> None:
    """Print ``exc`` with its notes, keeping only frames outside snake, trio and importlib."""
    te = traceback.TracebackException.from_exception(exc)
    for t in [te, *_chained(te)]:
        ctx = t.__context__
        if ctx is not None and (ctx.exc_type is None or ctx.exc_type.__module__.startswith("trio")):
            t.__context__ = None  # a cancellation met while unwinding: noise
        kept = [
            f
            for f in t.stack
            if not os.path.abspath(f.filename).startswith(_HIDDEN) and not f.filename.startswith("<frozen")
        ]
        if kept:
            t.stack = traceback.StackSummary.from_list(kept)
    sys.stderr.write("".join(te.format()))


def _chained(te: traceback.TracebackException) -> list[traceback.TracebackException]:
    out = []
    seen = {id(te)}
    stack = [te.__cause__, te.__context__]
    while stack:
        t = stack.pop()
        if t is None or id(t) in seen:
            continue
        seen.add(id(t))
        out.append(t)
        stack += [t.__cause__, t.__context__]
    return out


class _UsageError(Exception):
    """A bad ``module:attr``: printed as one line, exit status 2."""


class _UserError(Exception):
    """An exception raised by the user's code (kept in ``__cause__``)."""


def _import(target: str) -> ModuleType:
    if target.endswith(".py") or os.sep in target:
        path = Path(target).resolve()
        if not path.is_file():
            raise _UsageError(f"snake run: no such file: {target}")
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:
            raise _UserError from exc
        return module
    sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name == target or target.startswith(f"{exc.name}."):
            raise _UsageError(f"snake run: cannot import module {target!r}: {exc}") from None
        raise _UserError from exc
    except BaseException as exc:
        raise _UserError from exc


def load_stream(spec: str) -> Any:
    """The Stream named by ``module:attr`` (or ``path/file.py:attr``); a zero-argument
    callable returning a Stream is called."""
    from .._stream import Stream

    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise _UsageError(f"snake run: {spec!r} must look like module:attr (or path/to/file.py:attr)")
    module = _import(module_name)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise _UsageError(f"snake run: module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Stream) and callable(obj):
        try:
            obj = obj()
        except BaseException as exc:
            raise _UserError from exc
    if not isinstance(obj, Stream):
        raise _UsageError(
            f"snake run: {spec} is {type(obj).__name__!r}, not a snake.Stream "
            "(or a function of no arguments returning one)"
        )
    return obj


def run_command(args: argparse.Namespace) -> int:
    try:
        stream = load_stream(args.target)
    except _UserError as err:
        assert err.__cause__ is not None
        print_user_traceback(err.__cause__)
        return 1
    except _UsageError as err:
        print(err, file=sys.stderr)
        return 2
    if not args.no_progress:
        stream = stream.progress(desc=args.target)
    print(f"snake run: {stream!r}", flush=True)
    t0 = time.perf_counter()
    n = 0
    try:
        with stream.open_sync() as items:
            for _ in items:
                n += 1
            report = items.report()
    except KeyboardInterrupt:
        print("snake run: interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:
        print(f"snake run: the pipeline failed after {n:,} items:", file=sys.stderr)
        print_user_traceback(exc)
        return 1
    elapsed = time.perf_counter() - t0
    print(f"items: {n:,} in {elapsed:.2f} s")
    print(report)
    return 0


def add_parsers(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run a user's pipeline to the end, with progress and the bottleneck report",
        description=(
            "Import MODULE, take its attribute ATTR (a snake.Stream, or a function of no "
            "arguments returning one), run it to the end with a progress bar, and print the "
            "bottleneck report. An error in the pipeline prints its traceback and exits 1."
        ),
    )
    run.add_argument("target", metavar="module:attr", help="e.g. mypkg.data:train_stream, or path/file.py:stream")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=run_command)
