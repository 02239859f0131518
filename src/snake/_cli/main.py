"""The ``snake`` command (also ``python -m snake``)."""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import sys
import tempfile
from collections.abc import Sequence

import trio


def _demo(args: argparse.Namespace) -> int:
    if args.dataset:
        return _demo_dataset(args)
    for flag in ("rows", "epochs", "data"):
        if getattr(args, flag) is not None:
            args.parser.error(f"--{flag} goes with --dataset")
    args.items = 100 if args.items is None else args.items
    args.backend = "process" if args.backend is None else args.backend
    from .demo import run_demo, seed_stream, start_ray

    try:
        stream = seed_stream(args.items, workers=args.workers, backend=args.backend)
    except ImportError as exc:
        print(f"snake demo: {exc}", file=sys.stderr)
        return 1
    print(f"snake demo: {stream!r}")
    if args.backend == "ray":
        print(f"ray:          {start_ray()}")
    result = trio.run(lambda: run_demo(args.items, workers=args.workers, backend=args.backend))
    print(f"items:        {result.items}")
    print(f"checksum:     {result.checksum}")
    print(f"pipeline:     {result.pipeline_s:.3f} s")
    print(f"sequential:   {result.sequential_s:.3f} s")
    print(f"speed-up:     {result.sequential_s / result.pipeline_s:.2f}x")
    return 0


def _demo_dataset(args: argparse.Namespace) -> int:
    for flag in ("items", "backend"):
        if getattr(args, flag) is not None:
            args.parser.error(f"--{flag} is for the seed demo; it does not go with --dataset")
    rows = 8192 if args.rows is None else args.rows
    epochs = 3 if args.epochs is None else args.epochs
    try:
        from .._workers.pool import WorkerPool
        from .dataset import (
            IMAGE,
            EpochResult,
            dataset_stream,
            need_data_extra,
            run_dataset_demo,
            write_dataset,
        )

        need_data_extra()
    except ImportError as exc:
        print(f"snake demo: {exc}", file=sys.stderr)
        return 1

    def on_epoch(epoch: int, r: EpochResult) -> None:
        once = "each once" if r.exactly_once else "NOT each exactly once"
        first = " ".join(str(i) for i in r.first_ids)
        print(f"epoch {epoch}:      {r.rows:,} rows, {once}; mean loss {r.mean_loss:.3f}; first ids {first}")

    with contextlib.ExitStack() as stack:
        if args.data is None:
            root = stack.enter_context(tempfile.TemporaryDirectory(prefix="snake-demo-"))
        else:
            root = args.data
            if os.path.isdir(root) and glob.glob(os.path.join(root, "*.parquet")):
                print(
                    f"snake demo: --data {root!r} already holds .parquet files; give a new or empty directory",
                    file=sys.stderr,
                )
                return 2
            os.makedirs(root, exist_ok=True)
        paths = write_dataset(root, rows)
        where = "a temporary directory, removed at the end" if args.data is None else repr(args.data)
        size = sum(os.path.getsize(p) for p in paths) / 1e6
        print(
            f"dataset:      {len(paths)} Parquet shards, {rows:,} rows of {IMAGE}x{IMAGE} PNG images, {size:.1f} MB, in {where}"
        )
        # one pool for every epoch: its workers stay up between them
        with WorkerPool(args.workers) as pool:
            print(f"snake demo --dataset: {dataset_stream(paths, epochs=epochs, pool=pool)!r}")
            result = trio.run(
                lambda: run_dataset_demo(paths, rows=rows, epochs=epochs, pool=pool, on_epoch=on_epoch)
            )
    first, last = result.epochs[0].mean_loss, result.epochs[-1].mean_loss
    print(
        f"loss:         {first:.3f} -> {last:.3f} (sequential loop's last epoch: {result.sequential_last_loss:.3f})"
    )
    n = result.rows * len(result.epochs)
    print(f"pipeline:     {result.pipeline_s:.3f} s, {n / result.pipeline_s:,.0f} rows/s")
    print(
        f"sequential:   {result.sequential_s:.3f} s, {n / result.sequential_s:,.0f} rows/s (pyarrow.dataset, the same decode and training in one loop)"
    )
    print(f"speed-up:     {result.sequential_s / result.pipeline_s:.2f}x")
    problems = []
    if len(result.epochs) != epochs or not all(e.exactly_once for e in result.epochs):
        problems.append("an epoch did not have every row exactly once")
    if epochs > 1 and not result.loss_went_down:
        problems.append("the loss did not go down")
    for p in problems:
        print(f"snake demo: FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="snake", description="snake: data loading on trio.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="run the seed pipeline (overlapped IO, then fib in worker processes)",
        description="Run the seed pipeline (or, with --dataset, the end-to-end dataset pipeline) "
        "and compare it with the same work done sequentially.",
    )
    demo.add_argument(
        "--dataset",
        action="store_true",
        help="run the end-to-end dataset pipeline instead: Parquet shards of PNG images -> decode and "
        "augment in worker processes -> batches -> a NumPy training loop (needs the 'data' extra)",
    )
    demo.add_argument("--workers", type=_positive, default=2, help="worker processes or threads (default 2)")
    seed = demo.add_argument_group("the seed pipeline")
    seed.add_argument("--items", type=_positive, default=None, help="number of items (default 100)")
    seed.add_argument(
        "--backend",
        choices=["process", "thread", "ray"],
        default=None,
        help="process: pure-Python fib in worker processes (the default); thread: the Rust kernel in threads; "
        "ray: pure-Python fib on Ray actors, on the cluster RAY_ADDRESS names or a local one (the 'ray' extra)",
    )
    data = demo.add_argument_group("--dataset")
    data.add_argument(
        "--rows", type=_positive, default=None, help="rows in the generated dataset (default 8192)"
    )
    data.add_argument("--epochs", type=_positive, default=None, help="epochs to train (default 3)")
    data.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="write the dataset to DIR (new or empty) and keep it (default: a temporary directory)",
    )
    demo.set_defaults(func=_demo, parser=demo)
    from .run import add_parsers

    add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        # the pipeline has stopped, its workers with it, and temporary files are gone
        print(f"snake {args.command}: interrupted", file=sys.stderr)
        return 130
