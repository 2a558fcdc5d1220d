"""Recovery at start-up: what a previous server process left running is adopted or lost.

A stop (graceful or kill -9) leaves attempts' processes and warm workers running; the database
still says their attempts run. The next server process, before it schedules anything, asks
its executor to adopt each (by the handle recorded at launch, by its work dir, or by a warm
worker's marks): an adopted attempt is watched as if started here, its reports taken as they
come. One whose process is gone is lost, and retried from the server's allowance
(``LOOM_SYSTEM_RETRIES``). What the crash left in the work dir is removed.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from anyio import to_thread

from .. import wire
from ..executors import Executor, Job, job_id
from . import _state as state
from ._models import utcnow
from ._runs import RunningAttempt, RunService, log_path

log = logging.getLogger("loom.server")


class Recovery:
    """One recovery, run once by the control plane as it starts (``keep_log``: store an
    attempt's log, returning its key)."""

    def __init__(
        self,
        runs: RunService,
        executor: Executor,
        work_dir: Path,
        logs_dir: Path,
        endpoint: str,
        keep_log: Callable[[str, str, int], str | None],
    ) -> None:
        self._runs = runs
        self._executor = executor
        self._work_dir = work_dir
        self._logs_dir = logs_dir
        self._endpoint = endpoint
        self._keep_log = keep_log

    async def recover(self) -> None:
        """Attempts the database says are running were started by a previous server
        process. Those whose processes still run are adopted: watched as if started here,
        their reports taken as they come. The others are lost (and retried from the
        server's allowance). Queued actions need nothing: the scheduler picks them up."""
        running: list[RunningAttempt] = await to_thread.run_sync(self._runs.running_attempts)
        adopted: list[RunningAttempt] = []
        lost: list[tuple[RunningAttempt, str | None]] = []
        for attempt in running:
            try:
                # (no handle: the server died before it recorded it; the executor looks)
                if await self._executor.adopt(self._adopted_job(attempt), attempt.handle or ""):
                    adopted.append(attempt)
                    continue
                key = await to_thread.run_sync(
                    self._keep_log, attempt.run, attempt.action, attempt.attempt
                )
                lost.append((attempt, key))
            except Exception:  # one attempt must not keep the server from starting
                log.exception("cannot recover %s", _job_of(attempt))
        try:
            await to_thread.run_sync(self._runs.lose_attempts, lost)  # one transaction
        except Exception:
            log.exception("cannot record the lost attempts at once; one at a time")
            for one in lost:
                try:
                    await to_thread.run_sync(self._runs.lose_attempts, [one])
                except Exception:  # it stays RUNNING: the heartbeat sweep loses it later
                    log.exception("cannot record %s as lost", _job_of(one[0]))
        await to_thread.run_sync(self._remove_stale_workdirs, adopted)
        if adopted:
            await to_thread.run_sync(self._runs.heard_from, adopted)
            log.warning("adopted %d attempt(s) still running from before a restart", len(adopted))
        if len(adopted) < len(running):
            log.warning("recovered %d attempt(s) lost in a restart", len(running) - len(adopted))

    def _remove_stale_workdirs(self, adopted: list[RunningAttempt]) -> None:
        """Remove what a crash left in the work dir: every attempt's directory but those of
        the adopted attempts (one whose process ended while no server watched, say)."""
        keep = {self._work_dir / a.run / a.action / str(a.attempt) for a in adopted}
        for run in _subdirs(self._work_dir):
            for action in _subdirs(run):
                for attempt in _subdirs(action):
                    if attempt not in keep:
                        shutil.rmtree(attempt, ignore_errors=True)
                with contextlib.suppress(OSError):
                    action.rmdir()  # (unless an adopted attempt's is in it)
            with contextlib.suppress(OSError):
                run.rmdir()

    def _adopted_job(self, attempt: RunningAttempt) -> Job:
        """What the executor needs to watch an attempt it did not start: where its log and
        work dir are, what it may hold, and what is left of its timeout."""
        task = attempt.task
        timeout = None if task is None else state.job_timeout_s(task)
        if timeout is not None and attempt.started_at is not None:
            elapsed = (utcnow() - attempt.started_at).total_seconds()
            timeout = max(0.0, timeout - elapsed)
        return Job(
            run=attempt.run,
            action=attempt.action,
            attempt=attempt.attempt,
            endpoint=self._endpoint,
            env={},
            log_path=log_path(self._logs_dir, attempt.run, attempt.action, attempt.attempt),
            workdir=self._work_dir / attempt.run / attempt.action / str(attempt.attempt),
            timeout_s=timeout,
            # a warm worker's memory is its attempts', not one attempt's to be held to
            resources=(
                task.resources if task is not None and task.reuse is None else wire.ResourceSpec()
            ),
        )


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir()]
    except OSError:
        return []


def _job_of(attempt: RunningAttempt) -> str:
    return job_id(attempt.run, attempt.action, attempt.attempt)
