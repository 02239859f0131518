"""Warm workers across epochs: one WorkerPool serves every run of a stream.

Without a pool, each run of a ``par_map`` stage starts its own worker processes
and stops them at the end. With ``pool=``, the stage runs on the pool's workers,
which stay alive between runs until the ``with`` block ends: every epoch below
is served by the same two processes.
"""

import os
import time

import snake


def worker_pid(i):
    time.sleep(0.001)        # stands for 1 ms of CPU work
    return os.getpid()


def main():
    with snake.WorkerPool(2) as pool:
        stream = snake.from_iterable(range(200)).par_map(worker_pid, pool=pool)
        print(stream)
        seen = []
        for epoch in range(3):
            pids = sorted(set(stream))       # each `for` over the stream is a new run
            seen.append(pids)
            print(f"epoch {epoch}: worker pids {pids}")
        print(f"same workers in every epoch: {seen[0] == seen[1] == seen[2]}")
        print(f"between epochs: {pool.statistics()}")
    print(f"after the block: {pool.statistics()}")

    # For contrast: without a pool, every run starts fresh worker processes.
    plain = snake.from_iterable(range(200)).par_map(worker_pid, workers=2)
    first, second = set(plain), set(plain)
    print(f"without a pool, the second run reused a worker: {bool(first & second)}")


if __name__ == "__main__":   # worker processes may re-import this file
    main()
