"""The time-bound sweep: actions past their ``Timeout.deadline`` or ``max_queued_time`` fail.

``max_runtime`` needs no sweep: the executor kills an attempt that outlives it. The other two
bounds are about the action, not one process: a deadline counts from the action's creation
across all its attempts and backoffs, and the queue limit runs while no process exists yet.
"""

from __future__ import annotations

import asyncio
import logging

from anyio import to_thread

from ._runs import RunService

log = logging.getLogger("loom.server")

#: How often the sweep looks: a bound fires at most this late. Each look is two indexed
#: queries over the actions that have a bound (see ``_models.Action``), usually none.
PERIOD_S = 0.5


class TimeBoundSweep:
    """A loop of the control plane's: fail the actions past a time bound."""

    def __init__(self, runs: RunService, period_s: float = PERIOD_S) -> None:
        self._runs = runs
        self._period_s = period_s

    async def forever(self) -> None:
        while True:
            await asyncio.sleep(self._period_s)
            try:
                expired = await to_thread.run_sync(self._runs.expire_time_bounds)
            except Exception:  # the next look may well work
                log.exception("cannot check the actions' time bounds")
                continue
            if expired:
                log.info("%d action(s) passed a time bound (deadline or max_queued_time)", expired)
