"""Starting runs: ``loom.run``, ``loom.with_runcontext``, ``loom.init`` and the ``Run`` handle."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigError, LoomError
from .wire import Phase

# The execution machinery (asyncio, threads, SQLite) is imported when the first run starts,
# not by ``import loom``: authoring a workflow should cost almost nothing.
if TYPE_CHECKING:
    from ._controller import LocalRun
    from ._execution import ActionRecord
    from ._settings import Settings
    from ._task import TaskTemplate
    from ._trace import TraceRecord

Mode = Literal["local", "remote"]

_settings: Settings | None = None


def init(
    project: str | None = None,
    domain: str | None = None,
    endpoint: str | None = None,
    api_key: str | None = None,
    config: str | os.PathLike[str] | None = None,
) -> None:
    """Configure loom for this process; arguments win over ``LOOM_*`` variables and the file."""
    from ._settings import Settings

    global _settings
    _settings = Settings.load(
        config, project=project, domain=domain, endpoint=endpoint, api_key=api_key
    )


def init_from_config(path: str | os.PathLike[str] | None = None) -> None:
    """Configure loom from a config file (default: ``LOOM_CONFIG`` or ``~/.loom/config.yaml``).

    An explicitly named file must exist; a missing default file means local defaults.
    """
    from ._settings import Settings

    global _settings
    _settings = Settings.load(path)


def current_settings() -> Settings:
    """The settings from ``init``, or freshly read from the environment if not initialised."""
    from ._settings import Settings

    return _settings if _settings is not None else Settings.load()


class Run:
    """A run's handle. In local mode it is complete when ``run()`` returns."""

    def __init__(self, host: LocalRun, started: float) -> None:
        self._host = host
        self.started = started
        self.ended: float | None = None
        self.phase = Phase.RUNNING
        self._value: Any = None
        self.error: BaseException | None = None

    @property
    def name(self) -> str:
        return self._host.name

    @property
    def mode(self) -> str:
        return self._host.mode

    @property
    def url(self) -> str | None:
        """Where to see the run in the UI (``None`` for local runs)."""
        return None

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def wait(self) -> Run:
        """Block until the run finishes (a local run already has)."""
        return self

    def outputs(self) -> Any:
        """The root task's return value; raises the task's exception if the run failed."""
        if self.error is not None:
            raise self.error
        return self._value

    def actions(self) -> list[ActionRecord]:
        """Every action of the run, in the order the calls were made."""
        return list(self._host.records)

    def traces(self) -> list[TraceRecord]:
        return list(self._host.traces)

    def __repr__(self) -> str:
        return f"<Run {self.name} {self.phase}>"


class RunContext:
    """Options for runs started from it; see :func:`with_runcontext`."""

    def __init__(
        self,
        mode: Mode | None = None,
        *,
        name: str | None = None,
        overwrite_cache: bool = False,
        env_vars: Mapping[str, str] | None = None,
        project: str | None = None,
        domain: str | None = None,
    ) -> None:
        if mode not in (None, "local", "remote"):
            raise ConfigError(f"run mode must be 'local' or 'remote', got {mode!r}")
        self.mode = mode
        self.name = name
        self.overwrite_cache = overwrite_cache
        self.env_vars = dict(env_vars or {})
        self.project = project
        self.domain = domain
        self._host: LocalRun | None = None

    def started_actions(self) -> int:
        """How many actions the latest run from this context has started so far."""
        return 0 if self._host is None else len(self._host.records)

    def _resolve_mode(self, settings: Settings) -> Mode:
        # Remote by default only after an explicit init with a server configured: a config
        # file left by `loom server start` must not silently send scripts' runs away.
        return self.mode or ("remote" if _settings is not None and settings.endpoint else "local")

    async def submit_remote(self, task: TaskTemplate[Any, Any], *args: Any, **inputs: Any) -> Any:
        """Create the run on the control plane and return its handle without waiting."""
        from ._run_remote import submit

        settings = current_settings().with_overrides(project=self.project, domain=self.domain)
        return await submit(
            task,
            args,
            inputs,
            settings,
            name=self.name,
            env_vars=self.env_vars,
            overwrite_cache=self.overwrite_cache,
        )

    async def execute(self, task: TaskTemplate[Any, Any], *args: Any, **inputs: Any) -> Run:
        """Run ``task`` and return its finished handle; task failures are kept, not raised."""
        from ._controller import LocalRun
        from ._task import TaskTemplate
        from .wire import new_run_name

        if not isinstance(task, TaskTemplate):
            raise LoomError(f"loom.run needs a task (decorated with @env.task), got {task!r}")
        settings = current_settings().with_overrides(project=self.project, domain=self.domain)
        if self._resolve_mode(settings) == "remote":
            raise LoomError("execute() runs locally; use run() or submit_remote() for remote runs")
        host = LocalRun(
            self.name or new_run_name(),
            settings,
            overwrite_cache=self.overwrite_cache,
            env_vars=self.env_vars,
        )
        self._host = host
        handle = Run(host, time.time())
        try:
            handle._value = await host.execute_root(task, args, inputs)
            handle.phase = Phase.SUCCEEDED
        except Exception as e:
            handle.error = e
            handle.phase = Phase.FAILED
        finally:
            handle.ended = time.time()
            host.close()
        return handle

    async def run_aio(self, task: TaskTemplate[Any, Any], *args: Any, **inputs: Any) -> Any:
        """Async form of :meth:`run`."""
        from ._task import TaskTemplate

        if not isinstance(task, TaskTemplate):
            raise LoomError(f"loom.run needs a task (decorated with @env.task), got {task!r}")
        settings = current_settings().with_overrides(project=self.project, domain=self.domain)
        if self._resolve_mode(settings) == "remote":
            return await self.submit_remote(task, *args, **inputs)
        handle = await self.execute(task, *args, **inputs)
        if handle.error is not None:
            raise handle.error
        return handle

    def run(self, task: TaskTemplate[Any, Any], *args: Any, **inputs: Any) -> Any:
        """Run ``task`` with ``inputs``.

        Locally the run completes before this returns and a failure raises the task's own
        exception. Remotely (``mode="remote"``, or an endpoint configured) it returns a
        :class:`~loom._run_remote.RemoteRun` at once: ``.wait()``, then ``.outputs()``.
        """
        from ._sync import run_sync

        return run_sync(self.run_aio(task, *args, **inputs))


def with_runcontext(
    mode: Mode | None = None,
    *,
    name: str | None = None,
    overwrite_cache: bool = False,
    env_vars: Mapping[str, str] | None = None,
    project: str | None = None,
    domain: str | None = None,
) -> RunContext:
    """Options for a run: ``loom.with_runcontext(mode="local", name="x").run(task, a=1)``.

    ``env_vars`` apply to every task of the run and win over the environments' own values.
    ``overwrite_cache`` recomputes cached tasks and replaces their entries.
    """
    return RunContext(
        mode,
        name=name,
        overwrite_cache=overwrite_cache,
        env_vars=env_vars,
        project=project,
        domain=domain,
    )


def run(task: TaskTemplate[Any, Any], *args: Any, **inputs: Any) -> Any:
    """Run ``task`` with default options and return its handle (``.outputs()`` is the result)."""
    return RunContext().run(task, *args, **inputs)


async def run_aio(task: TaskTemplate[Any, Any], *args: Any, **inputs: Any) -> Any:
    """Async form of :func:`run`, for code that already runs an event loop."""
    return await RunContext().run_aio(task, *args, **inputs)


run.aio = run_aio  # type: ignore[attr-defined]
