"""The control plane imports nothing from loom but the wire schema, the version and (for the
server) the executors (DESIGN §4, rule 1). import-linter checks the SDK; this checks us."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "loom"
ALLOWED = {
    "server": {"loom.wire", "loom._version", "loom.executors", "loom.server"},
    "executors": {"loom.wire", "loom.executors"},
}


def _loom_imports(path: Path, package: str) -> set[str]:
    found = set()
    module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "loom"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                # a package's __init__ is its own module; anything else is in its package
                base = base[: len(base) - node.level + (path.name == "__init__.py")]
                name = ".".join(base + ([node.module] if node.module else []))
                targets = [name] if node.module else [f"{name}.{a.name}" for a in node.names]
            elif node.module and node.module.split(".")[0] == "loom":
                targets = [node.module]
            else:
                continue
            found |= set(targets)
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_control_plane_imports(package: str) -> None:
    allowed = ALLOWED[package]
    bad = {}
    for path in (SRC / package).rglob("*.py"):
        imports = {
            name
            for name in _loom_imports(path, package)
            if not any(name == a or name.startswith(a + ".") for a in allowed)
        }
        if imports:
            bad[str(path.relative_to(SRC))] = sorted(imports)
    assert bad == {}
