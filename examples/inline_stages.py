"""Inline stages: cheap per-item work, fused into one task and run on whole chunks."""

import snake

s = snake.from_iterable(range(10))
print(s.filter(lambda x: x % 3 == 0).map(lambda x: x * x).to_list())   # [0, 9, 36, 81]
print(s.skip(2).take(5).batch(2, collate=None).to_list())               # [[2, 3], [4, 5], [6]]
print(s.skip(2).take(5).batch(2, drop_last=True).to_list())             # [array([2, 3]), array([4, 5])]
print(s.flat_map(lambda x: [x] * (x % 3)).take(6).to_list())           # [1, 2, 2, 4, 5, 5]
print(s.skip(7).enumerate().to_list())                                  # [(0, 7), (1, 8), (2, 9)]
