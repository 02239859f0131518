"""A stage raises: the pipeline stops and the original exception comes out.

It is the same exception object the stage raised (never an ExceptionGroup),
with notes that name the stage and the index of the item it failed on.
"""

import trio

import snake

LINES = ["10", "20", "30", "forty", "50"]


def parse(line):
    return int(line)          # ValueError on "forty"


stream = snake.from_iterable(LINES).map(parse)


async def main():
    try:
        async with stream.open() as items:
            async for x in items:
                print("parsed", x)
    except ValueError as exc:
        print(f"caught {type(exc).__name__}: {exc}")
        for note in exc.__notes__:
            print("  note:", note)

    # The same from a plain for loop (or to_list()): same type, same notes.
    try:
        stream.to_list()
    except ValueError as exc:
        print(f"caught {type(exc).__name__} again; first note: {exc.__notes__[0]}")


if __name__ == "__main__":
    trio.run(main)
