"""``from_iterable(fn)``: a generator function source runs again for every epoch and resume."""

from __future__ import annotations

from collections.abc import Iterator

import snake
from snake.testing import check_resume


def test_a_generator_function_runs_again_for_each_epoch_and_resumes_exactly() -> None:
    calls: list[int] = []

    def numbers() -> Iterator[int]:
        calls.append(snake.current_epoch())
        yield from range(50)

    stream = snake.from_iterable(numbers).repeat(2)
    assert stream.to_list() == list(range(50)) * 2
    assert calls == [0, 1]  # called once per epoch, in that epoch

    # A checkpoint in either epoch, or at the edge between them, resumes exactly; a
    # generator cannot seek, so the resumed epoch runs it again and skips what was had.
    check_resume(stream, at=[0, 1, 30, 49, 50, 51, 75, 99, 100])
    check_resume(snake.from_iterable(numbers).map(lambda x: x * 3).batch(7, collate=None).repeat(2))
