"""``TaskEnvironment``: settings shared by a group of tasks, and the ``@env.task`` decorator."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from ._cache import Cache, CacheBehavior
from ._image import Image
from ._resources import Resources
from ._reuse import ReusePolicy
from ._secret import Secret
from ._task import TaskTemplate
from ._timeout import RetryStrategy, Timeout
from .errors import TaskDefinitionError

F = TypeVar("F", bound=Callable[..., Any])


def _secrets(value: str | Secret | Iterable[str | Secret] | None) -> tuple[Secret, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str | Secret) else list(value)
    return tuple(s if isinstance(s, Secret) else Secret(s) for s in items)


@dataclass(frozen=True)
class TaskEnvironment:
    """Shared settings for a group of tasks: where and how they run.

    >>> env = loom.TaskEnvironment("etl", resources=loom.Resources(cpu=2, memory="4Gi"))
    >>> @env.task
    ... async def extract(day: str) -> list[dict]: ...

    ``env_vars`` are visible to the tasks through ``os.environ`` (see ``loom._execution`` for how
    concurrent tasks of disagreeing environments are kept apart in local mode).
    """

    name: str
    resources: Resources | None = None
    image: Image | str | None = None
    cache: Cache | CacheBehavior | bool | None = "disable"
    secrets: str | Secret | Iterable[str | Secret] | None = None
    env_vars: dict[str, str] | None = None
    reusable: ReusePolicy | None = None
    depends_on: Iterable[TaskEnvironment] = ()
    description: str | None = None
    tasks: dict[str, TaskTemplate[Any, Any]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name or ""):
            raise TaskDefinitionError(
                f"TaskEnvironment name {self.name!r} must start with a letter or digit and "
                "contain only letters, digits, '_', '-' and '.'"
            )
        object.__setattr__(self, "cache", Cache.coerce(self.cache))
        object.__setattr__(self, "secrets", _secrets(self.secrets))
        object.__setattr__(self, "env_vars", dict(self.env_vars or {}))
        object.__setattr__(self, "depends_on", tuple(self.depends_on))
        for key, value in self.env_vars.items():  # type: ignore[union-attr]
            if not isinstance(key, str) or not isinstance(value, str):
                raise TaskDefinitionError(
                    f"TaskEnvironment {self.name!r}: env_vars must map str to str, got "
                    f"{key!r}: {value!r}"
                )

    def __hash__(self) -> int:
        return hash(self.name)

    @overload
    def task(self, func: F, /) -> TaskTemplate[Any, Any]: ...

    @overload
    def task(
        self,
        func: None = None,
        /,
        *,
        cache: Cache | CacheBehavior | bool | None = None,
        retries: int | RetryStrategy = 0,
        timeout: Timeout | float | None = None,
        report: bool = False,
        short_name: str | None = None,
    ) -> Callable[[F], TaskTemplate[Any, Any]]: ...

    def task(
        self,
        func: F | None = None,
        /,
        *,
        cache: Cache | CacheBehavior | bool | None = None,
        retries: int | RetryStrategy = 0,
        timeout: Timeout | float | None = None,
        report: bool = False,
        short_name: str | None = None,
    ) -> TaskTemplate[Any, Any] | Callable[[F], TaskTemplate[Any, Any]]:
        """Turn a sync or async function into a task; usable bare or with arguments."""

        def decorate(fn: F) -> TaskTemplate[Any, Any]:
            if isinstance(fn, TaskTemplate):
                raise TaskDefinitionError(f"{fn.name} is already a task")
            if not callable(fn):
                raise TaskDefinitionError(f"@{self.name}.task needs a function, got {fn!r}")
            task: TaskTemplate[Any, Any] = TaskTemplate(
                fn,
                self,
                cache=self.cache if cache is None else cache,
                retries=retries,
                timeout=timeout,
                report=report,
                short_name=short_name,
            )
            self.tasks[task.short_name] = task
            return task

        return decorate if func is None else decorate(func)
