"""Start the launcher: ``python boot.py SYS_PATH_JSON CONTROL_FD``.

Run as a script, before anything of snake is imported. The launcher needs only the
worker side of snake (``LIGHT``: no trio, no engine), so ``snake`` starts as a bare
package object; its real ``__init__`` runs the first time anything else of snake is
imported, or an attribute of the package is looked up (by the user's main module,
say). The launcher then preloads and forks as ``launcher.main`` says.
"""

import json
import os
import sys
import types

LIGHT = {
    "snake._buffers",
    "snake._buffers.reuse",
    "snake._engine",
    "snake._engine.errors",
    "snake._workers.shm",
    "snake._workers",
    "snake._workers.child",
    "snake._workers.launcher",
    "snake._workers.remote",
    "snake._workers.wire",
}
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stand_in() -> types.ModuleType:
    package = types.ModuleType("snake")
    package.__path__ = [PACKAGE_DIR]

    def initialise() -> None:
        if "__file__" not in vars(package):
            package.__file__ = os.path.join(PACKAGE_DIR, "__init__.py")
            with open(package.__file__, encoding="utf-8") as f:
                code = compile(f.read(), package.__file__, "exec")
            exec(code, vars(package))  # noqa: S102  (the package's own __init__, run late)

    def __getattr__(name: str) -> object:
        sub = os.path.join(PACKAGE_DIR, name)
        if "__file__" in vars(package) or os.path.exists(sub + ".py") or os.path.isdir(sub):
            raise AttributeError(name)  # a submodule: the import system loads it
        initialise()
        return getattr(package, name)

    class _Finder:
        @staticmethod
        def find_spec(name: str, path: object = None, target: object = None) -> None:
            if name.startswith("snake.") and name not in LIGHT:
                initialise()  # the engine's modules import each other in __init__'s order

    vars(package)["__getattr__"] = __getattr__
    sys.meta_path.insert(0, _Finder)
    return package


if __name__ == "__main__":
    sys.path[:] = json.loads(sys.argv[1])
    sys.modules["snake"] = _stand_in()
    from snake._workers.launcher import main

    main()
