"""Large arrays from worker processes: shared memory against pickle, and against memcpy.

256 items; each worker builds a float32 (3, 512, 512) array (3 MiB) from its
index; the main process receives them and stacks batches of 32. Reported: GB/s
delivered (array bytes / wall time from open() to the last batch), the same with
the shared-memory transport turned off (pickle over the pipe), and a memcpy of
the same bytes into batch buffers measured in the same run.

    python bench/arrays.py            # floor: >= 5 GB/s
    python bench/arrays.py --quick    # 64 items
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import trio
from _common import best_of, check, parser, write

import snake
from snake import _ext
from snake._workers import shm as _shm

SHAPE = (3, 512, 512)
BATCH = 32


def build(i: int) -> np.ndarray[Any, Any]:
    return np.full(SHAPE, i, dtype=np.float32)


def run_pipeline(n: int) -> float:
    stream = snake.from_iterable(range(n)).par_map(build, workers=2).batch(BATCH)
    out = np.empty((BATCH, *SHAPE), dtype=np.float32)

    async def main() -> float:
        t0 = time.perf_counter()
        seen = 0
        async with stream.open() as batches:
            async for b in batches:
                if isinstance(b, list):  # batch() without a collate: stack here, reusing a buffer
                    b = _ext.stack(b, out=out[: len(b)]) if len(b) == BATCH else np.stack(b)
                assert b.shape[1:] == SHAPE and b[0, 0, 0, 0] == seen
                seen += len(b)
        assert seen == n
        return time.perf_counter() - t0

    return trio.run(main)


def memcpy(n: int) -> float:
    src = [build(i) for i in range(BATCH)]
    out = np.empty((BATCH, *SHAPE), dtype=np.float32)

    def copy_all() -> None:
        for _ in range(n // BATCH):
            for j in range(BATCH):
                np.copyto(out[j], src[j])

    return best_of(3, copy_all)


def main() -> int:
    args = parser(__doc__ or "").parse_args()
    n = 64 if args.quick else 256
    nbytes = n * int(np.prod(SHAPE)) * 4
    t_copy = memcpy(n)
    t_shm = min(run_pipeline(n) for _ in range(1 if args.quick else 3))
    min_bytes = _shm.MIN_SHM_BYTES
    _shm.MIN_SHM_BYTES = 1 << 62  # every array pickled through the pipe
    try:
        t_pickle = run_pipeline(n)
    finally:
        _shm.MIN_SHM_BYTES = min_bytes
    gbs = nbytes / t_shm / 1e9
    print(f"{n} arrays of {SHAPE} float32 = {nbytes / 1e6:.0f} MB, batches of {BATCH}, par_map(workers=2)")
    print(f"memcpy of the same bytes:   {nbytes / t_copy / 1e9:6.2f} GB/s")
    print(f"snake, shared memory:       {gbs:6.2f} GB/s  ({t_copy / t_shm:.2f} x memcpy)")
    print(f"snake, pickle over pipe:    {nbytes / t_pickle / 1e9:6.2f} GB/s")
    check("shared-memory GB/s delivered", gbs, ">= 5", gbs >= 5)
    write(
        "arrays",
        {
            "items": n,
            "bytes": nbytes,
            "memcpy_gb_s": nbytes / t_copy / 1e9,
            "shm_gb_s": gbs,
            "pickle_gb_s": nbytes / t_pickle / 1e9,
            "shm_over_memcpy": t_copy / t_shm,
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
