"""Fixtures for end-to-end tests that need more than the shared ones."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IdeInstalls, ServerProcess, start_server

# Debian's build: the tests never download a browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def ide_server(
    tmp_path: Path, loom_home: Path, ide_installs: IdeInstalls
) -> Iterator[ServerProcess]:
    """A real server whose actions find the shared IDE installs."""
    started = start_server(
        tmp_path / "server-data",
        home=loom_home,
        env={"LOOM_IDE_DIR": str(ide_installs.ide_dir)},
    )
    yield started
    started.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, driven by Playwright (a Playwright ``Browser``)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(
            "Debian's chromium is needed: `make ide` installs it (apt-get install chromium)"
        )
    with sync_playwright() as p:
        # no sandbox: Chromium will not start with it as root, which the tests may run as
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()
