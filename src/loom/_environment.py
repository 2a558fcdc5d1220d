"""``TaskEnvironment``: settings shared by a group of tasks, and the ``@env.task`` decorator."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar, overload

from ._cache import Cache, CacheBehavior
from ._image import Image
from ._resources import Resources
from ._reuse import ReusePolicy
from ._secret import Secret
from ._task import TaskTemplate, check_task_options
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

    Flyte 2's other keywords are accepted so its programs run unchanged:

    - ``include``: extra files the tasks read (templates, configs), relative to the file that
      declares the environment (``include_paths`` has them absolute). A remote run ships the
      whole source root, non-Python files too, so files inside it reach the task without
      ``include``; loom records the paths, and does not ship files outside the root.
    - ``interruptible``, ``service_account``, ``pod_template``, ``queue``, ``plugin_config``:
      Kubernetes placement and task plugins, which loom's executors do not have; recorded,
      without effect.

    :meth:`clone_with` makes a variant under a new name.
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
    include: Iterable[str] = ()
    interruptible: bool = False
    service_account: str | None = None
    pod_template: Any = None
    queue: str | None = None
    plugin_config: Any = None
    tasks: dict[str, TaskTemplate[Any, Any]] = field(default_factory=dict, init=False, repr=False)
    # the directory of the file that declared it: what ``include`` paths are relative to
    _declared_in: str | None = field(default=None, init=False, repr=False, compare=False)

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
        for dep in self.depends_on:
            if not isinstance(dep, TaskEnvironment):
                raise TaskDefinitionError(
                    f"TaskEnvironment {self.name!r}: depends_on takes TaskEnvironments, got {dep!r}"
                )
        if isinstance(self.include, str | bytes):
            raise TaskDefinitionError(
                f"TaskEnvironment {self.name!r}: include takes a list of paths, got the single "
                f"string {self.include!r}; write include=({self.include!r},)"
            )
        include = tuple(self.include)
        for path in include:
            if not isinstance(path, str):
                raise TaskDefinitionError(
                    f"TaskEnvironment {self.name!r}: include paths must be str, got {path!r}"
                )
        object.__setattr__(self, "include", include)
        if self._declared_in is None:
            object.__setattr__(self, "_declared_in", _caller_dir())
        for key, value in self.env_vars.items():  # type: ignore[union-attr]
            if not isinstance(key, str) or not isinstance(value, str):
                raise TaskDefinitionError(
                    f"TaskEnvironment {self.name!r}: env_vars must map str to str, got "
                    f"{key!r}: {value!r}"
                )

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def include_paths(self) -> tuple[str, ...]:
        """``include`` as absolute paths (relative ones are relative to the declaring file)."""
        import os

        base = self._declared_in or os.getcwd()
        return tuple(os.path.normpath(os.path.join(base, p)) for p in self.include)

    def clone_with(
        self,
        name: str,
        image: Image | str | None = None,
        resources: Resources | None = None,
        env_vars: dict[str, str] | None = None,
        secrets: str | Secret | Iterable[str | Secret] | None = None,
        depends_on: Iterable[TaskEnvironment] | None = None,
        description: str | None = None,
        interruptible: bool | None = None,
        include: Iterable[str] | None = None,
        service_account: str | None = None,
        **kwargs: Any,
    ) -> TaskEnvironment:
        """A new environment named ``name`` with this one's settings, except those given.

        As in Flyte 2, an argument left at ``None`` keeps this environment's value, except
        ``reusable``, which is replaced by whatever is passed (``reusable=None`` turns reuse
        off). ``cache``, ``reusable``, ``queue``, ``pod_template`` and ``plugin_config`` go in
        ``kwargs``. The new environment has no tasks; this one is unchanged.

        >>> workers = loom.TaskEnvironment("workers", reusable=loom.ReusePolicy(replicas=2))
        >>> driver = workers.clone_with("driver", reusable=None, depends_on=[workers])
        """
        known = {f.name for f in fields(self) if f.init}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(
                f"clone_with() got unexpected keyword arguments: {', '.join(unknown)} (it "
                f"takes the keywords of TaskEnvironment: {', '.join(sorted(known))})"
            )
        changes: dict[str, Any] = {
            key: value
            for key, value in {
                "image": image,
                "resources": resources,
                "env_vars": env_vars,
                "secrets": secrets,
                "depends_on": depends_on,
                "description": description,
                "interruptible": interruptible,
                "include": include,
                "service_account": service_account,
                **{k: v for k, v in kwargs.items() if k != "reusable"},
            }.items()
            if value is not None
        }
        if "reusable" in kwargs:
            changes["reusable"] = kwargs["reusable"]
        clone = replace(self, name=name, **changes)
        if "include" not in changes:  # its paths stay relative to where they were declared
            object.__setattr__(clone, "_declared_in", self._declared_in)
        return clone

    def add_dependency(self, *envs: TaskEnvironment) -> None:
        """Add environments to ``depends_on`` (Flyte 2: deployed together); itself and
        duplicates are ignored."""
        deps = list(self.depends_on)
        for env in envs:
            if not isinstance(env, TaskEnvironment):
                raise TaskDefinitionError(f"add_dependency takes TaskEnvironments, got {env!r}")
            if env.name == self.name:
                raise TaskDefinitionError(f"TaskEnvironment {self.name!r} cannot depend on itself")
            if env not in deps:
                deps.append(env)
        object.__setattr__(self, "depends_on", tuple(deps))

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
        max_inline_io_bytes: int | None = None,
        entrypoint: bool = False,
        docs: Any = None,
        **flyte_options: Any,
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
        max_inline_io_bytes: int | None = None,
        entrypoint: bool = False,
        docs: Any = None,
        **flyte_options: Any,
    ) -> TaskTemplate[Any, Any] | Callable[[F], TaskTemplate[Any, Any]]:
        """Turn a sync or async function into a task; usable bare or with arguments.

        ``max_inline_io_bytes`` bounds the encoded size of the task's inputs (checked by the
        caller) and of its output (checked when it returns): over it, the call fails with
        :class:`~loom.errors.InlineIOMaxBytesBreached`, locally and remotely. ``entrypoint``
        marks where a workflow starts (a hint, as in Flyte 2); ``docs`` is recorded. Flyte 2's
        other task options (``pod_template``, ``queue``, ``interruptible``,
        ``service_account``, ``triggers``, ``links``, ...) are accepted without effect.
        """
        check_task_options(f"@{self.name}.task", flyte_options)

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
                max_inline_io_bytes=max_inline_io_bytes,
                entrypoint=entrypoint,
                docs=docs,
                options=flyte_options,
            )
            self.tasks[task.short_name] = task
            return task

        return decorate if func is None else decorate(func)


def _caller_dir() -> str | None:
    """The directory of the first file up the stack outside loom: where the environment was
    declared."""
    import os

    frame: Any = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        filename = frame.f_code.co_filename
        # (a dataclass's generated __init__ is "<string>"; replace() runs in dataclasses)
        if not (module.startswith("loom.") or module == "dataclasses" or filename[:1] == "<"):
            return str(os.path.dirname(os.path.abspath(filename)))
        frame = frame.f_back
    return None
