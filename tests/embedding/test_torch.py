"""``to_torch``: the optional torch adapter.

The tests that need torch run where a CPU build is installed (CI installs none:
PyPI's default torch wheel is a multi-GB CUDA build, which the test extra must
never pull). The rest run everywhere.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections import namedtuple
from typing import Any

import numpy as np
import pytest
from funcs import image

import snake

NEEDS_TORCH = "needs a CPU build of torch (optional; not in the test extra, see README)"


needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason=NEEDS_TORCH)


def _torch() -> Any:
    import torch

    return torch


def test_import_snake_does_not_import_torch() -> None:
    code = "import snake, sys; snake.from_iterable([1]).map(str); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_torch_is_a_clear_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` sees when it is absent
    with pytest.raises(ImportError, match="to_torch needs PyTorch"):
        snake.from_iterable([np.zeros(3)]).to_torch()


@needs_torch
def test_arrays_become_tensors_sharing_memory() -> None:
    torch = _torch()
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3) + i for i in range(5)]
    out = snake.from_iterable(arrays).to_torch().to_list()
    assert [type(t) for t in out] == [torch.Tensor] * 5
    for a, t in zip(arrays, out, strict=True):
        assert t.dtype == torch.float32 and tuple(t.shape) == a.shape
        assert t.data_ptr() == a.ctypes.data  # no copy
        t[0, 0] = -1.0
        assert a[0, 0] == -1.0


@needs_torch
def test_structures_are_walked() -> None:
    torch = _torch()
    Pair = namedtuple("Pair", "x y")
    item = {
        "image": np.ones((2, 2), np.uint8),
        "label": np.int64(3),
        "name": "cat",
        "texts": np.array(["a", "b"]),
        "pair": Pair(np.zeros(2), [np.ones(1), 7]),
    }
    [got] = snake.from_iterable([item]).to_torch().to_list()
    assert isinstance(got["image"], torch.Tensor) and got["image"].dtype == torch.uint8
    assert isinstance(got["label"], torch.Tensor) and int(got["label"]) == 3
    assert got["name"] == "cat"
    assert isinstance(got["texts"], np.ndarray)  # strings stay NumPy, as in torch's default_convert
    assert isinstance(got["pair"], Pair) and isinstance(got["pair"].x, torch.Tensor)
    assert isinstance(got["pair"].y[0], torch.Tensor) and got["pair"].y[1] == 7


@needs_torch
@needs_torch
@pytest.mark.filterwarnings("error")
def test_read_only_arrays_are_copied_without_a_warning() -> None:
    _torch()
    a = np.arange(4.0)
    a.setflags(write=False)
    [t] = snake.from_iterable([a]).to_torch().to_list()
    assert t.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert t.data_ptr() != a.ctypes.data


@needs_torch
def test_pooled_batch_buffers_are_not_reused_under_live_tensors() -> None:
    """Every tensor kept until the end still holds its own batch's values."""
    _torch()
    rows = [np.full((64, 64), i, dtype=np.float32) for i in range(200)]
    batches = snake.from_iterable(rows).batch(8).to_torch().to_list()
    assert len(batches) == 25
    for b, t in enumerate(batches):
        expect = np.repeat(np.arange(b * 8, b * 8 + 8, dtype=np.float32), 64 * 64).reshape(8, 64, 64)
        np.testing.assert_array_equal(t.numpy(), expect)


@needs_torch
async def test_process_workers_to_batches_to_tensors() -> None:
    """The direct shared-memory slab path (par_map -> batch) and then to_torch."""
    _torch()
    stream = snake.from_iterable(range(96)).par_map(image, workers=2).batch(16).to_torch()
    kept = await stream.collect()
    assert len(kept) == 6
    got = np.concatenate([t.numpy() for t in kept])
    np.testing.assert_array_equal(got, np.stack([image(i) for i in range(96)]))


@needs_torch
def test_device_cpu_runs_in_a_thread_stage() -> None:
    torch = _torch()
    stream = snake.from_iterable(range(10)).map(np.arange).to_torch(device="cpu")
    assert repr(stream).endswith(".to_torch(device='cpu')")
    out = stream.to_list()
    assert [t.tolist() for t in out] == [list(range(i)) for i in range(10)]
    assert all(t.device == torch.device("cpu") for t in out)


@needs_torch
def test_to_cuda_with_pinned_memory() -> None:
    torch = _torch()
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (the GPU-feeding path: pinned memory, non_blocking copy)")
    rows = [np.full((3, 32, 32), i, dtype=np.uint8) for i in range(64)]
    out = snake.from_iterable(rows).batch(16).to_torch(device="cuda", pin_memory=True).to_list()
    assert all(t.is_cuda for t in out)
    got = torch.cat(out).cpu().numpy()
    np.testing.assert_array_equal(got, np.stack(rows))


@needs_torch
def test_arguments_are_checked_where_called() -> None:
    torch = _torch()
    s = snake.from_iterable([np.zeros(1)])
    with pytest.raises(TypeError, match=r"device=5 must be"):
        s.to_torch(device=5)
    with pytest.raises(ValueError, match=r"device='nonsense' is not a torch device"):
        s.to_torch(device="nonsense")
    with pytest.raises(TypeError, match=r"pin_memory='yes'"):
        s.to_torch(pin_memory="yes")  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device='cuda' needs CUDA"):
            s.to_torch(device="cuda")
        with pytest.raises(ValueError, match=r"pin_memory=True needs CUDA"):
            s.to_torch(pin_memory=True)
    assert repr(s.to_torch()).endswith(".to_torch()")


@needs_torch
def test_to_torch_resumes_exactly_and_its_state_survives_torch_save(tmp_path: Any) -> None:
    torch = _torch()
    stream = snake.from_iterable(range(40)).map(image).batch(4).to_torch()
    full = [b.clone() for b in stream.to_list()]
    with stream.open_sync() as items:
        got = [next(items).clone() for _ in range(3)]
        torch.save({"loader": items.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt")["loader"]
    with stream.open_sync(state_dict=state) as items:
        got += [b.clone() for b in items]
    assert len(got) == len(full)
    assert all(torch.equal(a, b) for a, b in zip(got, full, strict=True))
