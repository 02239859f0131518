"""The documentation builds, and the reference covers the whole public API.

The site (docs/*.md through MyST, and docs/reference.md's autodoc directives) is built
once with Sphinx, warnings as errors, as ``tox -e docs`` builds it. Then every public
name must have a docstring (for a field: a ``#:`` comment, which autodoc reads) and an
entry in the reference, found through the ``objects.inv`` inventory the build writes.
"""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import attrs
import pytest
from conftest import REPO
from sphinx.pycode import ModuleAnalyzer

import snake
import snake.aio
import snake.kernels
import snake.testing

#: The public modules, each with its ``__all__``.
MODULES = (snake, snake.aio, snake.testing, snake.kernels)

#: Public by name, but not for users: the worker-source interface that ``par_map``
#: stages call on a pool (``get``, ``give``, ``claim`` and ``mode``, as on the
#: process-wide cache). Their docstrings say so; the reference leaves them out.
INTERNAL = {
    "snake.WorkerPool.get",
    "snake.WorkerPool.give",
    "snake.WorkerPool.claim",
    "snake.WorkerPool.mode",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"sphinx-build -W failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
    return out


def inventory(site: Path) -> dict[str, tuple[str, str]]:
    """``objects.inv`` as ``{name: (domain:role, page)}``, for the Python domain."""
    raw = (site / "objects.inv").read_bytes()
    header_end = 0
    for _ in range(4):  # "# Sphinx inventory version 2", project, version, compression note
        header_end = raw.index(b"\n", header_end) + 1
    found: dict[str, tuple[str, str]] = {}
    for line in zlib.decompress(raw[header_end:]).decode().splitlines():
        name, role, _priority, uri = line.split(" ", 4)[:4]
        if role.startswith("py:"):
            found[name] = (role, uri.partition("#")[0])
    return found


def defining_module(cls: type) -> str:
    """The private module whose source defines ``cls`` (its ``__module__`` is public)."""
    for modname, module in sorted(sys.modules.items()):
        if modname.startswith("snake") and module is not None and vars(module).get(cls.__name__) is cls:
            analyzer = ModuleAnalyzer.for_module(modname)
            analyzer.analyze()
            if cls.__qualname__ in analyzer.tags:
                return modname
    raise AssertionError(f"no module of snake defines {cls!r}")


def instance_attributes(cls: type) -> set[str]:
    """Public attributes that ``cls.__init__`` sets on ``self``."""
    init = vars(cls).get("__init__")
    if not inspect.isfunction(init) or not init.__code__.co_filename.endswith(".py"):
        return set()
    tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    return {
        target.attr
        for node in ast.walk(tree)
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
        and not target.attr.startswith("_")
    }


def members(cls: type) -> dict[str, bool]:
    """The public members of ``cls``, each with whether it has a docstring of its own.

    Methods and properties from the classes of snake in its MRO (not from object, trio's
    or the standard library's), attrs fields, and the attributes ``__init__`` sets.
    """
    out: dict[str, bool] = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("snake"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            target = value.fget if isinstance(value, property) else value
            if callable(target):
                out[name] = bool(getattr(target, "__doc__", None))
    fields = {f.name for f in attrs.fields(cls)} if attrs.has(cls) else set()
    data = {f for f in fields if not f.startswith("_")} | instance_attributes(cls)
    if data:
        analyzer = ModuleAnalyzer.for_module(defining_module(cls))
        analyzer.analyze()
        for name in data:
            out[name] = bool(analyzer.attr_docs.get((cls.__qualname__, name)))
    return out


def public_api() -> dict[str, bool]:
    """Every public name, fully qualified, with whether it has a docstring."""
    api: dict[str, bool] = {}
    for module in MODULES:
        api[module.__name__] = bool(module.__doc__)
        for name in module.__all__:
            obj: Any = getattr(module, name)
            full = f"{module.__name__}.{name}"
            api[full] = bool(obj.__doc__)
            if inspect.isclass(obj):
                for member, documented in members(obj).items():
                    api[f"{full}.{member}"] = documented
    return api


def test_the_public_api_is_found() -> None:
    # Guards the checks below against a walk that finds nothing.
    api = public_api()
    for name in (
        "snake.Stream.par_map",
        "snake.Items.receive",
        "snake.SyncItems.statistics",
        "snake.WorkerPool.workers",
        "snake.WorkerPool.mode",
        "snake.StageStatistics.busy_s",
        "snake.PipelineStatistics.plan",
        "snake.aio.AsyncioItems.receive_chunk",
        "snake.aio.RuntimeStatistics.tasks",
        "snake.testing.Pipeline.reference",
        "snake.kernels.pad_stack",
    ):
        assert name in api, name


def test_every_public_name_has_a_docstring() -> None:
    missing = sorted(name for name, documented in public_api().items() if not documented)
    assert not missing, f"public names without a docstring (or a #: comment, for a field): {missing}"


def test_every_public_name_is_in_the_reference(site: Path) -> None:
    found = inventory(site)
    expected = set(public_api()) - INTERNAL
    missing = sorted(name for name in expected if name not in found)
    assert not missing, f"public names missing from the generated reference: {missing}"
    elsewhere = sorted(name for name in expected if found[name][1] != "reference.html")
    assert not elsewhere, f"public names documented outside reference.html: {elsewhere}"
    shown = sorted(name for name in INTERNAL if name in found)
    assert not shown, f"internal names shown in the reference: {shown}"
