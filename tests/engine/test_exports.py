"""The public API is born in one place (snake/__init__.py) and typed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

import snake
import snake.kernels

ROOT = str(REPO)

#: Submodules imported on demand (``import snake.aio``): not in ``__all__``, and not
#: imported by ``import snake``; once imported they are attributes of the package.
ON_DEMAND_SUBMODULES = {"aio", "testing"}


def test_all_is_sorted_and_complete() -> None:
    assert snake.__all__ == sorted(snake.__all__)
    public = {n for n in dir(snake) if not n.startswith("_")} - ON_DEMAND_SUBMODULES
    assert public == set(snake.__all__)
    for name in snake.__all__:
        assert getattr(snake, name) is not None


def test_public_objects_are_documented() -> None:
    for name in snake.__all__:
        obj = getattr(snake, name)
        assert obj.__doc__, name
    for name in dir(snake.Stream):
        if not name.startswith("_"):
            assert getattr(snake.Stream, name).__doc__, f"Stream.{name}"


def test_importing_snake_does_not_import_optional_dependencies() -> None:
    code = "import sys, snake; print(sorted(m for m in ('torch', 'pyarrow', 'ray', 'trio_parallel') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", sorted(ON_DEMAND_SUBMODULES))
def test_on_demand_submodules_are_not_imported_by_import_snake(name: str) -> None:
    code = f"import sys, snake; print('snake.{name}' in sys.modules, hasattr(snake, '{name}'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"
    code = f"import snake.{name}; print(sorted(snake.{name}.__all__) == snake.{name}.__all__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def test_package_is_typed() -> None:
    assert os.path.exists(os.path.join(os.path.dirname(snake.__file__), "py.typed"))


def test_extension_stub_matches_the_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "snake._ext"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_source_is_strict_mypy_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", os.path.join(ROOT, "src", "snake")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
