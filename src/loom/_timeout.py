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


def _bound(value: float | timedelta | None, what: str) -> float | None:
    """Seconds of a time bound; ``None`` or zero means unbounded (Flyte 2's convention)."""
    return _seconds(value, what) or None


@dataclass(frozen=True, slots=True)
class Timeout:
    """Time bounds of an action, each optional (``None`` or ``0``: unbounded), as in Flyte 2.

    - ``max_runtime`` bounds one attempt's running time; a timed-out attempt is retried if
      the task has retries left (:class:`~loom.errors.MaxRuntimeExceededError`).
    - ``max_queued_time`` bounds the wait of an attempt to start: for capacity on the control
      plane, or for a thread or a serialized cache's holder locally
      (:class:`~loom.errors.MaxQueuedTimeExceededError`).
    - ``deadline`` bounds the whole action, from the call to its end, across all attempts and
      the backoff between them; it is final, whatever retries are left
      (:class:`~loom.errors.DeadlineExceededError`).

    Each is seconds or a ``timedelta``. ``timeout=30`` on a task means ``max_runtime=30``.
    """

    max_runtime: float | timedelta | None = None
    max_queued_time: float | timedelta | None = None
    deadline: float | timedelta | None = None

    def __post_init__(self) -> None:
        # checked when declared, not when the first call needs the numbers
        self.runtime_seconds  # noqa: B018
        self.queued_seconds  # noqa: B018
        self.deadline_seconds  # noqa: B018

    @property
    def runtime_seconds(self) -> float | None:
        """``max_runtime`` in seconds, ``None`` if unbounded."""
        return _bound(self.max_runtime, "Timeout max_runtime")

    @property
    def queued_seconds(self) -> float | None:
        """``max_queued_time`` in seconds, ``None`` if unbounded."""
        return _bound(self.max_queued_time, "Timeout max_queued_time")

    @property
    def deadline_seconds(self) -> float | None:
        """``deadline`` in seconds, ``None`` if unbounded."""
        return _bound(self.deadline, "Timeout deadline")

    @classmethod
    def coerce(cls, value: Timeout | float | timedelta | None) -> Timeout | None:
        """Accept a ``Timeout``, seconds or a ``timedelta`` (``max_runtime``); ``None``, ``0``
        or a ``Timeout`` with no bound means no timeout."""
        if value is None:
            return None
        if isinstance(value, Timeout):
            unbounded = (value.runtime_seconds, value.queued_seconds, value.deadline_seconds)
            return None if unbounded == (None, None, None) else value
        if not isinstance(value, int | float) and not hasattr(value, "total_seconds"):
            raise TaskDefinitionError(
                f"timeout must be seconds, a timedelta or a loom.Timeout, got {value!r}"
            )
        seconds = _seconds(value, "timeout")
        return None if not seconds else cls(seconds)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential pacing of retries, as Flyte 2 spells it: the wait before retry *n*
    (0-based) is ``min(base * factor**n, cap)``.

    >>> loom.RetryStrategy(4, backoff=loom.Backoff(base=timedelta(seconds=1), factor=2.0,
    ...                                            cap=timedelta(seconds=30)))

    ``base`` and ``cap`` are seconds or ``timedelta``; ``factor`` is at least 1. Without a
    ``cap`` the wait is capped at a day (``loom.wire.MAX_RETRY_BACKOFF_S``).
    """

    base: float | timedelta
    factor: float = 1.0
    cap: float | timedelta | None = None

    def __post_init__(self) -> None:
        _seconds(self.base, "Backoff base")
        _seconds(self.cap, "Backoff cap")
        factor = self.factor
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor >= 1:
            raise TaskDefinitionError(f"Backoff factor must be a number from 1 up, got {factor!r}")
        if factor == float("inf"):
            raise TaskDefinitionError("Backoff factor must be finite")

    @property
    def base_seconds(self) -> float:
        return _seconds(self.base, "Backoff base") or 0.0

    @property
    def cap_seconds(self) -> float:
        cap = _seconds(self.cap, "Backoff cap")
        return float("inf") if cap is None else cap  # (the rule caps it at a day)

    def compute_delay(self, n: int) -> timedelta:
        """The wait before retry ``n`` (0-based), as Flyte 2's ``Backoff.compute_delay``."""
        from datetime import timedelta

        from .wire import retry_backoff_s

        if n < 0:
            raise ValueError(f"retry index must not be negative, got {n}")
        return timedelta(
            seconds=retry_backoff_s(self.base_seconds, self.factor, self.cap_seconds, n + 1)
        )


@dataclass(frozen=True, slots=True)
class RetryStrategy:
    """Retry a failed attempt up to ``count`` more times.

    The wait before retry *n* (1-based) is ``backoff * backoff_factor**(n-1)`` seconds, capped
    at ``max_backoff`` (and at a day, ``loom.wire.MAX_RETRY_BACKOFF_S``). ``backoff`` may also
    be a :class:`Backoff` (Flyte 2's form, ``RetryStrategy(3, backoff=Backoff(base=...,
    factor=..., cap=...))``): its ``factor`` and ``cap`` then replace ``backoff_factor`` and
    ``max_backoff``. ``backoff=None`` retries at once.
    """

    count: int
    backoff: float | timedelta | Backoff | None = 0.1
    backoff_factor: float = 2.0
    max_backoff: float | timedelta = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int):
            raise TaskDefinitionError(f"retries must be a whole number, got {self.count!r}")
        if self.count < 0:
            raise TaskDefinitionError(f"retries must not be negative, got {self.count}")
        if isinstance(self.backoff, Backoff):
            # one rule for both spellings: the Backoff's numbers become loom's
            object.__setattr__(self, "backoff_factor", float(self.backoff.factor))
            object.__setattr__(self, "max_backoff", self.backoff.cap_seconds)
        if not 0 <= self.backoff_factor < float("inf"):  # (NaN fails too)
            raise TaskDefinitionError(
                f"backoff_factor must be a number from 0 up, got {self.backoff_factor!r}"
            )
        self.backoff_seconds  # noqa: B018  (checked when declared)
        self.max_backoff_seconds  # noqa: B018

    @property
    def backoff_seconds(self) -> float:
        if isinstance(self.backoff, Backoff):
            return self.backoff.base_seconds
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
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TaskDefinitionError(
                f"retries must be a whole number or a loom.RetryStrategy, got {value!r}"
            )
        return cls(int(value or 0))
