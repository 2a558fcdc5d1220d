"""Checkpoints of a remote action: kept by the server, with the attempt's own credential.

An attempt saves with ``PUT .../attempts/{n}/checkpoint`` and the next attempt (possibly on
another machine) loads with ``GET`` of its own number: the server answers with the latest
checkpoint an earlier attempt saved. Nobody else's credential reaches them (see
``loom.server._checkpoints``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .. import wire
from .._checkpoint import CheckpointStore
from .._sync import run_sync
from ..remote import Client

T = TypeVar("T")


class _Host(Protocol):
    """The remote run whose action this process executes."""

    client: Client
    loop: asyncio.AbstractEventLoop | None
    name: str


class RemoteCheckpoints(CheckpointStore):
    """The checkpoints of the action a remote run's process executes, on the server."""

    def __init__(self, host: _Host) -> None:
        self._host = host

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[Client]:
        """The run's client on its loop; a short-lived one (same credential) elsewhere."""
        host = self._host
        if asyncio.get_running_loop() is host.loop:
            yield host.client
            return
        shared = host.client
        async with Client(shared.endpoint, shared.api_key, patience_s=shared.patience_s) as c:
            yield c

    def _block(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run a request from sync code: on the run's loop from a sync task's thread, else
        on a loop of its own (never blocking the loop the request needs)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            loop = self._host.loop
            if loop is not None and loop.is_running():
                return asyncio.run_coroutine_threadsafe(make(), loop).result()
        return run_sync(make())

    async def previous(self, action: str, attempt: int) -> bool:
        async with self._client() as client:
            info = await client.checkpoint_info(self._host.name, action, attempt)
        return info is not None

    def previous_sync(self, action: str, attempt: int) -> bool:
        return self._block(lambda: self.previous(action, attempt))

    async def fetch(self, action: str, attempt: int, target: Path) -> wire.CheckpointKind | None:
        async with self._client() as client:
            info = await client.download_checkpoint(self._host.name, action, attempt, target)
        return None if info is None else info.kind

    def fetch_sync(self, action: str, attempt: int, target: Path) -> wire.CheckpointKind | None:
        return self._block(lambda: self.fetch(action, attempt, target))

    async def save(
        self, action: str, attempt: int, kind: wire.CheckpointKind, blob: bytes | Path
    ) -> None:
        async with self._client() as client:
            await client.put_checkpoint(self._host.name, action, attempt, kind, blob)

    def save_sync(
        self, action: str, attempt: int, kind: wire.CheckpointKind, blob: bytes | Path
    ) -> None:
        self._block(lambda: self.save(action, attempt, kind, blob))
