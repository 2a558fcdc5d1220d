"""Shared fixtures: every test gets its own loom home, so caches and config never leak."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import loom._run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def loom_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty ``LOOM_HOME`` and no inherited ``LOOM_*`` settings."""
    home = tmp_path / "loom-home"
    for key in list(os.environ):
        if key.startswith("LOOM_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("LOOM_HOME", str(home))
    monkeypatch.setattr(loom._run, "_settings", None)
    yield home


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``loom`` executable in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "loom.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd or REPO,
        timeout=120,
    )


def write_module(path: Path, source: str) -> Path:
    """Write a task file for a test and return its path."""
    import textwrap

    path.write_text(textwrap.dedent(source))
    return path
