"""sliding(): windows of consecutive items, e.g. the context of each step of a series."""

import snake

s = snake.from_iterable(range(7))
print(s.sliding(3).to_list())          # [(0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 6)]
print(s.sliding(2, step=3).to_list())  # [(0, 1), (3, 4)]: item 6 has no full window
print(s.sliding(8).to_list())          # []: no window is padded

# A moving average over windows of 4 readings, 2 at a time.
readings = snake.from_iterable([3.0, 5.0, 4.0, 6.0, 8.0, 7.0, 9.0, 5.0])
print(readings.sliding(4, step=2).map(lambda w: sum(w) / len(w)).to_list())  # [4.5, 6.25, 7.25]
