"""Sphinx configuration: the Markdown pages of docs/ (MyST) and a reference generated
from the docstrings (autodoc). Build it with ``tox -e docs``, or
``sphinx-build -W --keep-going -b html docs <outdir>``."""

from __future__ import annotations

import inspect
import sys
from typing import Any

from sphinx.pycode import ModuleAnalyzer

import snake
import snake.aio
import snake.testing

project = "snake"
author = "the snake authors"
copyright = "the snake authors"
version = release = snake.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# The pages link to each other's headings: [Chunks](concurrency.md#3-items-move-in-chunks).
myst_heading_anchors = 4

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

html_theme = "alabaster"
html_title = f"snake {release}"

#: The public modules whose names are defined in private ones.
PUBLIC_MODULES = (snake, snake.aio, snake.testing)


def _publish_attribute_docs() -> None:
    """Give the analyzer of each public module the ``#:`` comments of its classes' fields.

    A public class says its public module in ``__module__`` (``snake.StageStatistics``),
    so autodoc looks for the ``#:`` comments of its fields (attrs fields, the field
    docstrings) in that module's source, where they are not: they are in
    the private module that defines the class. This copies them across, once.
    """
    for public in PUBLIC_MODULES:
        classes = {
            obj.__qualname__: obj
            for name in public.__all__
            if inspect.isclass(obj := getattr(public, name)) and obj.__module__ == public.__name__
        }
        target = ModuleAnalyzer.for_module(public.__name__)
        target.analyze()
        for modname, module in sorted(sys.modules.items()):
            if not modname.startswith("snake.") or module is None:
                continue
            defined = {q for q, cls in classes.items() if vars(module).get(cls.__name__) is cls}
            if not defined:
                continue
            source = ModuleAnalyzer.for_module(modname)
            source.analyze()
            for (ns, attr), lines in source.attr_docs.items():
                if ns in defined:
                    target.attr_docs[ns, attr] = lines
            for name, order in source.tagorder.items():
                if name.partition(".")[0] in defined:
                    target.tagorder[name] = order


#: The only public class that users construct; the others come from snake (a stream's
#: handle, a statistics record, ...), and their constructors' arguments are private.
CONSTRUCTED = {"snake.WorkerPool"}


def _class_signature(
    app: Any, what: str, name: str, obj: Any, options: Any, signature: str | None, ret: str | None
) -> tuple[str, str | None] | None:
    if what == "class" and name not in CONSTRUCTED:
        return "", ret
    return None


def setup(app: Any) -> None:
    app.connect("builder-inited", lambda _app: _publish_attribute_docs())
    app.connect("autodoc-process-signature", _class_signature)
