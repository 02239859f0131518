"""When workers fail: records that raise, and one that kills its worker process.

``decode`` stands for decoding a record: it raises ValueError on corrupt records
and, on one record, kills the worker process it runs in (``os._exit``), as a
segfault in a C extension or the kernel's OOM killer would. Without a policy the
first failure stops the pipeline; with ``retries`` and ``on_error("skip")`` the
failing records are dropped, and ``statistics()`` counts what happened.
"""

import os

import snake

CORRUPT = {120, 150, 180}   # records that raise ValueError
DEADLY = 3                  # the record that kills its worker process


def decode(record):
    if record == DEADLY:
        os._exit(1)          # the worker dies: no exception, no traceback
    if record in CORRUPT:
        raise ValueError(f"record {record} is corrupt")
    return record * 2


def main():
    records = snake.from_iterable(range(200))

    # 1. No policy: the dead worker stops the pipeline with a clear error.
    try:
        records.par_map(decode, workers=2).to_list()
    except snake.WorkerCrashedError as exc:
        print(f"WorkerCrashedError: {exc}")

    # 2. Retry the item whose worker died once, then skip what still fails:
    #    at most 5 records may be dropped before the pipeline gives up.
    stream = records.par_map(decode, workers=2, retries=1).on_error("skip", max_errors=5)
    with stream.open_sync() as items:
        decoded = list(items)
        stats = items.statistics()
    missing = sorted(set(range(200)) - {x // 2 for x in decoded})
    print(f"{len(decoded)} of 200 records decoded; missing {missing}")
    for stage in stats.stages:
        print(
            f"{stage.name}: in={stage.items_in} out={stage.items_out} "
            f"skipped={stage.errors_skipped} retries={stage.retries} workers_lost={stage.workers_lost}"
        )


if __name__ == "__main__":   # worker processes may re-import this file
    main()
