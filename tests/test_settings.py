"""The SDK's settings object: the environment, read once, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from loom._settings import Settings
from loom.errors import ConfigError


def test_defaults(loom_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOM_IDE_DIR", raising=False)  # (loom_home keeps the shared one)
    s = Settings.load()
    assert s.home == loom_home and s.ide_dir == loom_home / "ide"
    assert s.local_threads == 64 and s.heartbeat_interval_s == 10.0


def test_the_environment_sets_the_heartbeat_interval(
    loom_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOM_HEARTBEAT_INTERVAL", "0.5")
    assert Settings.load().heartbeat_interval_s == 0.5


@pytest.mark.parametrize(
    "name,value,needle",
    [
        ("LOOM_HEARTBEAT_INTERVAL", "often", "must be a number of seconds, got 'often'"),
        ("LOOM_HEARTBEAT_INTERVAL", "0", "more than 0 seconds"),
        ("LOOM_LOCAL_THREADS", "lots", "whole number"),
        ("LOOM_LOCAL_THREADS", "0", "at least 1"),
    ],
)
def test_bad_values_are_clear_errors(
    loom_home: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=needle):
        Settings.load()
