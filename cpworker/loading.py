"""Find the user's ``ActionApp`` from ``module:attribute`` or ``path/file.py:attribute``.

A file is imported as a module named after it, from its directory, so that job
processes (which import the app by module name) find it too.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from cpworker.app import ActionApp
from cpworker.mistakes import UsageError, one_line


def load_app(reference: str) -> ActionApp:
    """The ``ActionApp`` ``reference`` names (attribute ``app`` by default); a
    ``UsageError`` naming the fix when there is none."""
    target, _, attribute = reference.partition(":")
    attribute = attribute or "app"
    module = _import(target)
    app = getattr(module, attribute, None)
    if isinstance(app, ActionApp):
        return app
    apps = [name for name, value in vars(module).items() if isinstance(value, ActionApp)]
    found = f"ActionApps in it: {', '.join(apps)}" if apps else "it defines no ActionApp"
    what = "no attribute" if app is None else f"a {type(app).__name__}, not an ActionApp, as"
    raise UsageError(
        f"{reference}: {module.__name__} has {what} {attribute!r} ({found}); give MODULE:APP"
    )


def _import(target: str) -> ModuleType:
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"{target}: no such file; give MODULE:APP or path/file.py:APP")
        if not path.stem.isidentifier():
            raise UsageError(f"{target}: rename the file to a valid module name to load it")
        directory = str(path.resolve().parent)
        name = path.stem
    else:
        directory, name = str(Path.cwd()), target
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        if missing and (name == missing or name.startswith(f"{missing}.")):
            raise UsageError(
                f"no module named {missing!r} in {directory}: check the spelling, and run "
                "from the directory that holds it (or add that directory to PYTHONPATH)"
            ) from None
        raise UsageError(f"importing {name} failed: {one_line(exc)}") from None
