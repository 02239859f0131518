"""Warm workers across epochs: one WorkerPool serves every run of a stream.

Without a pool, a ``par_map`` stage takes idle workers from a process-wide cache
that every stage of the process shares, where a worker idle for 60 s exits. With
``pool=``, the stage runs on worker processes of its own, which no other stage
uses and which never idle out: every epoch below is served by the same two
processes, and they stop when the ``with`` block ends.
"""

import os
import time

import snake


def worker_pid(i):
    time.sleep(0.001)        # stands for 1 ms of CPU work
    return os.getpid()


def running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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
    print(f"the pool's workers still run: {any(running(pid) for pid in seen[0])}")


if __name__ == "__main__":   # worker processes may re-import this file
    main()
