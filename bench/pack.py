"""Sequence packing: ``pack()`` against a NumPy reference and Grain, on the same data.

    python bench/pack.py                  # 100,000 sequences, rows of 2048 tokens
    python bench/pack.py --quick          # 5,000 sequences (the tests run this)
    python bench/pack.py --grain-python /path/to/venv/bin/python   # Grain from another venv

The data: sequence lengths drawn from a lognormal distribution (median 300 tokens,
sigma 1.0, so a mean near 500 and a long tail), ``int32`` tokens, cut into pieces of at
most 2048 tokens beforehand so that every packer gets the very same sequences (Grain's
packers refuse longer ones). Every line packs them into rows of 2048 and reports:

- padding: the share of the rows' token slots that are padding (lower is better);
- tokens/s: the sequences' tokens over the seconds to make every row, consumed by a plain
  ``for`` loop (for ``pack()``: ``open_sync``, so the pipeline's own thread is counted).

Lines: a NumPy reference (next fit, the loop one writes by hand: fill one row until the
next sequence does not fit, ``np.concatenate`` it), ``pack()`` with best fit and first
fit and 8 or 64 open rows, and Grain's ``FirstFitPackIterDataset`` and
``BestFitPackIterDataset`` (64 bins, no bin shuffling) where Grain imports: in this
Python, or in the one ``--grain-python`` names (the same data is made there from the
same seed). The padding is the figure to compare; the speeds move with the machine's load.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from _common import check, parser, write

LENGTH = 2048


def make_data(n: int, seed: int = 0, length: int = LENGTH) -> list[np.ndarray]:
    """``n`` lognormal-length sequences of ``int32`` tokens, cut into pieces of at most
    ``length``: the same list for every packer."""
    rng = np.random.default_rng(seed)
    lens = np.maximum(1, rng.lognormal(np.log(300), 1.0, n).astype(np.int64))
    tokens = rng.integers(0, 50_000, int(lens.sum()), dtype=np.int32)
    seqs = np.split(tokens, np.cumsum(lens)[:-1])
    return [s[i : i + length] for s in seqs for i in range(0, len(s), length)]


def numpy_next_fit(seqs: list[np.ndarray], length: int) -> Iterable[dict[str, np.ndarray]]:
    """The reference: one open row; a sequence that does not fit closes it."""
    row: list[np.ndarray] = []
    used = 0

    def close() -> dict[str, np.ndarray]:
        lens = [len(s) for s in row]
        tokens = np.zeros(length, dtype=np.int32)
        seg = np.zeros(length, dtype=np.int32)
        pos = np.zeros(length, dtype=np.int32)
        tokens[:used] = np.concatenate(row)
        seg[:used] = np.repeat(np.arange(1, len(row) + 1, dtype=np.int32), lens)
        starts = np.cumsum(lens) - lens
        pos[:used] = np.arange(used) - np.repeat(starts, lens)
        return {"tokens": tokens, "tokens_segment_ids": seg, "tokens_positions": pos}

    for s in seqs:
        if used + len(s) > length:
            yield close()
            row, used = [], 0
        row.append(s)
        used += len(s)
    if row:
        yield close()


def measure(seqs: list[np.ndarray], make: Callable[[], Iterable[dict[str, np.ndarray]]]) -> dict[str, float]:
    """Padding and tokens/s of the rows ``make()`` gives."""
    total = sum(len(s) for s in seqs)
    t0 = time.perf_counter()
    rows = 0
    real = 0
    for r in make():
        rows += 1
        real += int(np.count_nonzero(r["tokens_segment_ids"]))
    dt = time.perf_counter() - t0
    assert real == total, f"{real} of {total} tokens packed"
    return {"rows": rows, "padding": 1 - real / (rows * LENGTH), "tokens_per_s": total / dt, "seconds": dt}


def grain_lines(seqs: list[np.ndarray], bins: int) -> dict[str, dict[str, float]]:
    import grain

    def packed(cls: Any) -> Callable[[], Iterable[dict[str, np.ndarray]]]:
        def make() -> Iterable[dict[str, np.ndarray]]:
            ds = grain.MapDataset.source([{"tokens": s} for s in seqs]).to_iter_dataset()
            return cls(ds, length_struct={"tokens": LENGTH}, num_packing_bins=bins, shuffle_bins=False)  # type: ignore[no-any-return]

        return make

    out = {}
    ex = grain.experimental
    for name in ("FirstFitPackIterDataset", "BestFitPackIterDataset"):
        if hasattr(ex, name):
            out[f"grain {name}({bins} bins)"] = measure(seqs, packed(getattr(ex, name)))
    return out


def grain_elsewhere(python: str, n: int, bins: int) -> dict[str, Any]:
    """Grain's lines, run by another Python (a venv of its own) on the same data."""
    proc = subprocess.run(
        [python, __file__, "--grain-only", "--n", str(n), "--bins", str(bins)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        return {
            "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"
        }
    found = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(found[-1]) if found else {"error": "no results printed"}  # type: ignore[no-any-return]


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--grain-python", default=None, help="a Python that imports grain, for Grain's lines")
    p.add_argument("--grain-only", action="store_true", help=MAIN_ONLY)
    p.add_argument("--n", type=int, default=None, help=MAIN_ONLY)
    p.add_argument("--bins", type=int, default=64, help=MAIN_ONLY)
    args = p.parse_args()
    n = args.n or (5_000 if args.quick else 100_000)
    seqs = make_data(n)
    if args.grain_only:
        print(json.dumps(grain_lines(seqs, args.bins)))
        return 0

    import snake

    def snake_pack(**kw: Any) -> Callable[[], Iterable[dict[str, np.ndarray]]]:
        return lambda: snake.from_iterable(seqs).pack(LENGTH, **kw)

    total = sum(len(s) for s in seqs)
    print(f"{n:,} sequences ({len(seqs):,} after cutting at {LENGTH}), {total:,} tokens; rows of {LENGTH}")
    lines: dict[str, Any] = {
        "numpy next fit (reference)": measure(seqs, lambda: numpy_next_fit(seqs, LENGTH))
    }
    for fit in ("best", "first"):
        for buffer in (8, 64):
            lines[f"pack(fit={fit!r}, buffer={buffer})"] = measure(seqs, snake_pack(fit=fit, buffer=buffer))
    try:
        import grain  # noqa: F401

        lines.update(grain_lines(seqs, 64))
        grain_note = "grain imported here"
    except ImportError as exc:
        if args.grain_python:
            got = grain_elsewhere(args.grain_python, n, 64)
            grain_note = f"grain from {args.grain_python}"
            if "error" in got:
                grain_note += f": failed ({got['error']})"
            else:
                lines.update(got)
        else:
            grain_note = f"grain not measured: {exc} (pip install grain, or pass --grain-python)"
    for name, r in lines.items():
        print(f"  {name:<44} padding {100 * r['padding']:6.2f} %   {r['tokens_per_s'] / 1e6:8.1f} M tokens/s")
    print(grain_note)
    ref = lines["numpy next fit (reference)"]
    best = lines["pack(fit='best', buffer=64)"]
    check(
        "pack(buffer=64) padding / next fit padding",
        best["padding"] / ref["padding"],
        "none (reported)",
        True,
    )
    check(
        "pack(buffer=64) speed / NumPy next fit speed",
        best["tokens_per_s"] / ref["tokens_per_s"],
        "none (reported)",
        True,
    )
    write(
        "pack",
        {
            "sequences": n,
            "pieces": len(seqs),
            "tokens": total,
            "length": LENGTH,
            "lines": lines,
            "grain": grain_note,
        },
        args.json,
    )
    return 0


MAIN_ONLY = "(used by the script itself, to run Grain's lines in another Python)"

if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"({time.perf_counter() - t0:.1f} s)")
    sys.exit(rc)
