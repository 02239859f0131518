"""Decoding a Parquet image dataset: from_parquet + par_map(workers=2) against a sequential loop.

The dataset is generated once and cached under bench/data/ (git-ignored): 256x256
RGB images encoded as PNG by Pillow, with an int64 ``label`` and a short ``text``
column, in 8 files of row groups of 128 rows; >= 500 MB of PNG bytes (--quick:
~20 MB, 2 files of row groups of 32 rows). PNG rather than zlib-compressed raw pixels because decoding PNG
(inflate, then undoing the per-row filters, in Pillow's C code) is what an image
loader does; Pillow is in the ``test`` extra. The images are smooth gradients plus
2 bits of noise, so each is unique and compresses about 2x, like a photo saved as
PNG; the Parquet files store them uncompressed (PNG is compressed already) and
without a dictionary. Generation runs in 2 processes and is timed.

``decode(row)`` opens the PNG, takes a 224x224 crop, flips it, normalizes it to
float32 and returns the label and the per-channel mean and std: the work of a
typical training-time decode, with a small result, so that the run measures reading
and decoding (bench/arrays.py measures large results from workers).

Measured, in the same run: rows/s of
(a) the baseline: ``pyarrow.dataset`` scanned sequentially, each record batch turned
    into rows and decoded in a plain Python loop;
(b) snake, row groups read in the workers: ``from_parquet(files, read=False)`` hands
    out row-group handles, ``par_map(decode_group, workers=2)`` reads each in a worker
    and decodes its rows with the same ``decode``, ``flat_map(list)`` yields the rows;
(c) snake, rows read in the main process: ``from_parquet(files).par_map(decode,
    workers=2)``, every row's PNG pickled to a worker (no floor; it shows what (b) saves).
Each snake figure is a ``for`` loop consuming the stream to the end, wall time from the
start of the loop (workers starting included).

    python bench/parquet.py            # floor: (b) >= 1.8x the loop
    python bench/parquet.py --quick    # ~20 MB, used by the tests
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import sys
import time
from typing import Any

import numpy as np
from _common import check, cpu_snapshot, other_cpu, parser, write

import snake

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SIZE = 256
CROP = 224
FORMAT = 1  # bump when the generated data changes
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255
WORDS = ["red", "green", "blue", "cat", "dog", "tree", "car", "house", "river", "sky"]


def make_png(i: int) -> bytes:
    from PIL import Image

    r = np.random.default_rng(i)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    img = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    for c in range(3):
        fx, fy, ph = r.uniform(0.01, 0.06), r.uniform(0.01, 0.06), r.uniform(0, 6.28)
        img[..., c] = (110 + 100 * np.sin(xx * fx + yy * fy + ph)).astype(np.uint8)
    img += r.integers(0, 4, img.shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def make_group(span: tuple[int, int]) -> dict[str, list[Any]]:
    idx = range(*span)
    return {
        "image": [make_png(i) for i in idx],
        "label": [i % 1000 for i in idx],
        "text": [f"a photo of a {WORDS[i % 10]} and a {WORDS[(i // 10) % 10]}, #{i}" for i in idx],
    }


def dataset(quick: bool) -> list[str]:
    """The Parquet files (generated on first use, then reused)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name, n_files, per_group, target = ("quick", 2, 32, 20e6) if quick else ("full", 8, 128, 520e6)
    folder = os.path.join(DATA_DIR, f"parquet-{name}")
    stamp = os.path.join(folder, "done.json")
    if os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f).get("format") == FORMAT:
                return sorted(os.path.join(folder, p) for p in os.listdir(folder) if p.endswith(".parquet"))
    os.makedirs(folder, exist_ok=True)
    for p in os.listdir(folder):
        os.remove(os.path.join(folder, p))
    size = len(make_png(0))
    groups = -(-int(target / size) // per_group)
    groups = -(-groups // n_files) * n_files
    per_file = groups // n_files
    schema = pa.schema([("image", pa.binary()), ("label", pa.int64()), ("text", pa.string())])
    t0 = time.perf_counter()
    print(f"generating {groups * per_group} rows of ~{size / 1e3:.0f} KB PNGs in {folder} ...")
    paths = []
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with ctx.Pool(2) as pool:
        made = pool.imap(make_group, [(g * per_group, (g + 1) * per_group) for g in range(groups)])
        for k in range(n_files):
            path = os.path.join(folder, f"part-{k:02d}.parquet")
            with pq.ParquetWriter(
                path + ".tmp", schema, compression="none", use_dictionary=["label", "text"]
            ) as w:
                for _ in range(per_file):
                    w.write_table(pa.table(next(made), schema=schema), row_group_size=per_group)
            os.replace(path + ".tmp", path)
            paths.append(path)
    total = sum(os.path.getsize(p) for p in paths)
    print(f"generated {total / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s")
    with open(stamp, "w") as f:
        json.dump({"format": FORMAT, "bytes": total}, f)
    return paths


def decode(row: dict[str, Any]) -> tuple[int, np.ndarray[Any, Any]]:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(row["image"])).convert("RGB"))
    off = row["label"] % (SIZE - CROP)
    x = img[off : off + CROP, off : off + CROP, :][:, ::-1, :].astype(np.float32)
    x = (x - MEAN) / STD
    return row["label"], np.concatenate([x.mean(axis=(0, 1)), x.std(axis=(0, 1))])


