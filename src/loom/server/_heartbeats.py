"""The heartbeat sweep: attempts that fell silent are lost.

Runtimes beat for their attempts every ``LOOM_HEARTBEAT_INTERVAL``; an attempt unheard for
``LOOM_HEARTBEAT_TIMEOUT`` is declared lost (its process hung, or was cut off from the server),
and retried from the server's allowance. Attempts that wait in the executor for a warm
worker's slot are beaten for by the server itself: they are not silent, just not started.
"""

from __future__ import annotations

import asyncio
import logging
import time

from anyio import to_thread

from .. import wire
from ..executors import Executor, job_id
from ._runs import RunService

log = logging.getLogger("loom.server")


class HeartbeatSweep:
    """A loop of the control plane's that looks a few times per ``timeout_s``."""

    def __init__(self, runs: RunService, executor: Executor, timeout_s: float) -> None:
        self._runs = runs
        self._executor = executor
        self._timeout_s = timeout_s

    async def forever(self) -> None:
        """Declare lost the attempts that stopped sending heartbeats (see
        :meth:`RunService.lose_silent`), looking a few times per timeout."""
        timeout = self._timeout_s
        period = min(10.0, timeout / 3)
        last = awake_since = time.monotonic()
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            if now - last > period + timeout / 2:
                # the server itself was not running (suspended, starved): the runtimes'
                # beats went unheard, so give them a whole timeout to be heard again
                awake_since = now
            last = now
            if now - awake_since < timeout:
                continue
            try:
                await self._vouch_for_queued()
            except Exception:  # the sweep must go on: at worst a queued job counts as silent
                log.exception("cannot beat for the attempts queued in the executor")
            try:
                lost = await to_thread.run_sync(self._runs.lose_silent, timeout)
            except Exception:  # the next look may well work
                log.exception("cannot check the attempts' heartbeats")
                continue
            if lost:
                log.warning("declared %d silent attempt(s) lost", lost)

    async def _vouch_for_queued(self) -> None:
        """Beat for the attempts that wait in the executor for a worker (a pool's jobs beyond
        its workers' slots): they are not silent, just not started, and beating for them
        now keeps a long wait from counting against them once they start."""
        running = await to_thread.run_sync(self._runs.running_attempts)
        queued = [
            wire.AttemptRef(run=a.run, action=a.action, attempt=a.attempt)
            for a in running
            if self._executor.status(job_id(a.run, a.action, a.attempt)).state == "queued"
        ]
        if queued:
            await to_thread.run_sync(self._runs.attempts_heartbeat, queued)
