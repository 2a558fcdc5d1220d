"""Heartbeats, sent from a thread of their own.

The server declares an attempt lost when it hears nothing from it for its heartbeat timeout
(``LOOM_HEARTBEAT_TIMEOUT``, see ``loom.server``). The beats come from a thread with its own
event loop and client, not from the attempt's loop: a task that blocks that loop
(``time.sleep`` in an ``async def``, a long computation) is busy, not hung. Only a process
that is stopped, wedged with the GIL held, or cut off from the server falls silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from .. import wire
from ..errors import ApiError
from ..remote import Client


class Heartbeats:
    """Beat for ``attempts()`` (called from the heartbeat thread: it must return a fresh
    list) every ``interval_s`` seconds, from :meth:`start` to :meth:`stop`."""

    def __init__(
        self,
        endpoint: str,
        api_key: str | None,
        interval_s: float,
        attempts: Callable[[], list[wire.AttemptRef]],
    ) -> None:
        self._endpoint = endpoint
        self._api_key = api_key
        self._interval_s = interval_s
        self._attempts = attempts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loom heartbeats", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop beating (without waiting for a request on its way: the thread is a daemon)."""
        self._stop.set()

    def _run(self) -> None:
        if self._stop.wait(self._interval_s):
            return  # over before its first beat, as most attempts are: no loop, no client
        # one loop for the thread's life: the client's connections belong to it
        with asyncio.Runner() as runner:
            # a beat that takes much longer than the interval is as good as lost: the next one goes
            client = Client(self._endpoint, self._api_key, timeout=2 * self._interval_s)
            try:
                while True:
                    refs = self._attempts()
                    if refs:
                        # the server down for a moment, or the attempt already over: beat on
                        with contextlib.suppress(ApiError):
                            runner.run(client.heartbeats(refs))
                    if self._stop.wait(self._interval_s):
                        break
            finally:
                runner.run(client.aclose())
