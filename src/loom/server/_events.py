"""Wakes the coroutines waiting on state changes: SSE streams and ``wait`` long-polls.

Events themselves are rows (their ``seq`` is the order); this bus only says "look again",
and, for an action that SUCCEEDED with small outputs, hands its watchers those outputs, so that
the long-poll of a parent waiting for a child answers without a query. Service code runs in
worker threads, so :meth:`EventBus.publish` hops onto the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping


class EventBus:
    """Change notifications, per action and global. Bound to one event loop by :meth:`attach`."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._watchers: dict[tuple[str, str], set[asyncio.Future[bytes | None]]] = {}
        self.stopping = asyncio.Event()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._changed = asyncio.Event()
        self.stopping = asyncio.Event()

    def publish(
        self,
        actions: Iterable[tuple[str, str]],
        outputs: Mapping[tuple[str, str], bytes] | None = None,
    ) -> None:
        """Tell waiters that events were written and ``actions`` changed phase (any thread);
        ``outputs``: the outputs' JSON of those of them that SUCCEEDED, where at hand."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        changed = set(actions)
        # the loop may close in between: then nobody is waiting any more
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._fire, changed, outputs or {})

    def _fire(
        self, actions: set[tuple[str, str]], outputs: Mapping[tuple[str, str], bytes]
    ) -> None:
        current, self._changed = self._changed, asyncio.Event()
        current.set()
        for key in actions:
            for future in self._watchers.pop(key, ()):
                if not future.done():
                    future.set_result(outputs.get(key))

    def next_change(self) -> asyncio.Event:
        """An event set at the next publish (take it *before* reading, so nothing is missed)."""
        return self._changed

    def watch(self, run: str, action: str) -> asyncio.Future[bytes | None]:
        """A future resolved when ``action`` of ``run`` next changes phase: with the JSON of
        its outputs if it SUCCEEDED and they came along, else ``None`` (look it up)."""
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._watchers.setdefault((run, action), set()).add(future)
        return future

    def unwatch(self, run: str, action: str, future: asyncio.Future[bytes | None]) -> None:
        watchers = self._watchers.get((run, action))
        if watchers is not None:
            watchers.discard(future)
            if not watchers:
                del self._watchers[(run, action)]
        future.cancel()

    def stop(self) -> None:
        """Ask every stream and long-poll to end (the server is shutting down)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.stopping.set)
