"""Memory limits of action processes: a watchdog over their resident memory.

An attempt that declares ``Resources(memory=...)`` runs in a process group of its own; the
guard sums the resident memory (RSS) of every process in that group a few times a second, and
once the sum passes the request, calls back, and the executor kills the group and reports the
attempt as over its limit (``OOMError``, naming the limit and the peak). One scan of ``/proc``
serves every watched group, and groups without a request cost nothing.

It is a watchdog, not a cgroup: memory allocated and touched faster than one period can pass
the limit briefly before the group is killed. Where ``/proc`` is missing, nothing is enforced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("loom.executors")

PERIOD_S = 0.2
_PROC = Path("/proc")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class _Watched:
    limit: int
    on_exceed: Callable[[int], None]  # called once, with the peak
    peak: int = 0
    tripped: bool = False


def group_rss(groups: set[int]) -> dict[int, int]:
    """The resident bytes of every process in each of the process ``groups``, by group."""
    totals = dict.fromkeys(groups, 0)
    try:
        entries = os.listdir(_PROC)
    except OSError:
        return totals
    for name in entries:
        if not name.isdigit():
            continue
        try:
            stat = (_PROC / name / "stat").read_text()
            # the fields after the command (which may hold spaces and parentheses)
            fields = stat[stat.rindex(")") + 2 :].split()
            pgid = int(fields[2])
            if pgid not in totals:
                continue
            rss_pages = int(fields[21])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
        totals[pgid] += rss_pages * _PAGE
    return totals


class MemoryGuard:
    """Watches process groups against their limits while at least one is watched."""

    def __init__(self, period_s: float = PERIOD_S) -> None:
        self._period_s = period_s
        self._watched: dict[int, _Watched] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, pgid: int, limit: int, on_exceed: Callable[[int], None]) -> None:
        """Call ``on_exceed(peak)`` once the group ``pgid`` holds more than ``limit`` bytes."""
        self._watched[pgid] = _Watched(limit, on_exceed)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="memory guard")

    def unwatch(self, pgid: int) -> int:
        """Stop watching ``pgid``; the most it was seen to hold."""
        watched = self._watched.pop(pgid, None)
        return 0 if watched is None else watched.peak

    async def close(self) -> None:
        self._watched.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while self._watched:
            await asyncio.sleep(self._period_s)
            groups = set(self._watched)
            try:
                totals = await asyncio.to_thread(group_rss, groups)
            except Exception:  # a guard that fails must not take the executor with it
                log.exception("cannot read the memory of action processes")
                continue
            for pgid, used in totals.items():
                watched = self._watched.get(pgid)
                if watched is None:
                    continue
                watched.peak = max(watched.peak, used)
                if used > watched.limit and not watched.tripped:
                    watched.tripped = True
                    watched.on_exceed(watched.peak)
