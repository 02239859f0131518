"""Reading statistics(): one record per stage, numbered as error notes number them."""

import trio

import snake


def decode(i):
    if i % 50 == 7:
        raise ValueError(f"record {i} is corrupt")
    return i


async def main():
    stream = snake.from_iterable(range(200)).par_map(decode, workers=2).on_error("skip")
    async with stream.open() as items:
        async for x in items:
            ...
        stats = items.statistics()
    decoder = stats.stage(1)
    print(decoder.name)
    print(decoder.items_in, decoder.items_out, decoder.errors_skipped)


if __name__ == "__main__":
    trio.run(main)
