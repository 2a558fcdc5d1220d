"""Timeouts and retry strategies for task attempts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import TaskDefinitionError

if TYPE_CHECKING:
    from datetime import timedelta


def _seconds(value: float | timedelta | None, what: str) -> float | None:
    if value is None:
        return None
    # duck-typed so that datetime need not be imported on the import path
    seconds = value.total_seconds() if hasattr(value, "total_seconds") else float(value)
    if not seconds >= 0:  # (NaN fails too)
        raise TaskDefinitionError(f"{what} must not be negative, got {value!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class Timeout:
    """``max_runtime`` bounds one attempt; ``max_queued_time`` bounds waiting for capacity."""

    max_runtime: float | timedelta
    max_queued_time: float | timedelta | None = None

    @property
    def runtime_seconds(self) -> float:
        seconds = _seconds(self.max_runtime, "Timeout max_runtime")
        assert seconds is not None
        return seconds

    @classmethod
    def coerce(cls, value: Timeout | float | timedelta | None) -> Timeout | None:
        """Accept a ``Timeout``, seconds or a ``timedelta``; ``None`` or ``0`` means no timeout."""
        if value is None or isinstance(value, Timeout):
            return value
        seconds = _seconds(value, "timeout")
        return None if not seconds else cls(seconds)


@dataclass(frozen=True, slots=True)
class RetryStrategy:
    """Retry a failed attempt up to ``count`` more times.

    The wait before retry *n* (1-based) is ``backoff * backoff_factor**(n-1)`` seconds, capped
    at ``max_backoff`` (and at a day, ``loom.wire.MAX_RETRY_BACKOFF_S``).
    """

    count: int
    backoff: float | timedelta = 0.1
    backoff_factor: float = 2.0
    max_backoff: float | timedelta = 30.0

    def __post_init__(self) -> None:
        if self.count < 0:
            raise TaskDefinitionError(f"retries must not be negative, got {self.count}")
        if not 0 <= self.backoff_factor < float("inf"):  # (NaN fails too)
            raise TaskDefinitionError(
                f"backoff_factor must be a number from 0 up, got {self.backoff_factor!r}"
            )

    @property
    def backoff_seconds(self) -> float:
        return _seconds(self.backoff, "backoff") or 0.0

    @property
    def max_backoff_seconds(self) -> float:
        return _seconds(self.max_backoff, "max_backoff") or 0.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based): the rule remote runs
        follow too."""
        from .wire import retry_backoff_s  # (pydantic: not on `import loom`'s path)

        return retry_backoff_s(
            self.backoff_seconds, self.backoff_factor, self.max_backoff_seconds, retry
        )

    @classmethod
    def coerce(cls, value: RetryStrategy | int | None) -> RetryStrategy:
        if isinstance(value, RetryStrategy):
            return value
        return cls(int(value or 0))
