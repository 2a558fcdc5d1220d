"""Cache policy for a task's outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import TaskDefinitionError

CacheBehavior = Literal["auto", "override", "disable"]


@dataclass(frozen=True, slots=True)
class Cache:
    """How a task's outputs are cached.

    - ``"auto"``: the cache version is derived from the task function's source, so editing the
      function invalidates old entries.
    - ``"override"``: the version is ``version_override``; bump it to invalidate.
    - ``"disable"``: never cache.

    ``serialize=True`` makes identical concurrent calls wait for the first one and share its
    result. Inputs named in ``ignored_inputs`` do not take part in the cache key.
    """

    behavior: CacheBehavior = "auto"
    version_override: str | None = None
    serialize: bool = False
    ignored_inputs: tuple[str, ...] | str = ()
    salt: str = ""

    def __post_init__(self) -> None:
        if self.behavior not in ("auto", "override", "disable"):
            raise TaskDefinitionError(
                f"Cache behavior must be 'auto', 'override' or 'disable', got {self.behavior!r}"
            )
        if self.behavior == "override" and not self.version_override:
            raise TaskDefinitionError(
                "Cache(behavior='override') needs version_override='...' naming the version"
            )
        if isinstance(self.ignored_inputs, str):
            object.__setattr__(self, "ignored_inputs", (self.ignored_inputs,))

    @property
    def enabled(self) -> bool:
        return self.behavior != "disable"

    @classmethod
    def coerce(cls, value: Cache | CacheBehavior | bool | None) -> Cache:
        """Accept a ``Cache``, a behaviour name, ``True`` (auto) or ``False``/``None`` (off)."""
        if isinstance(value, Cache):
            return value
        if value is True:
            return cls("auto")
        if value is False or value is None:
            return cls("disable")
        return cls(value)
