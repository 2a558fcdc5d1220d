"""The scheduler: starts waiting actions, in creation order, as the executor has room for
their requests (see ``_requests``)."""

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
    """One loop on the server's event loop; :meth:`wake` makes it look at the queue now.

    ``launch`` starts one claimed attempt and returns the executor's handle for it (``None``
    if it could not start); the handles are recorded by the next pass's transaction.
    """

    def __init__(self, runs: RunService, launch: Callable[[Launch], Awaitable[str | None]]) -> None:
        self._runs = runs
        self._launch = launch
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
        # the executor's handles of the last pass's launches: recorded (for crash recovery) by
        # the next pass's transaction if one follows at once, as in a fan-out, else on their own
        handles: list[tuple[int, str]] = []
        while True:
            self._wake.clear()
            try:
                recorded, handles = handles, []
                launches, next_due = await to_thread.run_sync(self._runs.claim_launchable, recorded)
                for launch in launches:
                    handle = await self._launch(launch)
                    if handle is not None and launch.attempt_id:
                        handles.append((launch.attempt_id, handle))
                if handles and not self._wake.is_set():
                    recorded, handles = handles, []
                    await to_thread.run_sync(self._runs.record_handles, recorded)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep scheduling; the next pass may well succeed
                log.exception("scheduling pass failed")
                next_due = None
                await asyncio.sleep(1.0)
            # what frees a slot or queues an action wakes us (also while a pass runs): a pass
            # that used every slot, or found nothing more, has nothing to follow up
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _sleep_s(next_due))


def _sleep_s(next_due: datetime | None) -> float:
    if next_due is None:
        return _MAX_SLEEP_S
    return max(0.0, min(_MAX_SLEEP_S, (next_due - utcnow()).total_seconds()))
