"""Reuse policy: run many actions in warm worker processes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import TaskDefinitionError

if TYPE_CHECKING:
    from datetime import timedelta


@dataclass(frozen=True, slots=True)
class ReusePolicy:
    """Keep ``replicas`` warm workers, each running up to ``concurrency`` actions at once.

    ``replicas`` is a count or a ``(min, max)`` range. ``idle_ttl`` is how long a worker may sit
    idle before it stops; ``scaledown_ttl`` how long to wait before removing a replica. Local
    mode runs every task in-process and ignores the policy.
    """

    replicas: int | tuple[int, int] = 1
    idle_ttl: int | float | timedelta | None = None
    concurrency: int = 1
    scaledown_ttl: int | float | timedelta | None = None

    def __post_init__(self) -> None:
        low, high = self.replicas if isinstance(self.replicas, tuple) else (self.replicas,) * 2
        if low < 0 or high < max(low, 1):
            raise TaskDefinitionError(
                "ReusePolicy replicas must satisfy 0 <= min <= max and max >= 1; "
                f"got {self.replicas!r}"
            )
        if self.concurrency < 1:
            raise TaskDefinitionError("ReusePolicy concurrency must be at least 1")
