"""Per-task environment variables on top of the process environment.

``os.environ`` is process-wide, but tasks of different environments run concurrently in one
process in local mode. loom therefore replaces ``os.environ`` (once, the first time a task with
``env_vars`` or secrets runs) with a view that shows the running task's variables layered over
the process environment. Each task sees its own values even when environments disagree.
Subprocesses started with ``env=None`` inherit the *process* environment, not the overlay;
pass ``env=dict(os.environ)`` to hand a task's variables to a child process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

from .._context import current_action


class _OverlayEnviron(os._Environ[str]):
    """``os.environ`` with the current task's variables layered on top."""

    def __init__(self, base: os._Environ[str]) -> None:
        # share the process mapping so writes and putenv behave exactly as before
        super().__init__(
            base._data,  # type: ignore[attr-defined]
            base.encodekey,
            base.decodekey,
            base.encodevalue,
            base.decodevalue,
        )

    @staticmethod
    def _overlay() -> dict[str, str] | None:
        action = current_action.get()
        return None if action is None else action.environ

    def __getitem__(self, key: str) -> str:
        overlay = self._overlay()
        if overlay is not None and key in overlay:
            return overlay[key]
        value: str = super().__getitem__(key)
        return value

    def __setitem__(self, key: str, value: str) -> None:
        overlay = self._overlay()
        if overlay is not None and key in overlay:
            overlay[key] = value
            return
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        overlay = self._overlay()
        if overlay is not None and key in overlay:
            del overlay[key]
            return
        super().__delitem__(key)

    def __iter__(self) -> Iterator[str]:
        overlay = self._overlay()
        base = list(super().__iter__())
        if not overlay:
            return iter(base)
        present = set(base)
        return iter([*base, *(k for k in overlay if k not in present)])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def copy(self) -> dict[str, str]:
        return dict(self)

    def __repr__(self) -> str:
        return f"environ({dict(self)!r})"

    def __reduce__(self) -> Any:
        return (dict, (dict(self),))


_lock = threading.Lock()


def install_environ_overlay() -> None:
    """Replace ``os.environ`` with the overlay view (idempotent)."""
    if isinstance(os.environ, _OverlayEnviron):
        return
    with _lock:
        if not isinstance(os.environ, _OverlayEnviron):
            os.environ = _OverlayEnviron(os.environ)  # noqa: B003 - replacing the view is the point
