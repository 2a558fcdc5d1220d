"""Fixtures for end-to-end tests that need more than the shared ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IdeInstalls, ServerProcess, start_server


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