def decode_group(group: snake.ParquetRowGroup) -> list[tuple[int, np.ndarray[Any, Any]]]:
    """In a worker: read one row group and decode its rows."""
    return [decode(row) for row in group.read()]


def run_snake_groups(paths: list[str]) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    n, check_sum = 0, 0.0
    stream = snake.from_parquet(paths, read=False).par_map(decode_group, workers=2).flat_map(list)
    for label, stats in stream:
        n += 1
        check_sum += label + float(stats[0])
    return n, time.perf_counter() - t0, check_sum


def run_snake_rows(paths: list[str]) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    n, check_sum = 0, 0.0
    for label, stats in snake.from_parquet(paths).par_map(decode, workers=2):
        n += 1
        check_sum += label + float(stats[0])
    return n, time.perf_counter() - t0, check_sum


def run_loop(paths: list[str]) -> tuple[int, float, float]:
    import pyarrow.dataset as ds

    t0 = time.perf_counter()
    n, check_sum = 0, 0.0
    for batch in ds.dataset(paths, format="parquet").to_batches():
        for row in batch.to_pylist():
            label, stats = decode(row)
            n += 1
            check_sum += label + float(stats[0])
    return n, time.perf_counter() - t0, check_sum


def main() -> int:
    args = parser(__doc__ or "").parse_args()
    paths = dataset(args.quick)
    import pyarrow.parquet as pq

    total = sum(os.path.getsize(p) for p in paths)
    groups = sum(pq.ParquetFile(p).metadata.num_row_groups for p in paths)
    # read every file once, so both runs find them in the page cache
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass
    before = cpu_snapshot()
    n_loop, t_loop, sum_loop = run_loop(paths)
    n_snake, t_snake, sum_snake = run_snake_groups(paths)
    n_rows, t_rows, sum_rows = run_snake_rows(paths)
    for n, check_sum in ((n_snake, sum_snake), (n_rows, sum_rows)):
        assert n == n_loop, (n, n_loop)
        assert abs(check_sum - sum_loop) <= 1e-6 * abs(sum_loop) + 1e-3, (check_sum, sum_loop)
    loop_rps, snake_rps, rows_rps = n_loop / t_loop, n_snake / t_snake, n_rows / t_rows
    ratio = snake_rps / loop_rps
    others = other_cpu(before, cpu_snapshot())
    print(f"{len(paths)} files, {groups} row groups, {n_loop} rows, {total / 1e6:.0f} MB")
    if others is not None:
        # Other work on the machine slows the 2-worker runs more than the 1-core loop.
        print(f"other processes used {others:.2f} cores on average during the runs")
    print(f"pyarrow.dataset, sequential loop:                  {loop_rps:8.1f} rows/s  ({t_loop:.2f} s)")
    print(f"snake, read=False, par_map(decode_group, workers=2): {snake_rps:8.1f} rows/s  ({t_snake:.2f} s)")
    print(f"snake, rows, par_map(decode, workers=2):             {rows_rps:8.1f} rows/s  ({t_rows:.2f} s)")
    print(f"snake rows / sequential loop, rows/s: {rows_rps / loop_rps:.3g} (no floor)")
    check("snake read=False / sequential loop, rows/s", ratio, ">= 1.8", ratio >= 1.8)
    write(
        "parquet",
        {
            "files": len(paths),
            "row_groups": groups,
            "rows": n_loop,
            "bytes": total,
            "loop_rows_s": loop_rps,
            "snake_rows_s": snake_rps,
            "snake_over_loop": ratio,
            "snake_rows_in_main_rows_s": rows_rps,
            "snake_rows_in_main_over_loop": rows_rps / loop_rps,
            "other_processes_cores": others,
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
