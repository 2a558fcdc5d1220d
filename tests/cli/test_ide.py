"""``loom ide install`` through the real executable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loom.interactive._install import CODE_SERVER_VERSION, JUPYTERLAB_VERSION
from tests.conftest import IdeInstalls, run_cli

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)  # the first use of `ide_installs` may build code-server
def test_install_reuses_the_cache(ide_installs: IdeInstalls) -> None:
    env = {"LOOM_IDE_DIR": str(ide_installs.ide_dir)}
    result = run_cli("ide", "install", "--output", "json", env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["ide"], r["version"], r["fresh"]) for r in rows] == [
        ("code-server", CODE_SERVER_VERSION, False),
        ("jupyterlab", JUPYTERLAB_VERSION, False),
    ]
    assert rows[0]["root"] == str(ide_installs.code_server.root)
    assert rows[0]["command"] == [str(ide_installs.code_server.code_server)]
    assert rows[1]["root"] == str(ide_installs.jupyter.root)
    assert rows[1]["command"] == list(ide_installs.jupyter.jupyter_lab_argv)
    assert all(r["seconds"] < 5 for r in rows)

    table = run_cli("ide", "install", "jupyter", "vscode", "jupyter", env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.strip().splitlines()
    assert len(lines) == 2  # in the order given, each once
    assert lines[0].startswith(f"jupyterlab {JUPYTERLAB_VERSION} already installed at ")
    assert lines[1].startswith(f"code-server {CODE_SERVER_VERSION} already installed at ")
    assert str(ide_installs.code_server.root) in lines[1] and lines[1].endswith(" s")


def test_unknown_ide_is_refused() -> None:
    result = run_cli("ide", "install", "emacs")
    assert result.returncode == 2
    assert "Invalid value" in result.stderr and "vscode" in result.stderr


def test_help_lists_the_ides() -> None:
    result = run_cli("ide", "install", "--help")
    assert result.returncode == 0
    assert "vscode" in result.stdout and "jupyter" in result.stdout and "--force" in result.stdout
    assert "ide" in run_cli("--help").stdout


def test_unwritable_ide_dir_is_a_clean_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli("ide", "install", "jupyter", env={"LOOM_IDE_DIR": str(blocker / "ide")})
    assert result.returncode == 1
    assert "installing jupyter failed: cannot create the IDE directory" in result.stderr
    assert "set LOOM_IDE_DIR to a writable directory" in result.stderr
    assert "Traceback" not in result.stderr
