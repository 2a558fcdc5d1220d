"""The executor's side of the runtime's fork server (``python -m loom.runtime --zygote``).

Forking an already-initialised runtime makes an attempt's process ready in milliseconds instead
of most of a second. The zygote is an optimisation only: if it cannot start or dies, the
executor spawns fresh processes as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import wire
from ._errors import JobStartError

log = logging.getLogger("loom.executors")

_START_TIMEOUT_S = 60.0
_SPAWN_TIMEOUT_S = 10.0


class ForkedProcess:
    """A child of the zygote, with the small part of ``asyncio.subprocess.Process`` we use."""

    def __init__(self, pid: int, exited: asyncio.Future[int | None]) -> None:
        self.pid = pid
        self._exited = exited
        self.returncode: int | None = None

    async def wait(self) -> int | None:
        self.returncode = await asyncio.shield(self._exited)
        return self.returncode


class Zygote:
    """One fork-server process and the bookkeeping of the children it forked."""

    def __init__(self, command: Sequence[str]) -> None:
        self._command = [*command, *wire.ZYGOTE_ARGV]
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count()
        self._pending: dict[str, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int | None]] = {}  # of children that run
        # children whose exit was read before their spawn took their pid: it takes them ended
        self._ended_early: dict[int, asyncio.Future[int | None]] = {}
        self.alive = False
        self._stopping = False  # (a stop asked for is no failure to warn about)
        #: when (``time.monotonic()``) it last forked a child, or started
        self.last_spawn = time.monotonic()

    @property
    def children(self) -> int:
        """How many of the children it forked still run (as far as it has told us)."""
        return len(self._exits)

    async def start(self) -> None:
        """Start the zygote and wait until it has imported the runtime."""
        self._process = await asyncio.create_subprocess_exec(
            *self._command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # not in the server's group: its signals are not ours
        )
        assert self._process.stdout is not None
        line = b""
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), _START_TIMEOUT_S)
            ready = "ready" in wire.decode(line)
        except (TimeoutError, ValueError):
            ready = False
        if not ready:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()
            raise JobStartError(f"the runtime fork server did not start: {line!r}")
        self.alive = True
        self._reader = asyncio.create_task(self._read(), name="zygote reader")

    def _exit_future(self, pid: int) -> asyncio.Future[int | None]:
        early = self._ended_early.pop(pid, None)
        if early is not None:
            return early
        return self._exits.setdefault(pid, asyncio.get_running_loop().create_future())

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        try:
            async for line in self._process.stdout:
                message = wire.decode(line)
                if "exit" in message:
                    future = self._exits.pop(message["exit"], None)
                    if future is None:  # its spawn has not taken it yet
                        future = asyncio.get_running_loop().create_future()
                        self._ended_early[message["exit"]] = future
                    if not future.done():
                        future.set_result(message["code"])
                elif "pid" in message:
                    waiter = self._pending.pop(message["id"], None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(message["pid"])
                elif "error" in message:
                    waiter = self._pending.pop(message["id"], None)
                    if waiter is not None and not waiter.done():
                        waiter.set_exception(JobStartError(message["error"]))
        finally:
            self.alive = False
            if not self._stopping:
                log.warning("the runtime fork server stopped; starting fresh processes instead")
            for waiter in self._pending.values():
                if not waiter.done():
                    waiter.set_exception(JobStartError("the runtime fork server stopped"))
            # children it forked carry on, but nobody can tell us their exit codes any more
            for future in self._exits.values():
                if not future.done():
                    future.set_result(None)

    async def spawn(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path
    ) -> ForkedProcess:
        """Fork a child that runs ``python -m loom.runtime *argv``."""
        if not self.alive or self._process is None or self._process.stdin is None:
            raise JobStartError("the runtime fork server is not running")
        request_id = str(next(self._ids))
        self.last_spawn = time.monotonic()
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = waiter
        request = wire.SpawnRequest(
            id=request_id, argv=list(argv), env=dict(env), cwd=str(cwd), log=str(log_path)
        )
        self._process.stdin.write(wire.encode(request))
        await self._process.stdin.drain()
        pid = await asyncio.wait_for(waiter, _SPAWN_TIMEOUT_S)
        return ForkedProcess(pid, self._exit_future(pid))

    async def stop(self, keep_children: bool = False) -> None:
        """Stop the fork server; it waits for its children first, unless they are to be
        ``kept`` running (each leads a group of its own: killing the server spares them)."""
        if self._process is None:
            return
        self._stopping = True
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            await asyncio.wait_for(self._process.wait(), 0 if keep_children else 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, 5)
