"""The context of the action that is running: ``loom.ctx()`` and ``loom.group()``."""

from __future__ import annotations

from collections.abc import Awaitable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from .errors import MissingSecretError

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from ._checkpoint import Checkpoint
    from ._task import TaskTemplate


class RunInfo(Protocol):
    """The run an action belongs to, as tasks see it: its identity and its controller."""

    name: str
    project: str
    domain: str
    mode: str
    #: when the run started (seconds since the epoch)
    started_at: float

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


class ActionID(str):
    """An action's name (a ``str``, as loom has always given it) that also carries its run's
    identity as Flyte 2's ``ActionID`` does: ``.name``, ``.run_name``, ``.project``,
    ``.domain``."""

    run_name: str
    project: str
    domain: str

    def __new__(cls, name: str, run_name: str, project: str, domain: str) -> ActionID:
        self = super().__new__(cls, name)
        self.run_name = run_name
        self.project = project
        self.domain = domain
        return self

    @property
    def name(self) -> str:
        return str(self)

    def __reduce__(self) -> Any:  # pickles as a plain name, as it compares
        return (str, (str(self),))


class RawDataPath:
    """Where a task may write scratch data (Flyte 2's ``ctx().raw_data_path``): ``.path``, a
    directory private to this process and run, made on first use."""

    __slots__ = ("_path", "_run")

    def __init__(self, run: str) -> None:
        self._run = run
        self._path: str | None = None

    @property
    def path(self) -> str:
        if self._path is None:
            import tempfile

            self._path = tempfile.mkdtemp(prefix=f"loom-raw-{self._run}-")
        return self._path

    def __repr__(self) -> str:
        return f"RawDataPath(path={self._path!r})"


class TaskContext:
    """What a running task can learn about itself, from ``loom.ctx()``.

    ``attempt`` counts from 1. ``action`` is unique within the run for every task call.
    """

    __slots__ = (
        "_checkpoint",
        "_custom_context",
        "action",
        "attempt",
        "environ",
        "group",
        "report_parts",
        "run",
        "secrets",
        "task",
    )

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
        self.action = ActionID(action, run.name, run.project, run.domain)
        self.task = task
        self.group = group
        self.environ = environ
        self.secrets = secrets
        self.attempt = 0
        self.report_parts: list[str] | None = None
        self._custom_context: dict[str, str] = {}
        self._checkpoint: Checkpoint | None = None

    @property
    def custom_context(self) -> dict[str, str]:
        """The key-value pairs this action was given (``with_runcontext(custom_context=)``,
        ``loom.custom_context(...)`` around the call), with those of an enclosing
        ``loom.custom_context`` block of its own; a copy."""
        override = _custom_override.get()
        if override is not None and override[0] is self:
            return dict(override[1])
        return dict(self._custom_context)

    @property
    def checkpoint(self) -> Checkpoint:
        """This attempt's checkpoint: what it saves (``save``/``save_sync``), the next attempt
        of this action loads (``load``/``load_sync``); see :class:`loom.Checkpoint`."""
        found = self._checkpoint
        if found is None or found.attempt != max(self.attempt, 1):  # one per attempt
            from ._checkpoint import checkpoint_of

            found = self._checkpoint = checkpoint_of(self)
        return found

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

    @property
    def run_start_time(self) -> datetime:
        """When the run started (UTC)."""
        from datetime import UTC, datetime

        return datetime.fromtimestamp(self.run.started_at, UTC)

    @property
    def raw_data_path(self) -> RawDataPath:
        """A scratch directory for the task's own files (``.path``)."""
        return _raw_data_path(self.run.name)

    # Flyte 2 names with nothing behind them in loom, so code that prints them still runs.
    data: dict[str, Any] = {}  # read-only by convention, as Flyte's
    code_bundle = None
    checkpoint_paths = None

    def __repr__(self) -> str:
        return (
            f"TaskContext(run={self.run_name!r}, action={self.action!r}, "
            f"task={self.task_name!r}, attempt={self.attempt})"
        )


_RAW_DATA_PATHS: dict[str, RawDataPath] = {}


def _raw_data_path(run: str) -> RawDataPath:
    found = _RAW_DATA_PATHS.get(run)
    if found is None:
        found = _RAW_DATA_PATHS[run] = RawDataPath(run)
    return found


current_action: ContextVar[TaskContext | None] = ContextVar("loom_action", default=None)
current_group: ContextVar[tuple[str, ...]] = ContextVar("loom_group", default=())
# a ``custom_context`` block: whose (the task's context, or None outside tasks) and the pairs
_custom_override: ContextVar[tuple[TaskContext | None, dict[str, str]] | None] = ContextVar(
    "loom_custom_context", default=None
)


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


@contextmanager
def custom_context(**pairs: str) -> Iterator[None]:
    """Add key-value pairs to the custom context of the task calls made inside the block
    (and of the running task's ``ctx().custom_context`` meanwhile); blocks nest. Outside a
    task, the pairs go to the runs started in the block."""
    for key, value in pairs.items():
        if not isinstance(value, str):
            raise TypeError(f"custom_context values must be str, got {key}={value!r}")
    action = current_action.get()
    token = _custom_override.set((action, {**current_custom_context(), **pairs}))
    try:
        yield
    finally:
        _custom_override.reset(token)


def current_custom_context() -> dict[str, str]:
    """What a task called now gets as its custom context: the calling task's (with its
    ``custom_context`` blocks), or outside tasks those of the enclosing blocks."""
    action = current_action.get()
    if action is not None:
        return action.custom_context
    override = _custom_override.get()
    return dict(override[1]) if override is not None and override[0] is None else {}
