"""The ``snake`` command (also ``python -m snake``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo, seed_stream

    print(f"snake demo: {seed_stream(args.items, workers=args.workers, backend=args.backend)!r}")
    result = trio.run(lambda: run_demo(args.items, workers=args.workers, backend=args.backend))
    print(f"items:        {result.items}")
    print(f"checksum:     {result.checksum}")
    print(f"pipeline:     {result.pipeline_s:.3f} s")
    print(f"sequential:   {result.sequential_s:.3f} s")
    print(f"speed-up:     {result.sequential_s / result.pipeline_s:.2f}x")
    return 0


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
        description="Run the seed pipeline and compare it with the same work done sequentially.",
    )
    demo.add_argument("--items", type=_positive, default=100, help="number of items (default 100)")
    demo.add_argument("--workers", type=_positive, default=2, help="worker processes or threads (default 2)")
    demo.add_argument(
        "--backend",
        choices=["process", "thread"],
        default="process",
        help="process: pure-Python fib in worker processes; thread: the Rust kernel in threads",
    )
    demo.set_defaults(func=_demo)
    from ._cli_run import add_parsers

    add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
