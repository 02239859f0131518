"""A stage that stalls: after stall_timeout seconds, snake logs where the item is stuck."""

import logging
import sys
import time

import snake


def work(i):
    if i == 5:
        time.sleep(3)         # stands for a call that hangs
    return i


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
    stream = snake.from_iterable(range(20)).par_map(work, workers=2, stall_timeout=1.0)
    with stream.open_sync() as items:
        out = list(items)
        stats = items.statistics()
    print(f"{len(out)} items; stall warnings: {stats.stage(1).stalls}")
