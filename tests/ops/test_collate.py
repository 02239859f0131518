"""batch(), pad_batch() and bucket_by_length(): the collate rules, the buffer pool's
safety (a batch, or a view of one, that anyone still holds is never overwritten), and
the same results through open() and open_sync()."""

from __future__ import annotations

import collections
import gc
import re
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import trio
from conftest import run_async, run_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import snake
from snake._buffers import collate as _collate
from snake._buffers import reuse
from snake._buffers.collate import Collator, PadCollator, Pool

Array = np.ndarray[Any, Any]


RUNNERS: dict[str, Callable[[snake.Stream[Any]], list[Any]]] = {"open": run_async, "open_sync": run_sync}


def same(a: Any, b: Any) -> bool:
    """Deep equality of collated structures, arrays compared by dtype, shape and value."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


# -- the pool ------------------------------------------------------------------------
VIEWS: dict[str, Callable[[Array], object]] = {
    "slice": lambda b: b[1:],
    "row": lambda b: b[0],
    "np.asarray": np.asarray,
    "memoryview": memoryview,
    "np.frombuffer": lambda b: np.frombuffer(b, dtype=np.uint8),  # what torch.from_numpy-style wrappers do
    "reshape": lambda b: b.reshape(-1),
    "transpose": lambda b: b.T,
    "ravel": np.ravel,
    "view dtype": lambda b: b.view(np.uint8),
    "np.ndarray(buffer=)": lambda b: np.ndarray(b.shape, b.dtype, buffer=b),
    "__array_interface__ holder": lambda b: np.lib.stride_tricks.as_strided(b),
    "dlpack": lambda b: np.from_dlpack(b),
    "list of it": lambda b: [b],
    "tuple of a view": lambda b: (b[::2],),
}


def unwrap(holder: object) -> Array:
    """The array a holder from VIEWS shows."""
    if isinstance(holder, (list, tuple)):
        holder = holder[0]
    return np.asarray(holder)


@pytest.mark.parametrize("view", list(VIEWS))
def test_a_buffer_is_not_reused_while_a_view_of_it_lives(view: str) -> None:
    pool = Pool()
    dtype = np.dtype(np.float32)
    batch = pool.empty((4, 3), dtype)
    batch[...] = 7
    holder = VIEWS[view](batch)
    snapshot = unwrap(holder).copy()
    del batch
    gc.collect()
    for _ in range(3):  # never handed out again while ``holder`` lives
        other = pool.empty((4, 3), dtype)
        other[...] = -1
        del other  # ... while these, dropped at once, are reused among themselves
    again = unwrap(holder)
    assert np.array_equal(again, snapshot)
    del holder, again
    gc.collect()
    assert pool.grown == 2  # the held buffer, and one for the others


def test_a_dropped_buffer_is_reused_and_a_held_one_is_not() -> None:
    pool = Pool()
    dtype = np.dtype(np.int64)
    a = pool.empty((2, 2), dtype)
    assert a.base is not None
    first = id(a.base)  # (holding a.base itself would count as a holder)
    del a
    b = pool.empty((2, 2), dtype)
    assert id(b.base) == first and pool.reused == 1  # same buffer, since nobody held it
    c = pool.empty((2, 2), dtype)
    assert id(c.base) != first and pool.grown == 2  # b holds the first one


def test_a_pool_is_bounded_and_then_allocates_fresh_arrays() -> None:
    pool = Pool()
    big = (_collate.POOL_SMALL_BYTES // _collate.POOL_BUFFERS) + 8  # 4 such buffers fill the budget
    held = [pool.empty((big,), np.dtype(np.uint8)) for _ in range(10)]
    assert len(pool) == _collate.POOL_BUFFERS
    assert pool.grown == _collate.POOL_BUFFERS and pool.unpooled == 10 - _collate.POOL_BUFFERS
    assert all(h.base is None for h in held[_collate.POOL_BUFFERS :])  # fresh arrays own their memory
    del held
    small = [pool.empty((16,), np.dtype(np.uint8)) for _ in range(40)]
    assert len(pool) == _collate.POOL_MAX_BUFFERS  # small batches: more buffers, still bounded
    del small


def test_a_free_buffer_too_small_is_replaced_by_a_larger_one() -> None:
    pool = Pool()
    a = pool.empty((10,), np.dtype(np.uint8))
    del a
    b = pool.empty((100,), np.dtype(np.uint8))
    assert len(pool) == 1 and pool.capacity() == 100
    del b
    c = pool.empty((30,), np.dtype(np.float32))  # 120 bytes: grows again
    d = pool.empty((5,), np.dtype(np.uint8))  # c holds the only buffer: a second one
    assert len(pool) == 2 and c.base is not d.base


def test_a_buffer_is_free_only_while_no_view_of_it_is_alive() -> None:
    assert reuse.CAN_REUSE
    for holder, key in (([np.empty(3, np.uint8)], 0), ({"seg": np.empty(3, np.uint8)}, "seg")):
        assert reuse.is_free(holder, key)
        view = holder[key][1:]  # type: ignore[index]
        assert not reuse.is_free(holder, key)
        exported = memoryview(view)
        del view
        assert not reuse.is_free(holder, key)  # a buffer export of a view counts too
        del exported
        assert reuse.is_free(holder, key)


@st.composite
def hold_plans(draw: st.DrawFn) -> tuple[int, int, list[tuple[int, str | None]], str]:
    """How many items and of which batch size; which batches the consumer keeps (and as
    what: the batch itself or a view); the runner."""
    size = draw(st.integers(1, 5))
    n_items = draw(st.integers(1, 60))
    n_batches = -(-n_items // size)
    keep = draw(
        st.lists(
            st.tuples(st.integers(0, n_batches - 1), st.none() | st.sampled_from(sorted(VIEWS))),
            max_size=n_batches,
            unique_by=lambda t: t[0],
        )
    )
    return size, n_items, keep, draw(st.sampled_from(sorted(RUNNERS)))


def consume_all(stream: snake.Stream[Any], runner: str, consume: Callable[[Any, int], None]) -> None:
    if runner == "open":

        async def main() -> None:
            async with stream.open() as batches:
                k = 0
                async for b in batches:
                    consume(b, k)
                    del b
                    k += 1

        trio.run(main)
    else:
        with stream.open_sync() as batches:
            for k, b in enumerate(batches):
                consume(b, k)
                del b


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hold_plans())
def test_pool_reuse_never_changes_a_batch_still_referenced(plan: tuple[int, int, list[tuple[int, str | None]], str]) -> None:
    size, n_items, keep, runner = plan
    items = [np.full((3, 2), i, dtype=np.int32) for i in range(n_items)]
    wanted = dict(keep)
    kept: list[tuple[int, object, Array]] = []

    def check_kept() -> None:
        for j, holder, snapshot in kept:
            assert np.array_equal(unwrap(holder), snapshot), f"batch {j} ({wanted[j] or 'itself'}) changed"

    def consume(b: Array, k: int) -> None:
        assert np.array_equal(b, np.stack(items[k * size : (k + 1) * size]))
        if k in wanted:
            how = wanted[k]
            holder = b if how is None else VIEWS[how](b)
            kept.append((k, holder, unwrap(holder).copy()))
        check_kept()

    consume_all(snake.from_iterable(items).batch(size), runner, consume)
    gc.collect()
    check_kept()


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_every_batch_kept_is_intact_and_dropped_batches_reuse_buffers(runner: str) -> None:
    items = [np.full((64, 64), i, dtype=np.float64) for i in range(400)]
    held: list[tuple[int, Array]] = []
    bases: set[int] = set()

    def consume(b: Array, k: int) -> None:  # keep every 5th batch, drop the others at once
        bases.add(id(b.base))
        if k % 5 == 0:
            held.append((k, b))

    consume_all(snake.from_iterable(items).batch(8), runner, consume)
    for k, b in held:
        assert (b == np.arange(8 * k, 8 * k + 8, dtype=np.float64)[:, None, None]).all(), k
    assert len(held) == 10
    assert len(bases) < 30  # the 40 dropped batches shared a few buffers


def test_a_stream_hands_its_buffers_to_its_next_run_and_frees_them_with_it() -> None:
    items = [np.ones((4, 4)) * i for i in range(12)]
    stream = snake.from_iterable(items).batch(4)
    slabs = []
    bases = set()
    with stream.open_sync() as batches:
        for b in batches:
            slabs.append(weakref.ref(b.base))
            bases.add(id(b.base))
    del b
    gc.collect()
    # The next run (the next epoch) writes into the same buffers, the ones nobody holds.
    again = set()
    for b in stream:
        again.add(id(b.base))
    del b
    assert again <= bases, "the second run made new buffers instead of taking the first run's"
    # The stream keeps them between runs, and they go with it (and with the run's
    # handle, which still answers statistics()).
    assert any(ref() is not None for ref in slabs)
    del stream, batches
    gc.collect()
    assert slabs and all(ref() is None for ref in slabs)
    # Batches a run keeps are never written by a later run: it takes other buffers.
    stream = snake.from_iterable(items).batch(4)
    first = stream.to_list()
    second = stream.to_list()
    assert {id(b.base) for b in first}.isdisjoint({id(b.base) for b in second})
    assert [float(b[0, 0, 0]) for b in first] == [0.0, 4.0, 8.0]


# -- the default collate -----------------------------------------------------------------
Point = collections.namedtuple("Point", ["x", "y"])


def reference_collate(items: list[Any]) -> Any:
    """What the default collate means, written with np.stack and np.asarray."""
    first = items[0]
    if isinstance(first, np.ndarray):
        return np.stack(items).astype(first.dtype, copy=False)
    if isinstance(first, (bool, int, float, complex, np.number, np.bool_)):
        return np.asarray(items)
    if isinstance(first, dict):
        return {k: reference_collate([x[k] for x in items]) for k in first}
    if isinstance(first, tuple):
        fields = [reference_collate(list(c)) for c in zip(*items)]
        return type(first)(*fields) if hasattr(first, "_fields") else tuple(fields)
    if isinstance(first, list):
        return [reference_collate(list(c)) for c in zip(*items)]
    return items


LEAF_DTYPES = ["uint8", "int32", "int64", "float16", "float32", "float64", "complex64", "bool", ">i2", "<U2"]


def leaf_schemas() -> st.SearchStrategy[Any]:
    arrays = st.tuples(
        st.just("array"), st.sampled_from(LEAF_DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)
    )
    scalars = st.tuples(st.sampled_from(["int", "float", "bool", "np.float32", "np.int8", "str", "none"]))
    return arrays | scalars


schemas = st.recursive(
    leaf_schemas(),
    lambda inner: st.tuples(st.just("dict"), st.dictionaries(st.text("abc", min_size=1, max_size=3), inner, min_size=1, max_size=3))
    | st.tuples(st.just("tuple"), st.lists(inner, min_size=1, max_size=3))
    | st.tuples(st.just("list"), st.lists(inner, min_size=1, max_size=3))
    | st.tuples(st.just("point"), inner, inner),
    max_leaves=6,
)


def item_of(schema: Any) -> st.SearchStrategy[Any]:
    kind = schema[0]
    if kind == "array":
        return hnp.arrays(np.dtype(schema[1]), schema[2])
    if kind == "int":
        return st.integers(-(2**62), 2**62)
    if kind == "float":
        return st.floats(allow_nan=False)
    if kind == "bool":
        return st.booleans()
    if kind == "np.float32":
        return st.floats(width=32, allow_nan=False).map(np.float32)
    if kind == "np.int8":
        return st.integers(-128, 127).map(np.int8)
    if kind == "str":
        return st.text(max_size=3)
    if kind == "none":
        return st.none()
    if kind == "dict":
        return st.fixed_dictionaries({k: item_of(v) for k, v in schema[1].items()})
    if kind == "tuple":
        return st.tuples(*map(item_of, schema[1]))
    if kind == "list":
        return st.tuples(*map(item_of, schema[1])).map(list)
    return st.tuples(item_of(schema[1]), item_of(schema[2])).map(lambda t: Point(*t))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schemas.flatmap(lambda s: st.lists(item_of(s), min_size=1, max_size=6)))
def test_default_collate_equals_the_reference_on_nested_items(items: list[Any]) -> None:
    got = Collator()(items)
    assert same(got, reference_collate(items)), (got, reference_collate(items))


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_batch_collates_dicts_tuples_and_scalars_through_a_pipeline(runner: str) -> None:
    items = [
        {"image": np.full((2, 3), i, np.uint8), "label": i, "weight": i / 2, "name": f"n{i}", "pair": (i, np.int16(-i))}
        for i in range(10)
    ]
    got = RUNNERS[runner](snake.from_iterable(items).batch(4))
    assert len(got) == 3
    last = got[2]
    assert last["image"].shape == (2, 2, 3) and last["image"].dtype == np.uint8
    assert (last["image"][:, 0, 0] == [8, 9]).all()
    assert last["label"].tolist() == [8, 9] and last["label"].dtype == np.int64
    assert last["weight"].tolist() == [4.0, 4.5]
    assert last["name"] == ["n8", "n9"]
    assert isinstance(last["pair"], tuple) and last["pair"][1].dtype == np.int16
    assert [b["label"].tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_named_tuples_keep_their_type_and_other_items_stay_lists() -> None:
    got = Collator()([Point(np.zeros(2), 1), Point(np.ones(2), 2)])
    assert isinstance(got, Point) and got.x.shape == (2, 2) and got.y.tolist() == [1, 2]
    objs = [object(), object()]
    assert Collator()(objs) == objs
    assert Collator()(["a", "b"]) == ["a", "b"]
    assert Collator()([None, 1]) == [None, 1]


def test_masked_arrays_are_not_stacked_without_their_mask() -> None:
    masked = [np.ma.masked_array([1, 2], mask=[0, 1]), np.ma.masked_array([3, 4], mask=[1, 0])]
    assert Collator()(masked) is masked


def test_collate_none_and_a_user_function() -> None:
    s = snake.from_iterable(range(7))
    assert s.batch(3, collate=None).to_list() == [[0, 1, 2], [3, 4, 5], [6]]
    assert s.batch(3, collate=sum).to_list() == [3, 12, 6]
    assert s.batch(3, drop_last=True, collate=tuple).to_list() == [(0, 1, 2), (3, 4, 5)]
    got = s.batch(3).to_list()
    assert [b.tolist() for b in got] == [[0, 1, 2], [3, 4, 5], [6]] and got[0].dtype == np.int64


def test_repr_replays_the_batching_stages() -> None:
    s = snake.from_iterable(range(3))
    assert repr(s.batch(4)) == "from_iterable(<range len=3>).batch(4)"
    assert repr(s.batch(4, collate=None, drop_last=True)) == "from_iterable(<range len=3>).batch(4, drop_last=True, collate=None)"
    assert repr(s.batch(4, collate=sum)) == "from_iterable(<range len=3>).batch(4, collate=sum)"
    assert repr(s.pad_batch(8)) == "from_iterable(<range len=3>).pad_batch(8)"
    assert (
        repr(s.pad_batch(8, pad_value=-1, pad_to_multiple=16, drop_last=True))
        == "from_iterable(<range len=3>).pad_batch(8, pad_value=-1, pad_to_multiple=16, drop_last=True)"
    )
    assert repr(s.bucket_by_length([5, 10], [4, 2, 1])) == "from_iterable(<range len=3>).bucket_by_length([5, 10], [4, 2, 1])"
    assert (
        repr(s.bucket_by_length((5,), (2, 1), length=abs, pad_value=0.5, drop_last=True))
        == "from_iterable(<range len=3>).bucket_by_length([5], [2, 1], length=abs, pad_value=0.5, drop_last=True)"
    )


# -- errors --------------------------------------------------------------------------------
def notes(exc: BaseException) -> list[str]:
    return list(getattr(exc, "__notes__", []))


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_a_mismatched_shape_raises_the_kernel_error_with_the_batch_and_item(runner: str) -> None:
    items = [{"x": np.zeros(3), "y": 0} for _ in range(10)]
    items[6] = {"x": np.zeros(4), "y": 0}
    stream = snake.from_iterable(items).map(lambda d: d).batch(4)
    with pytest.raises(ValueError, match=re.escape("stack: arrays[2] has shape (4,) dtype float64; expected shape (3,)")) as info:
        RUNNERS[runner](stream)
    assert notes(info.value) == [
        "snake: raised in stage #2 batch(4) on item index 6",
        "snake: in batch index 1 (item indices 4..7), field ['x']",
    ]


def test_a_mismatched_dtype_in_a_tuple_names_the_field() -> None:
    items = [(np.zeros(2, np.float32), 1)] * 3 + [(np.zeros(2, np.float64), 1)]
    with pytest.raises(ValueError, match=r"arrays\[1\] has shape \(2,\) dtype float64") as info:
        snake.from_iterable(items).batch(2).to_list()
    assert notes(info.value) == [
        "snake: raised in stage #1 batch(2) on item index 3",
        "snake: in batch index 1 (item indices 2..3), field [0]",
    ]


@pytest.mark.parametrize(
    ("items", "error", "message"),
    [
        ([{"a": 1}, {"b": 1}], ValueError, "batch: items[1] has keys [\"'b'\"], but items[0] has keys [\"'a'\"]"),
        ([{"a": 1}, 3], TypeError, "batch: items[1] is int, but items[0] is a mapping"),
        ([(1, 2), (1, 2, 3)], ValueError, "batch: items[1] has 3 elements, but items[0] has 2; a tuple is collated element by element (use pad_batch()"),
        ([[1, 2], "ab"], TypeError, "batch: items[1] is str, but items[0] is a list"),
        ([1, "a"], TypeError, "batch: items[1] is str, but items[0] is a number (int)"),
        ([np.zeros(2), 1], TypeError, "stack: arrays[1] is int, not a numpy.ndarray"),
    ],
)  # fmt: skip
def test_collate_errors_name_the_item(items: list[Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)) as info:
        snake.from_iterable(items).batch(2).to_list()
    assert notes(info.value)[0] == "snake: raised in stage #1 batch(2) on item index 1"


def test_a_failing_user_collate_gets_the_batch_note() -> None:
    def boom(batch: list[int]) -> int:
        if 5 in batch:
            raise KeyError("five")
        return len(batch)

    with pytest.raises(KeyError, match="five") as info:
        snake.from_iterable(range(10)).batch(3, collate=boom).to_list()
    assert notes(info.value) == ["snake: raised in stage #1 batch(3, collate=boom)", "snake: in batch index 1 (item indices 3..5)"]


async def _async_collate(batch: list[int]) -> int:
    return 0


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda s: s.batch(2, collate="stack"), ValueError, "batch: collate='stack' must be 'default', None or a sync function"),
        (lambda s: s.batch(2, collate=3), TypeError, "batch: collate=3 must be 'default', None or a sync function"),
        (lambda s: s.batch(2, collate=_async_collate), TypeError, "batch needs a sync collate function; _async_collate is an async function"),
        (lambda s: s.pad_batch(0), ValueError, "pad_batch: size=0 must be >= 1"),
        (lambda s: s.pad_batch(2, pad_value="x"), TypeError, "pad_batch: pad_value='x' must be a bool, int, float or complex"),
        (lambda s: s.pad_batch(2, pad_to_multiple=0), ValueError, "pad_batch: pad_to_multiple=0 must be >= 1"),
        (lambda s: s.pad_batch(2, pad_to_multiple=2.0), TypeError, "pad_batch: pad_to_multiple=2.0 must be an int"),
        (lambda s: s.pad_batch(2, drop_last=None), TypeError, "pad_batch: drop_last=None must be a bool"),
        (lambda s: s.bucket_by_length(5, [1]), TypeError, "bucket_by_length: boundaries=5 must be a sequence of ints"),
        (lambda s: s.bucket_by_length("ab", [1]), TypeError, "bucket_by_length: boundaries='ab' must be a sequence of ints"),
        (lambda s: s.bucket_by_length([1, 2.5], [1, 1, 1]), TypeError, "bucket_by_length: boundaries=[1, 2.5] must be a sequence of ints (boundaries[1]=2.5)"),
        (lambda s: s.bucket_by_length([0, 4], [1, 1, 1]), ValueError, "bucket_by_length: boundaries=[0, 4] must hold ints >= 1 (boundaries[0]=0)"),
        (lambda s: s.bucket_by_length([4, 4], [1, 1, 1]), ValueError, "bucket_by_length: boundaries=[4, 4] must be strictly increasing (boundaries[1]=4 after 4)"),
        (lambda s: s.bucket_by_length([4], [1]), ValueError, "bucket_by_length: batch_sizes=[1] has 1 sizes; it needs len(boundaries) + 1 = 2, one per bucket"),
        (lambda s: s.bucket_by_length([4], [1, 0]), ValueError, "bucket_by_length: batch_sizes=[1, 0] must hold ints >= 1 (batch_sizes[1]=0)"),
        (lambda s: s.bucket_by_length([4], [1, True]), TypeError, "bucket_by_length: batch_sizes=[1, True] must be a sequence of ints (batch_sizes[1]=True)"),
        (lambda s: s.bucket_by_length([4], [1, 1], length=3), TypeError, "bucket_by_length: fn=3 is not callable"),
        (lambda s: s.bucket_by_length([4], [1, 1], length=_async_collate), TypeError, "bucket_by_length needs a sync function"),
        (lambda s: s.bucket_by_length([4], [1, 1], pad_value=None), TypeError, "bucket_by_length: pad_value=None must be"),
        (lambda s: s.bucket_by_length([4], [1, 1], drop_last=1), TypeError, "bucket_by_length: drop_last=1 must be a bool"),
    ],
)  # fmt: skip
def test_build_time_errors_quote_the_argument(
    build: Callable[[snake.Stream[Any]], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        build(snake.from_iterable(range(3)))


# -- pad_batch -------------------------------------------------------------------------------
def pad_reference(arrays: list[Any], pad_value: Any, multiple: int | None) -> tuple[Array, Array]:
    arrays = [np.asarray(a) for a in arrays]
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    width = int(lengths.max())
    if multiple is not None:
        width = -(-width // multiple) * multiple
    out = np.full((len(arrays), width, *arrays[0].shape[1:]), pad_value, dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out, lengths


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(0, 9), min_size=1, max_size=30),
    st.integers(1, 5),
    st.none() | st.integers(1, 4),
    st.sampled_from(["int64", "float32", "uint8"]),
    st.booleans(),
    st.sampled_from(sorted(RUNNERS)),
)
def test_pad_batch_equals_the_reference(
    lengths: list[int], size: int, multiple: int | None, dtype: str, drop_last: bool, runner: str
) -> None:
    items = [np.arange(n * 2, dtype=dtype).reshape(n, 2) + i for i, n in enumerate(lengths)]
    got = RUNNERS[runner](snake.from_iterable(items).pad_batch(size, pad_value=7, pad_to_multiple=multiple, drop_last=drop_last))
    groups = [items[i : i + size] for i in range(0, len(items), size)]
    if drop_last and len(groups[-1]) < size:
        groups.pop()
    assert len(got) == len(groups)
    for (batch, lens), group in zip(got, groups):
        ref, ref_lens = pad_reference(group, 7, multiple)
        assert same(batch, ref) and same(lens, ref_lens)


def test_pad_batch_of_dicts_pads_array_fields_and_collates_the_rest() -> None:
    items = [{"tokens": np.arange(n), "label": n, "id": f"s{n}", "mask": [1] * n} for n in (3, 1, 4)]
    [batch] = snake.from_iterable(items).pad_batch(3, pad_value=-1).to_list()
    tokens, lengths = batch["tokens"]
    assert tokens.tolist() == [[0, 1, 2, -1], [0, -1, -1, -1], [0, 1, 2, 3]]
    assert lengths.tolist() == [3, 1, 4]
    assert batch["label"].tolist() == [3, 1, 4]
    assert batch["id"] == ["s3", "s1", "s4"]
    mask, mask_lengths = batch["mask"]  # lists are sequences to pad too
    assert mask.tolist() == [[1, 1, 1, -1], [1, -1, -1, -1], [1, 1, 1, 1]] and mask.dtype == np.int64


def test_pad_batch_of_token_lists_with_an_empty_one() -> None:
    [(batch, lengths)] = snake.from_iterable([[5, 6], [], [7]]).pad_batch(3).to_list()
    assert batch.dtype == np.int64 and batch.tolist() == [[5, 6], [0, 0], [7, 0]]
    assert lengths.tolist() == [2, 0, 1]


def test_pad_batch_errors_name_the_item() -> None:
    items = [np.zeros((2, 3)), np.zeros((1, 3)), np.zeros((2, 4))]
    with pytest.raises(ValueError, match=re.escape("pad_stack: arrays[2] has shape (2, 4) dtype float64; expected shape (*, 3)")) as info:
        snake.from_iterable(items).pad_batch(3).to_list()
    assert notes(info.value) == [
        "snake: raised in stage #1 pad_batch(3) on item index 2",
        "snake: in batch index 0 (item indices 0..2)",
    ]
    with pytest.raises(ValueError, match=re.escape("pad_stack: pad_value=-1 does not fit dtype uint8")):
        snake.from_iterable([np.zeros(2, np.uint8)]).pad_batch(1, pad_value=-1).to_list()


# -- bucket_by_length --------------------------------------------------------------------------
def bucket_reference(
    items: list[Any], boundaries: list[int], sizes: list[int], length: Callable[[Any], int], drop_last: bool
) -> list[list[Any]]:
    """tf.data's bucket_by_sequence_length, with plain lists: the groups, in emission order."""
    buckets: list[list[Any]] = [[] for _ in sizes]
    out = []
    for x in items:
        n = length(x)
        b = sum(1 for bound in boundaries if n >= bound)
        buckets[b].append(x)
        if len(buckets[b]) == sizes[b]:
            out.append(buckets[b])
            buckets[b] = []
    if not drop_last:
        out.extend(b for b in buckets if b)
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(0, 20), min_size=0, max_size=40),
    st.lists(st.integers(1, 20), max_size=3, unique=True).map(sorted),
    st.data(),
    st.booleans(),
    st.sampled_from(sorted(RUNNERS)),
)
def test_bucket_by_length_equals_the_reference(
    lengths: list[int], boundaries: list[int], data: st.DataObject, drop_last: bool, runner: str
) -> None:
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=len(boundaries) + 1, max_size=len(boundaries) + 1))
    items = [np.arange(n) + 100 * i for i, n in enumerate(lengths)]
    stream = snake.from_iterable(items).bucket_by_length(boundaries, sizes, pad_value=-1, drop_last=drop_last)
    got = RUNNERS[runner](stream)
    expected = bucket_reference(items, boundaries, sizes, len, drop_last)
    assert len(got) == len(expected)
    for (batch, lens), group in zip(got, expected):
        ref, ref_lens = pad_reference(group, -1, None)
        assert same(batch, ref) and same(lens, ref_lens)


