"""snake.kernels: stack and pad_stack equal their NumPy references, on any layout and dtype,
name the offending index in their errors, and release the GIL while they copy."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from snake import kernels

Array = np.ndarray[Any, Any]

#: Every kind of plain-data dtype the kernels copy (pad_stack pads the numeric ones).
NUMERIC = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128", ">i4", ">f8",
]  # fmt: skip
OTHER = ["<U3", "S2", "datetime64[s]", "timedelta64[ms]", [("a", "i2"), ("b", "f4")]]


def _layouts() -> dict[str, Callable[[Array], Array]]:
    """Ways to present an array of shape S to a kernel: views of shape S in other memory
    layouts (the references are computed from the same views, so values may change)."""

    def transposed(a: Array) -> Array:
        return np.asfortranarray(a) if a.ndim else a  # asfortranarray makes 0-d arrays 1-d

    def strided(a: Array) -> Array:
        # every other element along the last axis of a (*S, 2) array
        return np.repeat(a[..., np.newaxis], 2, axis=-1)[..., 0] if a.ndim else a

    def reversed_(a: Array) -> Array:
        return np.flip(a.copy()) if a.ndim else a

    def broadcast(a: Array) -> Array:
        return np.broadcast_to(a[:1], a.shape) if a.ndim and a.shape[0] else a

    return {
        "contiguous": lambda a: a,
        "transposed": transposed,
        "strided": strided,
        "reversed": reversed_,
        "broadcast": broadcast,
    }


LAYOUTS = _layouts()


@st.composite
def same_shape_arrays(draw: st.DrawFn, dtypes: list[Any]) -> list[Array]:
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    n = draw(st.integers(1, 6))
    out = []
    for _ in range(n):
        a = draw(hnp.arrays(dtype, shape))
        out.append(LAYOUTS[draw(st.sampled_from(sorted(LAYOUTS)))](a))
    return out


@settings(max_examples=300, deadline=None)
@given(same_shape_arrays(NUMERIC + OTHER), st.booleans())
def test_stack_equals_np_stack(arrays: list[Array], with_out: bool) -> None:
    # np.stack gives native byte order; the kernel keeps arrays[0]'s dtype as it is.
    expected = np.stack(arrays).astype(arrays[0].dtype, copy=False)
    out = np.empty(expected.shape, expected.dtype) if with_out else None
    got = kernels.stack(arrays, out)
    if out is not None:
        assert got is out
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert got.flags.c_contiguous
    assert got.tobytes() == expected.tobytes()


def pad_reference(arrays: list[Array], pad_value: Any, pad_to: int | None) -> tuple[Array, Array]:
    """Padding written with plain NumPy: np.full, then one slice assignment per item."""
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    longest = int(lengths.max())
    width = longest if pad_to is None else pad_to
    out = np.full((len(arrays), width, *arrays[0].shape[1:]), pad_value, dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out, lengths


def pad_values(dtype: np.dtype[Any]) -> st.SearchStrategy[Any]:
    if dtype.kind == "b":
        return st.booleans()
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return st.integers(int(info.min), int(info.max))
    if dtype.kind == "f":
        return st.floats(-1000, 1000, width=16 if dtype.itemsize == 2 else 32)
    return st.complex_numbers(max_magnitude=1000, allow_nan=False, width=64)


@st.composite
def ragged_arrays(draw: st.DrawFn) -> tuple[list[Array], Any, int | None]:
    dtype = np.dtype(draw(st.sampled_from(NUMERIC)))
    rest = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))
    arrays = []
    for _ in range(draw(st.integers(1, 6))):
        n = draw(st.integers(0, 7))
        a = draw(hnp.arrays(dtype, (n, *rest)))
        arrays.append(LAYOUTS[draw(st.sampled_from(["contiguous", "transposed", "strided", "reversed"]))](a))
    pad_value = draw(pad_values(dtype))
    longest = max(len(a) for a in arrays)
    pad_to = draw(st.none() | st.integers(longest, longest + 3))
    return arrays, pad_value, pad_to


@settings(max_examples=300, deadline=None)
@given(ragged_arrays(), st.booleans())
def test_pad_stack_equals_numpy_padding(case: tuple[list[Array], Any, int | None], with_out: bool) -> None:
    arrays, pad_value, pad_to = case
    expected, expected_lengths = pad_reference(arrays, pad_value, pad_to)
    out = np.empty_like(expected) if with_out else None
    batch, lengths = kernels.pad_stack(arrays, pad_value, out, pad_to)
    if out is not None:
        assert batch is out
    assert batch.shape == expected.shape and batch.dtype == expected.dtype
    assert lengths.dtype == np.int64 and lengths.tolist() == expected_lengths.tolist()
    assert batch.tobytes() == expected.tobytes()


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 6).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))),
    st.sampled_from(["shape", "dtype"]),
    st.sampled_from(["stack", "pad_stack"]),
)
def test_a_mismatch_names_its_index_shape_and_dtype(where: tuple[int, int], what: str, kernel: str) -> None:
    n, bad = where
    bad += 1  # arrays[0] sets the expectation: the culprit is one of the others
    arrays = [np.zeros((2, 3), np.float32) for _ in range(n + 1)]
    arrays[bad] = np.zeros((2, 4), np.float32) if what == "shape" else np.zeros((2, 3), np.int16)
    shown = "(2, 4) dtype float32" if what == "shape" else "(2, 3) dtype int16"
    fn = kernels.stack if kernel == "stack" else kernels.pad_stack
    with pytest.raises(ValueError, match=re.escape(f"{kernel}: arrays[{bad}] has shape {shown}; expected")):
        fn(arrays)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: kernels.stack([]), ValueError, "stack: arrays is empty"),
        (lambda: kernels.stack([np.zeros(2), [1, 2]]), TypeError, "stack: arrays[1] is list, not a numpy.ndarray"),
        (lambda: kernels.stack(5), TypeError, "stack: arrays must be a sequence of numpy arrays, not int"),
        (lambda: kernels.stack([np.array([None])]), TypeError, "holds Python objects"),
        (lambda: kernels.stack([np.zeros(2)], np.zeros((1, 3))), ValueError, "stack: out has shape (1, 3)"),
        (lambda: kernels.stack([np.zeros(2)] * 2, np.zeros((2, 2)).T), ValueError, "stack: out must be C-contiguous"),
        (lambda: kernels.pad_stack([np.zeros(2), np.float64(1)]), TypeError, "pad_stack: arrays[1] is float64"),
        (lambda: kernels.pad_stack([np.zeros(2), np.zeros(())]), ValueError, "pad_stack: arrays[1] is 0-dimensional"),
        (lambda: kernels.pad_stack([np.zeros(3)], pad_to=2), ValueError, "pad_stack: pad_to=2 is less than the longest length 3"),
        (lambda: kernels.pad_stack([np.zeros(3, np.uint8)], -1), ValueError, "pad_stack: pad_value=-1 does not fit dtype uint8"),
        (lambda: kernels.pad_stack([np.zeros(3, "U2")]), TypeError, "pad_stack: cannot pad dtype <U2"),
    ],
)  # fmt: skip
def test_errors_are_clear(call: Callable[[], object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_out_sharing_memory_with_an_input_is_refused() -> None:
    base = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"stack: out shares memory with arrays\[0\]"):
        kernels.stack([base[0, :2]], base[:1, :2])


def test_non_contiguous_inputs_are_gathered() -> None:
    a = np.arange(24, dtype=np.int32).reshape(4, 6)
    views = [a.T, a[::-1].T, a[:, ::2].repeat(2, axis=1).T]
    assert not any(v.flags.c_contiguous for v in views)
    assert np.array_equal(kernels.stack(views), np.stack(views))
    batch, lengths = kernels.pad_stack([a[::2, ::-1], a[:, ::-1]], -1)
    assert np.array_equal(batch, pad_reference([a[::2, ::-1], a[:, ::-1]], -1, None)[0])


@pytest.mark.parametrize("kernel", ["stack", "pad_stack"])
def test_the_gil_is_released_while_copying(kernel: str) -> None:
    # A Python thread counts while the kernel copies ~100 MB. With the GIL held for the
    # whole call, it could not count at all during the call.
    arrays = [np.ones(1 << 20, np.float64) for _ in range(12)]
    out = np.empty((12, 1 << 20))
    fn: Callable[[], object] = (
        (lambda: kernels.stack(arrays, out)) if kernel == "stack" else (lambda: kernels.pad_stack(arrays, 0, out))
    )
    counter = [0]
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            counter[0] += 1

    thread = threading.Thread(target=count)
    thread.start()
    try:
        time.sleep(0.01)
        best = 0
        for _ in range(5):
            before = counter[0]
            fn()
            best = max(best, counter[0] - before)
    finally:
        stop.set()
        thread.join()
    assert best > 100, best


def test_kernels_are_exported_and_documented() -> None:
    assert kernels.__all__ == ["fib", "pad_stack", "stack"]
    doc = kernels.__doc__ or ""
    for words in ("stack(arrays, out=None)", "pad_stack(arrays", "GIL", "O(total bytes)", "non-contiguous"):
        assert words in doc, words


@pytest.mark.parametrize("threads", [None, 1, 2, 3, 7, 64])
def test_any_thread_count_gives_the_same_batch(threads: int | None) -> None:
    rng = np.random.default_rng(5)
    # 12 MB of output (3 threads by default where 3 cores are allowed), odd item counts,
    # contiguous and gathered (transposed) inputs mixed.
    items = [rng.integers(0, 255, (3, 64, 64 * 81), dtype=np.uint8) for _ in range(7)]
    items[2] = np.ascontiguousarray(items[2].transpose(0, 2, 1)).transpose(0, 2, 1)
    items[4] = items[4][:, ::-1]
    out = np.full((7, 3, 64, 64 * 81), 9, np.uint8)
    assert kernels.stack(items, out=out, threads=threads) is out
    assert np.array_equal(out, np.stack(items))
    seqs = [rng.integers(0, 100, (n, 40_000), dtype=np.int32) for n in (5, 0, 31, 17)]
    batch, lengths = kernels.pad_stack(seqs, pad_value=-1, threads=threads)
    assert lengths.tolist() == [5, 0, 31, 17]
    for row, s in zip(batch, seqs, strict=True):
        assert np.array_equal(row[: len(s)], s) and (row[len(s) :] == -1).all()


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_a_batch_of_16_mib_or_more_is_the_same_batch(threads: int | None) -> None:
    # From 16 MiB of output the kernel writes with non-temporal stores: items of an odd
    # size (every slot starts at another alignment), an offset output, gathered items.
    rng = np.random.default_rng(7)
    items = [rng.integers(0, 255, 1_000_003, dtype=np.uint8) for _ in range(18)]
    items[5] = items[5][::-1]
    backing = np.full(18 * 1_000_003 + 3, 9, np.uint8)
    out = backing[3:].reshape(18, 1_000_003)
    assert out.nbytes >= 16 << 20
    assert kernels.stack(items, out=out, threads=threads) is out
    assert np.array_equal(out, np.stack(items)) and (backing[:3] == 9).all()


@pytest.mark.parametrize("kernel", ["stack", "pad_stack"])
def test_a_thread_count_below_one_is_refused(kernel: str) -> None:
    fn = getattr(kernels, kernel)
    with pytest.raises(ValueError, match=rf"^{kernel}: threads=0 is below 1; pass a count >= 1, or None"):
        fn([np.zeros(3)], threads=0)
    with pytest.raises(TypeError):
        fn([np.zeros(3)], threads="2")


def test_a_large_thread_count_is_capped() -> None:
    items = [np.full(3, i, np.int32) for i in range(300)]
    assert np.array_equal(kernels.stack(items, threads=10_000), np.stack(items))
