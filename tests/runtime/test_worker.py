"""The warm worker's side of its socket."""

from __future__ import annotations

import asyncio
from typing import Any

from loom.runtime._worker import _serve


class _Worker:
    def __init__(self) -> None:
        self.started: list[dict[str, Any]] = []

    def start(self, message: dict[str, Any]) -> None:
        self.started.append(message)

    def cancel(self, job: str) -> None:  # pragma: no cover - not sent here
        raise AssertionError(job)


def test_a_reset_connection_is_the_executor_gone_not_a_crash() -> None:
    """A server that dies with the worker's reports unread resets the Unix socket: the worker
    must take it as the end of the connection (and go on to finish its attempts), not die of
    the error with its attempts half run."""

    async def main() -> list[dict[str, Any]]:
        reader = asyncio.StreamReader()
        reader.feed_data(b'{"job": "r/a/1", "run": "r", "action": "a", "attempt": 1}\n')
        worker = _Worker()
        serving = asyncio.create_task(_serve(reader, worker))  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        reader.set_exception(ConnectionResetError(104, "Connection reset by peer"))
        await asyncio.wait_for(serving, 5)  # returns: no ConnectionResetError
        return worker.started

    started = asyncio.run(main())
    assert [m["job"] for m in started] == ["r/a/1"]