def test_bucket_by_length_with_a_length_function_and_dict_items() -> None:
    items = [{"ids": np.arange(n), "n": n} for n in (1, 9, 2, 8, 3)]
    got = snake.from_iterable(items).bucket_by_length([5], [2, 2], length=lambda d: d["n"]).to_list()
    assert [b["n"].tolist() for b in got] == [[1, 2], [9, 8], [3]]
    ids, lengths = got[1]["ids"]
    assert ids.shape == (2, 9) and lengths.tolist() == [9, 8]


@pytest.mark.parametrize(
    ("length", "error", "message"),
    [
        (lambda x: -1, ValueError, "bucket_by_length: length(item) returned -1; a length must be >= 0"),
        (lambda x: 2.5, TypeError, "bucket_by_length: length(item) returned float; it must return an int"),
        (lambda x: True, TypeError, "bucket_by_length: length(item) returned a bool"),
        (lambda x: 1 // (x - 3), ZeroDivisionError, "by zero"),
    ],
)
def test_bucket_by_length_errors_name_the_item(length: Callable[[Any], Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)) as info:
        snake.from_iterable(range(3, 10)).bucket_by_length([2], [1, 1], length=length).to_list()
    assert notes(info.value)[0] == "snake: raised in stage #1 bucket_by_length([2], [1, 1], length=<lambda>) on item index 0"


def test_bucket_by_length_accepts_numpy_integer_lengths() -> None:
    got = snake.from_iterable([np.zeros(2), np.zeros(5)]).bucket_by_length([3], [1, 1], length=lambda a: np.int64(a.size)).to_list()
    assert [b.shape for b, _ in got] == [(1, 2), (1, 5)]


def test_a_bucket_collate_error_lists_the_items_of_the_batch() -> None:
    items = [np.zeros(2), np.zeros(9), np.zeros(3, np.float32)]
    with pytest.raises(ValueError, match=r"pad_stack: arrays\[1\]") as info:
        snake.from_iterable(items).bucket_by_length([5], [2, 1]).to_list()
    assert notes(info.value) == [
        "snake: raised in stage #1 bucket_by_length([5], [2, 1]) on item index 2",
        "snake: in batch index 1 (item indices 0, 2)",
    ]


def test_collators_are_fresh_per_run() -> None:
    spec = snake.from_iterable(range(3)).batch(2)._specs[-1]
    a, b = spec.make("#1"), spec.make("#1")  # type: ignore[attr-defined]
    assert a.collate is not b.collate and isinstance(a.collate, Collator)
    pad = snake.from_iterable(range(3)).pad_batch(2)._specs[-1].make("#1")  # type: ignore[attr-defined]
    assert isinstance(pad.collate, PadCollator)


def test_numbers_that_fit_no_dtype_are_refused() -> None:
    with pytest.raises(TypeError, match=re.escape("batch: these numbers do not fit one numeric dtype")) as info:
        snake.from_iterable([1, 2**70]).batch(2).to_list()
    assert notes(info.value) == ["snake: raised in stage #1 batch(2)", "snake: in batch index 0 (item indices 0..1)"]


def test_large_batches_go_into_mapped_buffers_faulted_in_ahead() -> None:
    import mmap

    from snake._buffers.collate import SLAB_MAP_BYTES, new_slab

    big = new_slab(SLAB_MAP_BYTES)
    small = new_slab(SLAB_MAP_BYTES - 1)
    assert big.flags.writeable and big.nbytes == SLAB_MAP_BYTES

    def mapped(a: Any) -> bool:
        while isinstance(a, np.ndarray):
            a = a.base
        return isinstance(getattr(a, "obj", a), mmap.mmap)

    assert mapped(big) or not hasattr(mmap, "MAP_POPULATE")
    assert not mapped(small) and small.nbytes == SLAB_MAP_BYTES - 1
    # a batch of 2 MB lands in such a buffer, and is an ordinary writable array
    items = [np.full((512, 512), i, np.float32) for i in range(4)]
    (b,) = snake.from_iterable(items).batch(2).take(1).to_list()
    assert b.flags.writeable and b.flags.c_contiguous
    assert mapped(b) or not hasattr(mmap, "MAP_POPULATE")
    b += 1
    assert b[1, 0, 0] == 2.0
