"""The runtime's heartbeat thread."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from loom import wire
from loom.runtime import _heartbeat


class _Client:
    made: list[_Client] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.beats: list[list[wire.AttemptRef]] = []
        self.beaten = threading.Event()
        _Client.made.append(self)

    async def heartbeats(self, refs: list[wire.AttemptRef]) -> None:
        self.beats.append(refs)
        self.beaten.set()

    async def aclose(self) -> None:
        pass


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> list[_Client]:
    _Client.made = []
    monkeypatch.setattr(_heartbeat, "Client", _Client)
    return _Client.made


def test_an_attempt_over_before_its_first_beat_makes_no_client(clients: list[_Client]) -> None:
    # most attempts are short: a loop and a client each would cost them more than their work
    ref = wire.AttemptRef(run="r", action="a", attempt=1)
    beats = _heartbeat.Heartbeats("http://127.0.0.1:9", None, 30.0, lambda: [ref])
    beats.start()
    beats.stop()
    beats._thread.join(5)
    assert not beats._thread.is_alive() and clients == []


def test_a_longer_attempt_beats_every_interval(clients: list[_Client]) -> None:
    ref = wire.AttemptRef(run="r", action="a", attempt=1)
    beats = _heartbeat.Heartbeats("http://127.0.0.1:9", None, 0.05, lambda: [ref])
    beats.start()
    try:
        for _ in range(100):
            if clients and len(clients[0].beats) >= 3:
                break
            threading.Event().wait(0.05)
    finally:
        beats.stop()
        beats._thread.join(5)
    (client,) = clients
    assert len(client.beats) >= 3 and client.beats[0] == [ref]
