"""A Stream is a description: each run starts afresh, a generator source gives its
items only once, and a wrong argument fails when the stream is built."""

import snake

squares = snake.from_iterable(range(5)).map(lambda x: x * x)
print(squares)                  # from_iterable(<range len=5>).map(<lambda>)
print(squares.to_list())        # [0, 1, 4, 9, 16]
print(squares.to_list())        # the same: every run is a new, independent run

gen = snake.from_iterable(x * x for x in range(3))
print(gen.to_list())            # [0, 1, 4]
print(gen.to_list())            # []: a generator can only be iterated once

try:
    snake.from_iterable(range(10)).batch(0)
except ValueError as exc:
    print(f"ValueError: {exc}")  # raised by batch(0) itself, before anything runs
