"""The context of the action that is running: ``loom.ctx()`` and ``loom.group()``."""

from __future__ import annotations

from collections.abc import Awaitable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from .errors import MissingSecretError

if TYPE_CHECKING:
    from pathlib import Path

    from ._task import TaskTemplate


class RunInfo(Protocol):
    """The run an action belongs to, as tasks see it: its identity and its controller."""

    name: str
    project: str
    domain: str
    mode: str

    def call(
        self,
        task: TaskTemplate[Any, Any],
        parent: TaskContext | None,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """Run a task called directly: a coroutine for async tasks, the value for sync ones."""
        ...

    def call_aio(
        self,
        task: TaskTemplate[Any, Any],
        parent: TaskContext | None,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Awaitable[Any]:
        """Run a task called with ``.aio``: always awaitable."""
        ...


class SecretsAccessor:
    """Read the secrets a task declared: ``ctx().secrets["key"]`` or ``.get("key")``."""

    __slots__ = ("_paths", "_values")

    def __init__(self, values: Mapping[str, str], paths: Mapping[str, Path]) -> None:
        self._values = values
        self._paths = paths

    def __getitem__(self, key: str) -> str:
        try:
            return self._values[key]
        except KeyError:
            raise MissingSecretError(
                f"secret {key!r} was not declared by this task's environment; add "
                f"loom.Secret({key!r}) to TaskEnvironment(secrets=[...])"
            ) from None

    def get(self, key: str, default: str | None = None) -> str | None:
        return self._values.get(key, default)

    def path(self, key: str) -> Path:
        """The file holding a secret declared with ``mount=``."""
        try:
            return self._paths[key]
        except KeyError:
            raise MissingSecretError(f"secret {key!r} was not declared with mount=") from None

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __repr__(self) -> str:  # never show values
        return f"<secrets {sorted(self._values)}>"


_NO_SECRETS = SecretsAccessor({}, {})


class TaskContext:
    """What a running task can learn about itself, from ``loom.ctx()``.

    ``attempt`` counts from 1. ``action`` is unique within the run for every task call.
    """

    __slots__ = ("action", "attempt", "environ", "group", "report_parts", "run", "secrets", "task")

    def __init__(
        self,
        run: RunInfo,
        action: str,
        task: TaskTemplate[Any, Any],
        group: tuple[str, ...],
        environ: dict[str, str] | None,
        secrets: SecretsAccessor = _NO_SECRETS,
    ) -> None:
        self.run = run
        self.action = action
        self.task = task
        self.group = group
        self.environ = environ
        self.secrets = secrets
        self.attempt = 0
        self.report_parts: list[str] | None = None

    @property
    def run_name(self) -> str:
        return self.run.name

    @property
    def project(self) -> str:
        return self.run.project

    @property
    def domain(self) -> str:
        return self.run.domain

    @property
    def mode(self) -> str:
        return self.run.mode

    @property
    def task_name(self) -> str:
        return self.task.name

    def __repr__(self) -> str:
        return (
            f"TaskContext(run={self.run_name!r}, action={self.action!r}, "
            f"task={self.task_name!r}, attempt={self.attempt})"
        )


current_action: ContextVar[TaskContext | None] = ContextVar("loom_action", default=None)
current_group: ContextVar[tuple[str, ...]] = ContextVar("loom_group", default=())


def ctx() -> TaskContext | None:
    """The context of the task running now, or ``None`` outside a run."""
    return current_action.get()


@contextmanager
def group(name: str) -> Iterator[None]:
    """Group the task calls made inside the block under ``name`` (groups nest)."""
    token = current_group.set((*current_group.get(), name))
    try:
        yield
    finally:
        current_group.reset(token)
