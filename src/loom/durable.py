"""Time helpers a Flyte 2 program calls as ``flyte.durable.time()``/``now()``/``sleep()``.

Each is a plain function with an awaitable ``.aio`` form. loom gives their values for the
attempt that calls them: a retry reads the clock again and sleeps its full time (Flyte 2
replays the values an earlier attempt recorded). Code that must not redo waiting after a
retry can keep its own progress in ``loom.ctx().checkpoint``.
"""

from __future__ import annotations

import asyncio
import time as _time
from datetime import datetime
from typing import Any

__all__ = ["now", "sleep", "time"]


def time() -> float:
    """Seconds since the epoch, as ``time.time()``."""
    return _time.time()


def now() -> datetime:
    """The local date and time, as ``datetime.now()``."""
    return datetime.now()


def sleep(seconds: float) -> None:
    """Sleep ``seconds`` (in an async task, use ``await sleep.aio(seconds)``)."""
    _time.sleep(seconds)


async def _time_aio() -> float:
    return time()


async def _now_aio() -> datetime:
    return now()


async def _sleep_aio(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _with_aio(func: Any, aio: Any) -> None:
    func.aio = aio


_with_aio(time, _time_aio)
_with_aio(now, _now_aio)
_with_aio(sleep, _sleep_aio)
