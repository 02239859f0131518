"""CPU stages on Ray actors: par_map(backend="ray"), ray_options, failures, and a
WorkerPool of actors kept across epochs.

No Ray cluster is running here, so snake starts a local one (ray.init()); with
RAY_ADDRESS set, or after your own ray.init(address=...), the same code runs on
that cluster.
"""

import os
import tempfile
import time

import numpy as np

import snake


def decode(i):
    """Stands for decoding and augmenting an image: CPU work, on an actor."""
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)


def flaky(job):
    """Item 5's actor dies the first time it runs it (a crash in native code, say)."""
    folder, i = job
    marker = os.path.join(folder, f"ran-{i}")
    if i == 5 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return i


def actor_pid(i):
    time.sleep(0.01)  # some work, so that both actors get items
    return os.getpid()


def main():
    # 1. Two actors of one CPU each decode; batch() stacks their arrays.
    stream = (
        snake.from_iterable(range(256))
        .par_map(decode, workers=2, backend="ray", ray_options={"num_cpus": 1})
        .batch(32)
    )
    print(stream)
    batches = stream.to_list()
    print(f"{len(batches)} batches of {batches[0].shape} {batches[0].dtype}; in order:",
          all(np.array_equal(b[0], decode(32 * k)) for k, b in enumerate(batches)))

    # 2. An actor that dies: retries=1 runs its item again on a fresh actor.
    with tempfile.TemporaryDirectory() as folder:
        jobs = [(folder, i) for i in range(20)]
        stream = snake.from_iterable(jobs).par_map(flaky, workers=2, backend="ray", retries=1)
        with stream.open_sync() as items:
            got = list(items)
            stats = items.statistics().stage(1)
    print(f"all 20 items, in order: {got == list(range(20))}; "
          f"workers_lost={stats.workers_lost} retries={stats.retries}")

    # 3. A pool keeps its actors (and what the function set up in them) across epochs.
    with snake.WorkerPool(2, backend="ray") as pool:
        epoch = snake.from_iterable(range(64)).par_map(actor_pid, backend="ray", pool=pool)
        pids = [set(epoch.to_list()) for _ in range(3)]
        print(f"{len(pids[0])} actors; the same in every epoch:", pids[0] == pids[1] == pids[2])
        print("between epochs:", pool.statistics())
    print("after the block:", pool.statistics())


if __name__ == "__main__":
    main()
