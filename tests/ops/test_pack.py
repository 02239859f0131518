"""pack(): rows equal a plain-Python model of the same algorithm, every token lands once
in order, exact checkpoints, the padding statistic, and errors at the call and at run time."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import run_async, run_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snake
from snake.testing import check_resume


def _identity(x: Any) -> Any:
    return x


def _seq(i: int) -> np.ndarray:
    return np.arange(i * 100, i * 100 + (i * 5) % 13)


def _two_arrays(i: int) -> list[np.ndarray]:
    return [np.arange(i * 100, i * 100 + i % 5), np.arange(i * 100 + 50, i * 100 + 50 + (i * 7) % 11)]


# -- the model ----------------------------------------------------------------------------


def model_pack(
    seqs: list[list[int]], length: int, buffer: int, fit: str, too_long: str
) -> list[list[list[int]]]:
    """The rows of ``pack(length, buffer=, fit=, too_long=)``, each a list of its
    sequences (lists of tokens), in the order they go out."""
    out: list[list[list[int]]] = []
    rows: list[list[list[int]]] = []

    def room(r: list[list[int]]) -> int:
        return length - sum(map(len, r))

    def drop(r: list[list[int]]) -> None:
        del rows[next(k for k, x in enumerate(rows) if x is r)]

    for seq in seqs:
        s = list(seq)
        if len(s) > length:
            if too_long == "truncate":
                s = s[:length]
            else:
                while len(s) > length:
                    out.append([s[:length]])
                    s = s[length:]
        if not s:
            continue
        if len(s) == length:
            out.append([s])
            continue
        fits = [r for r in rows if room(r) >= len(s)]
        if fits:
            row = fits[0] if fit == "first" else min(fits, key=room)
        else:
            if len(rows) == buffer:
                fullest = min(rows, key=room)
                drop(fullest)
                out.append(fullest)
            row = []
            rows.append(row)
        row.append(s)
        if room(row) == 0:
            drop(row)
            out.append(row)
    out.extend(rows)
    return out


def as_dict(row: list[list[int]], length: int, pad: int = 0, key: str = "tokens") -> dict[str, list[int]]:
    tokens = [t for s in row for t in s]
    seg = [k for k, s in enumerate(row, 1) for _ in s]
    pos = [j for s in row for j in range(len(s))]
    fill = length - len(tokens)
    return {
        key: tokens + [pad] * fill,
        f"{key}_segment_ids": seg + [0] * fill,
        f"{key}_positions": pos + [0] * fill,
    }


def plain(rows: list[dict[str, np.ndarray]]) -> list[dict[str, list[int]]]:
    return [{k: v.tolist() for k, v in r.items()} for r in rows]


def check_invariants(
    rows: list[dict[str, Any]], seqs: list[list[int]], length: int, too_long: str, key: str = "tokens"
) -> None:
    """The laws of packing, whatever the algorithm: rows of ``length``; segment ids 1, 2,
    ... then 0s; positions count from 0 in each segment; every token of every input
    (its first ``length`` ones, truncated) in exactly one segment, in order."""
    pieces: dict[int, list[tuple[int, int]]] = {}  # input -> (offset, size) of its segments
    for row in rows:
        tokens = list(row[key])
        seg = list(row[f"{key}_segment_ids"])
        pos = list(row[f"{key}_positions"])
        assert len(tokens) == len(seg) == len(pos) == length
        used = sum(1 for s in seg if s)
        assert all(s == 0 for s in seg[used:]) and all(p == 0 for p in pos[used:])
        assert all(t == 0 for t in tokens[used:])
        start = 0
        for k in range(1, max(seg, default=0) + 1):
            size = seg.count(k)
            assert size >= 1 and seg[start : start + size] == [k] * size, f"segment {k} is not contiguous"
            assert pos[start : start + size] == list(range(size))
            i, j = divmod(tokens[start], 1000)
            assert tokens[start : start + size] == [i * 1000 + j + m for m in range(size)], (
                "tokens out of order"
            )
            pieces.setdefault(i - 1, []).append((j, size))
            start += size
        assert start == used
    for i, s in enumerate(seqs):
        want = min(len(s), length) if too_long == "truncate" else len(s)
        got = sorted(pieces.get(i, []))
        covered = 0
        for off, size in got:
            assert off == covered, f"input {i}: tokens {covered}..{off} missing or twice"
            covered += size
        assert covered == want, f"input {i}: {covered} of its {want} tokens packed"
    assert set(pieces) <= set(range(len(seqs)))


def tokens_of(lengths: list[int]) -> list[list[int]]:
    """Sequences whose tokens name them: token ``j`` of sequence ``i`` is ``(i+1)*1000 + j``."""
    return [[(i + 1) * 1000 + j for j in range(n)] for i, n in enumerate(lengths)]


# -- examples ----------------------------------------------------------------------------


def test_rows_hold_tokens_segment_ids_and_positions() -> None:
    seqs = [np.arange(1, n + 1) for n in (3, 5, 2, 7, 1, 4)]
    rows = snake.from_iterable(seqs).pack(8, buffer=2).to_list()
    assert plain(rows) == [
        {
            "tokens": [1, 2, 3, 1, 2, 3, 4, 5],
            "tokens_segment_ids": [1, 1, 1, 2, 2, 2, 2, 2],
            "tokens_positions": [0, 1, 2, 0, 1, 2, 3, 4],
        },
        {
            "tokens": [1, 2, 3, 4, 5, 6, 7, 1],
            "tokens_segment_ids": [1, 1, 1, 1, 1, 1, 1, 2],
            "tokens_positions": [0, 1, 2, 3, 4, 5, 6, 0],
        },
        {
            "tokens": [1, 2, 1, 2, 3, 4, 0, 0],
            "tokens_segment_ids": [1, 1, 2, 2, 2, 2, 0, 0],
            "tokens_positions": [0, 1, 0, 1, 2, 3, 0, 0],
        },
    ]
    assert rows[0]["tokens"].dtype == seqs[0].dtype
    assert rows[0]["tokens_segment_ids"].dtype == rows[0]["tokens_positions"].dtype == np.int32


def test_dict_items_pack_every_key_with_its_own_segment_ids_and_positions() -> None:
    items = [{"tokens": np.arange(n), "loss_mask": np.ones(n, dtype=bool)} for n in (3, 12, 2)]
    rows = snake.from_iterable(items).pack(5, pad_value=0).to_list()
    assert [sorted(r) for r in rows] == [
        [
            "loss_mask",
            "loss_mask_positions",
            "loss_mask_segment_ids",
            "tokens",
            "tokens_positions",
            "tokens_segment_ids",
        ]
    ] * 4
    # 12 tokens split into 5 + 5 (full rows at once) + 2, which joins the row of 3
    assert [r["tokens"].tolist() for r in rows] == [
        [0, 1, 2, 3, 4],
        [5, 6, 7, 8, 9],
        [0, 1, 2, 10, 11],
        [0, 1, 0, 0, 0],
    ]
    assert rows[3]["loss_mask"].tolist() == [True, True, False, False, False]
    assert rows[2]["loss_mask_segment_ids"].tolist() == [1, 1, 1, 2, 2]
    assert rows[2]["loss_mask_positions"].tolist() == rows[2]["tokens_positions"].tolist() == [0, 1, 2, 0, 1]


def test_best_fit_picks_the_tightest_row_first_fit_the_oldest() -> None:
    seqs = [[1] * 2, [2] * 5, [3]]  # rows of 6: after the first two, rooms 4 and 1
    best = plain(snake.from_iterable(seqs).pack(6, buffer=2).to_list())
    first = plain(snake.from_iterable(seqs).pack(6, buffer=2, fit="first").to_list())
    assert [r["tokens"] for r in best] == [[2, 2, 2, 2, 2, 3], [1, 1, 0, 0, 0, 0]]
    assert [r["tokens"] for r in first] == [[1, 1, 3, 0, 0, 0], [2, 2, 2, 2, 2, 0]]


def test_too_long_sequences_are_split_truncated_or_refused() -> None:
    seqs = [list(range(1, 8))]
    split = plain(snake.from_iterable(seqs).pack(3).to_list())
    assert [r["tokens"] for r in split] == [[1, 2, 3], [4, 5, 6], [7, 0, 0]]
    assert [r["tokens_positions"] for r in split] == [[0, 1, 2], [0, 1, 2], [0, 0, 0]]
    trunc = plain(snake.from_iterable(seqs).pack(3, too_long="truncate").to_list())
    assert [r["tokens"] for r in trunc] == [[1, 2, 3]]
    with pytest.raises(ValueError, match=r"pack: item has length 7, more than length=3") as info:
        snake.from_iterable([[1], *seqs]).pack(3, too_long="raise").to_list()
    assert any("pack(3, too_long='raise') on item index 1" in n for n in info.value.__notes__)


def test_empty_sequences_add_nothing() -> None:
    rows = plain(snake.from_iterable([[], [5, 6], []]).pack(4).to_list())
    assert rows == [as_dict([[5, 6]], 4)]


# -- the law -----------------------------------------------------------------------------

PACK_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PACK_SETTINGS
@given(
    length=st.integers(1, 12),
    lengths=st.lists(st.integers(0, 30), max_size=40),
    buffer=st.integers(1, 5),
    fit=st.sampled_from(["best", "first"]),
    too_long=st.sampled_from(["split", "truncate"]),
    as_dicts=st.booleans(),
)
def test_pack_equals_the_model_and_keeps_every_token_once(
    length: int, lengths: list[int], buffer: int, fit: str, too_long: str, as_dicts: bool
) -> None:
    seqs = tokens_of(lengths)
    items: list[Any] = [np.asarray(s, dtype=np.int64) for s in seqs]
    if as_dicts:
        items = [{"ids": a, "mask": a % 2 == 0} for a in items]
    stream = snake.from_iterable(items).pack(length, buffer=buffer, fit=fit, too_long=too_long)  # type: ignore[arg-type]
    rows = plain(stream.to_list())
    want = [
        as_dict(r, length, key="ids" if as_dicts else "tokens")
        for r in model_pack(seqs, length, buffer, fit, too_long)
    ]
    if as_dicts:
        for r in want:
            r["mask"] = [t % 2 == 0 and s > 0 for t, s in zip(r["ids"], r["ids_segment_ids"])]
            r["mask_segment_ids"], r["mask_positions"] = r["ids_segment_ids"], r["ids_positions"]
    assert rows == want
    check_invariants(rows, seqs, length, too_long, key="ids" if as_dicts else "tokens")


@PACK_SETTINGS
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=60), buffer=st.integers(1, 6))
def test_the_padding_statistic_counts_the_rows_made(lengths: list[int], buffer: int) -> None:
    # A sanity bound of the statistics: rows made = slots / length, padding in [0, 1).
    seqs = [np.ones(n, dtype=np.int32) for n in lengths]
    with snake.from_iterable(seqs).pack(16, buffer=buffer).open_sync() as items:
        rows = list(items)
        st_ = items.statistics().stage(1)
    assert st_.items_out == len(rows) <= sum(-(-n // 16) for n in lengths)
    assert st_.padding is not None
    used = sum(int(np.count_nonzero(r["tokens_segment_ids"])) for r in rows)
    assert st_.padding == pytest.approx(1 - used / (16 * len(rows)))
    assert 0 <= st_.padding < 1


# -- checkpoints -------------------------------------------------------------------------


def _seqs(n: int, seed: int = 0, hi: int = 14) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.arange(i * 100, i * 100 + k) for i, k in enumerate(rng.integers(0, hi, n).tolist())]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: snake.from_iterable(_seqs(60)).pack(8, buffer=3), id="split, best fit"),
        pytest.param(
            lambda: snake.from_iterable(_seqs(60, 1, 30)).pack(8, buffer=2, fit="first"),
            id="long ones split, first fit",
        ),
        pytest.param(
            lambda: snake.from_iterable(_seqs(50, 2, 30)).pack(8, too_long="truncate"), id="truncate"
        ),
        pytest.param(
            lambda: snake.from_iterable(_seqs(60, 3)).map(_identity).pack(8, buffer=4),
            id="after a map (refill)",
        ),
        pytest.param(
            lambda: snake.from_iterable(_seqs(60, 4, 24)).shuffle(5, seed=1).pack(6, buffer=3),
            id="after a shuffle (select)",
        ),
        pytest.param(
            lambda: (
                snake.from_iterable(range(50)).par_map(_seq, workers=2, backend="thread").pack(9, buffer=3)
            ),
            id="after a par_map (refill through a task stage)",
        ),
        pytest.param(
            lambda: (
                snake.from_iterable(range(30)).flat_map(_two_arrays).pack(7, buffer=2).batch(2, collate=None)
            ),
            id="after a flat_map (select), batched",
        ),
        pytest.param(
            lambda: snake.from_iterable([{"t": s, "m": s % 3 == 0} for s in _seqs(40, 5, 20)]).pack(
                9, buffer=2
            ),
            id="dicts",
        ),
    ],
)
def test_pack_resumes_exactly(make: Any) -> None:
    stream = make()
    n = len(stream.to_list())
    check_resume(stream, at=sorted({0, 1, 2, 3, n // 3, n // 2, n - 2, n - 1, n}))


def test_a_checkpoint_among_the_rows_of_one_long_sequence_resumes_there() -> None:
    # the second input gives three full rows at once: checkpoints between them
    seqs = [np.arange(3), np.arange(100, 131), np.arange(200, 204)]
    stream = snake.from_iterable(seqs).pack(10, buffer=1)
    check_resume(stream, at=[1, 2, 3, 4])


# -- statistics and report ---------------------------------------------------------------


@pytest.mark.parametrize("run", [run_async, run_sync])
def test_statistics_report_the_padding(run: Any) -> None:
    assert plain(run(snake.from_iterable([[1, 2, 3], [4]]).pack(4))) == [as_dict([[1, 2, 3], [4]], 4)]
    with (
        snake.from_iterable([[1, 2, 3], [4, 5], [6, 7, 8, 9]])
        .map(_identity)
        .pack(4, buffer=1)
        .open_sync() as items
    ):
        assert len(list(items)) == 3  # [1 2 3 _] [4 5 _ _] [6 7 8 9]
        stats = items.statistics()
        report = items.report()
    assert stats.stage(2).padding == pytest.approx(3 / 12)
    assert stats.stage(1).padding is None and stats.stage(0).padding is None
    assert "padding: #2 pack(4, buffer=1): 25.00 % of the token slots of its 3 rows" in report


# -- errors ------------------------------------------------------------------------------


def test_repr_replays_the_call() -> None:
    s = snake.from_iterable(range(3))
    assert repr(s.pack(2048)) == "from_iterable(<range len=3>).pack(2048)"
    assert (
        repr(s.pack(16, buffer=4, fit="first", too_long="truncate", pad_value=-1))
        == "from_iterable(<range len=3>).pack(16, buffer=4, fit='first', too_long='truncate', pad_value=-1)"
    )


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda s: s.pack(0), ValueError, "pack: length=0 must be >= 1"),
        (lambda s: s.pack(2.5), TypeError, "pack: length=2.5 must be an int"),
        (lambda s: s.pack(8, buffer=0), ValueError, "pack: buffer=0 must be >= 1"),
        (lambda s: s.pack(8, buffer=True), TypeError, "pack: buffer=True must be an int"),
        (lambda s: s.pack(8, fit="worst"), ValueError, "pack: fit='worst' must be one of 'best', 'first'"),
        (
            lambda s: s.pack(8, too_long="drop"),
            ValueError,
            "pack: too_long='drop' must be one of 'split', 'truncate', 'raise'",
        ),
        (lambda s: s.pack(8, pad_value="0"), TypeError, "pack: pad_value='0' must be a bool, int or float"),
        (lambda s: s.pack(8, pad_value=1j), TypeError, r"pack: pad_value=1j must be a bool, int or float"),
    ],
)
def test_bad_arguments_fail_at_the_call(call: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call(snake.from_iterable(range(3)))


@pytest.mark.parametrize(
    ("items", "error", "message", "index"),
    [
        ([np.zeros((2, 2))], ValueError, r"pack: item has shape \(2, 2\); it must be 1-D", 0),
        ([[1], "ab"], TypeError, "pack: item is str; it must be a 1-D NumPy array", 1),
        ([[1], [1.5]], TypeError, "pack: item has dtype float64; the first item's had int64", 1),
        ([np.array(["a"])], TypeError, "pack: item has dtype <U1; it must hold numbers", 0),
        ([{"t": [1, 2], "m": [1]}], ValueError, r"pack: item\['m'\] has length 1; item\['t'\] has 2", 0),
        ([{"t": [1]}, {"u": [1]}], ValueError, r"pack: item has keys \['u'\]; the first item had \['t'\]", 1),
        ([{"t": [1]}, [1]], TypeError, r"pack: item is list; the first item was a dict with keys \['t'\]", 1),
        ([[1], {"t": [1]}], TypeError, "pack: item is a dict, and the first item was an array", 1),
        ([{"t": [1], "t_positions": [1]}], ValueError, "pack: item has the key 't_positions', which pack", 0),
        ([np.array([1], dtype=np.uint8)], TypeError, "pack: pad_value=-1 does not fit dtype uint8", 0),
    ],
)
def test_items_that_cannot_be_packed_raise_with_a_note(
    items: list[Any], error: type[Exception], message: str, index: int
) -> None:
    pad = -1 if "pad_value" in message else 0
    with pytest.raises(error, match=message) as info:
        snake.from_iterable(items).pack(4, pad_value=pad).to_list()
    assert any(f"on item index {index}" in n for n in info.value.__notes__)
