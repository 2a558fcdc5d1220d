"""Listing runs and actions is lazy, as in Flyte 2: nothing is asked until it is iterated."""

from __future__ import annotations

import pytest

import loom
import loom.remote as remote
from loom.errors import ApiError


def test_listall_asks_the_server_only_when_iterated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOM_HOME", "/nonexistent-loom-home")
    loom.init(endpoint="http://127.0.0.1:9", api_key="loom_x")  # nothing listens there
    try:
        listing = remote.Run.listall(limit=2)  # printed by Flyte programs without a server
        assert "generator" in repr(listing)
        with pytest.raises(ApiError, match="cannot reach"):
            next(iter(listing))
    finally:
        loom.init()
