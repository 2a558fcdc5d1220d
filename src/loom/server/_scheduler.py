"""The scheduler: starts waiting actions as executor slots free up, in creation order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from anyio import to_thread

from ._models import utcnow
from ._runs import Launch, RunService

log = logging.getLogger("loom.server")

#: Look again at least this often, whatever happens (cheap insurance against a lost wake-up).
_MAX_SLEEP_S = 5.0


class Scheduler:
    """One loop on the server's event loop; :meth:`wake` makes it look at the queue now."""

    def __init__(
        self, runs: RunService, launch: Callable[[Launch], Awaitable[None]], slots: int
    ) -> None:
        self._runs = runs
        self._launch = launch
        self._slots = slots
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="loom scheduler")

    def wake(self) -> None:
        """Call on the event loop."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                launches, next_due = await to_thread.run_sync(
                    self._runs.claim_launchable, self._slots
                )
                for launch in launches:
                    await self._launch(launch)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep scheduling; the next pass may well succeed
                log.exception("scheduling pass failed")
                launches, next_due = [], None
                await asyncio.sleep(1.0)
            if launches:
                continue  # there may be more to start (e.g. slots freed meanwhile)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _sleep_s(next_due))


def _sleep_s(next_due: datetime | None) -> float:
    if next_due is None:
        return _MAX_SLEEP_S
    return max(0.0, min(_MAX_SLEEP_S, (next_due - utcnow()).total_seconds()))
