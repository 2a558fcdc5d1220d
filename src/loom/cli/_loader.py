"""Loading a user's task file for ``loom run``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from .._task import TaskTemplate
from ..errors import TaskLoadError


def _module_name(path: Path) -> tuple[str, Path]:
    """The dotted module name of ``path`` and the directory to import it from.

    Walking up through packages (directories with ``__init__.py``) keeps relative imports
    inside the user's package working.
    """
    parts = [path.stem]
    root = path.parent
    while (root / "__init__.py").exists():
        parts.insert(0, root.name)
        root = root.parent
    return ".".join(parts), root


def load_module(file: str) -> ModuleType:
    """Import a task file by path, turning every failure into a clear :class:`TaskLoadError`."""
    path = Path(file).expanduser()
    if not path.exists():
        raise TaskLoadError(f"file not found: {file}")
    if path.is_dir() or path.suffix != ".py":
        raise TaskLoadError(f"{file} is not a Python file (expected a path ending in .py)")
    path = path.resolve()
    name, root = _module_name(path)
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TaskLoadError(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(name, None)
        where = f"{e.filename}:{e.lineno}" if e.lineno else str(e.filename)
        line = f"\n    {e.text.rstrip()}" if e.text else ""
        raise TaskLoadError(f"syntax error in {where}: {e.msg}{line}") from e
    except Exception as e:
        sys.modules.pop(name, None)
        raise TaskLoadError(f"importing {file} failed: {type(e).__name__}: {e}") from e
    return module


def tasks_in(module: ModuleType) -> dict[str, TaskTemplate[Any, Any]]:
    """The tasks a module defines or imports, by the name they are bound to."""
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, TaskTemplate) and not name.startswith("_")
    }
