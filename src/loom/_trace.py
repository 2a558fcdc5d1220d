"""``@loom.trace``: record calls of helper functions made inside a task."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ._context import current_action
from ._task import is_coroutine_function

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(slots=True)
class TraceRecord:
    """One call of a ``@loom.trace`` function inside an action."""

    action: str
    name: str
    started: float
    ended: float
    error: str | None = None


def _record(started: float, name: str, error: BaseException | None) -> None:
    action = current_action.get()
    if action is None:
        return
    recorder = getattr(action.run, "trace", None)
    if recorder is not None:
        recorder(
            TraceRecord(
                action.action,
                name,
                started,
                time.time(),
                None if error is None else f"{type(error).__qualname__}: {error}",
            )
        )


def trace(func: F) -> F:
    """Record each call of ``func`` (name, timing, error) on the action that makes it.

    Works on sync and async functions; outside a run it is a plain call.
    """
    name = func.__qualname__

    if is_coroutine_function(func):

        @functools.wraps(func)
        async def traced_async(*args: Any, **kwargs: Any) -> Any:
            if current_action.get() is None:
                return await func(*args, **kwargs)
            started = time.time()
            try:
                result = await func(*args, **kwargs)
            except BaseException as e:
                _record(started, name, e)
                raise
            _record(started, name, None)
            return result

        return traced_async  # type: ignore[return-value]

    @functools.wraps(func)
    def traced(*args: Any, **kwargs: Any) -> Any:
        if current_action.get() is None:
            return func(*args, **kwargs)
        started = time.time()
        try:
            result = func(*args, **kwargs)
        except BaseException as e:
            _record(started, name, e)
            raise
        _record(started, name, None)
        return result

    return traced  # type: ignore[return-value]
