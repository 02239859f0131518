"""snake's modules are laid out by layer, and imports only go down.

Layers, lowest first (a module may import from its own layer and the ones below):

- ``_ext``: the Rust extension (imports nothing of snake);
- ``_engine``: specs, the runner, channels, statistics, errors, epochs;
- ``_buffers``: reused batch buffers and collation;
- ``_workers``: worker processes and threads, shared memory;
- ``_ops``: one module per family of stages;
- ``_plan``: the rewrites applied when a stream is opened;
- ``_embed``: the sync bridge and the asyncio runtime;
- ``_stream``: the ``Stream`` builder;
- the public modules (``__init__``, ``aio``, ``kernels``, ``testing``) and ``_cli``.

Imports under ``if TYPE_CHECKING:`` are for annotations only and are not counted
for layers; imports inside functions are. There is no import loop between modules at
all, not even through annotations.
"""

from __future__ import annotations

import ast
from pathlib import Path

import snake

SRC = Path(snake.__file__).parent
LAYERS = ["_ext", "_engine", "_buffers", "_workers", "_ops", "_plan", "_embed", "_stream", "top"]
TOP = {"__init__", "__main__", "aio", "kernels", "testing", "_cli"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    first = module.split(".")[1] if module.count(".") else "__init__"
    if first in TOP:
        return LAYERS.index("top")
    return LAYERS.index(first)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def imports(path: Path, *, annotations: bool = False) -> set[str]:
    """The snake modules ``path`` imports at run time (top level or in functions); with
    ``annotations``, also those it imports under ``if TYPE_CHECKING:``."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set() if annotations else _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("snake"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if _exists(sub) else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("snake"))
    found.discard(module)
    return {m for m in found if m != "snake"} | ({"snake"} if "snake" in found else set())


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (SRC / rel).with_suffix(".py").exists() or (SRC / rel / "__init__.py").exists()


def graph(*, annotations: bool = False) -> dict[str, set[str]]:
    return {module_name(p): imports(p, annotations=annotations) for p in sorted(SRC.rglob("*.py"))}


def test_every_module_belongs_to_a_layer() -> None:
    for module in graph():
        layer(module)  # raises ValueError for a module outside the layers


def test_no_import_goes_up_a_layer() -> None:
    upward = [
        f"{module} (layer {LAYERS[layer(module)]}) imports {dep} (layer {LAYERS[layer(dep)]})"
        for module, deps in graph().items()
        for dep in sorted(deps)
        if dep != "snake" and layer(dep) > layer(module)
    ]
    assert upward == []


def test_there_is_no_import_loop() -> None:
    g = graph(annotations=True)
    # snake/__init__ is imported by the import system before any submodule: not an edge.
    edges = {m: {d for d in deps if d in g and d != "snake"} for m, deps in g.items()}
    loops = []
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                loops.append(" -> ".join([*path[path.index(d):], d]))
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert loops == []


def test_the_checker_sees_imports_and_ignores_type_checking_ones(tmp_path: Path) -> None:
    # the checks above must be able to fail: this module's own imports are found
    assert "snake._engine.run" in imports(SRC / "_embed" / "sync.py")
    assert "snake._stream" not in imports(SRC / "_engine" / "run.py")
    assert "snake._engine.context" in imports(SRC / "_engine" / "spec.py", annotations=True)
    assert "snake._engine.context" not in imports(SRC / "_engine" / "spec.py")
    assert "snake._ext" in imports(SRC / "_buffers" / "collate.py")


def test_the_worker_side_imports_only_light_modules() -> None:
    # The launcher imports these without snake's engine (no trio): see _workers/boot.py.
    from snake._workers.boot import LIGHT

    g = graph()
    todo = ["snake._workers.launcher", "snake._workers.remote"]
    seen: set[str] = set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(d for d in g[m] if d != "snake")
    assert seen <= LIGHT, f"imported by the worker side but not light: {sorted(seen - LIGHT)}"

