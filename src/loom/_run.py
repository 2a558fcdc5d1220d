"""Starting runs: ``loom.run``, ``loom.with_runcontext``, ``loom.init`` and the ``Run`` handle."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
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
    *,
    root_dir: str | os.PathLike[str] | None = None,
    log_level: int | str | None = None,
    **flyte_options: Any,
) -> None:
    """Configure loom for this process; arguments win over ``LOOM_*`` variables and the file.

    ``root_dir`` is the top of the source tree that remote runs ship (default: the first
    directory above the task's file that is not a package); ``log_level`` sets the level of
    loom's logger (``loom.logger``). The other options of Flyte 2's ``init`` (``org``,
    ``storage``, ``images``, ``insecure``, ...) are accepted so Flyte programs run unchanged;
    see :data:`FLYTE_INIT_OPTIONS` for what loom does with each.
    """
    from ._settings import Settings, remember_init

    global _settings
    _check_flyte_options("init", flyte_options)
    _apply_log_level(log_level)
    _settings = Settings.load(
        config,
        project=project,
        domain=domain,
        endpoint=endpoint,
        api_key=api_key,
        root_dir=_root_dir(root_dir),
    )
    remember_init(_settings)


def init_from_config(
    path_or_config: str | os.PathLike[str] | None = None,
    *,
    root_dir: str | os.PathLike[str] | None = None,
    log_level: int | str | None = None,
    project: str | None = None,
    domain: str | None = None,
    **flyte_options: Any,
) -> None:
    """Configure loom from a config file (default: ``LOOM_CONFIG`` or ``~/.loom/config.yaml``).

    An explicitly named file must exist; a missing default file means local defaults. The
    keyword arguments are those of :func:`init`.
    """
    from ._settings import Settings, remember_init

    global _settings
    _check_flyte_options("init_from_config", flyte_options)
    _apply_log_level(log_level)
    _settings = Settings.load(
        path_or_config, project=project, domain=domain, root_dir=_root_dir(root_dir)
    )
    remember_init(_settings)


#: Flyte 2 ``init``/``init_from_config`` options loom accepts and has no use for: what each
#: would configure is the server's business in loom (storage, images, authentication), or
#: does not exist (organisations).
FLYTE_INIT_OPTIONS = frozenset(
    {
        "org", "storage", "images", "image_builder", "image_registry", "insecure",
        "insecure_skip_verify", "ca_cert_file_path", "auth_type", "command", "proxy_command",
        "client_id", "client_credentials_secret", "auth_client_config", "rpc_retries",
        "http_proxy_url", "disable_keyring", "batch_size", "log_format", "reset_root_logger",
        "user_log_level", "headless", "source_config_path", "sync_local_sys_paths",
        "load_plugin_type_transformers", "local_persistence", "scopes",
    }
)  # fmt: skip


def _check_flyte_options(where: str, options: Mapping[str, Any]) -> None:
    unknown = sorted(set(options) - FLYTE_INIT_OPTIONS)
    if unknown:
        raise TypeError(f"{where}() got unexpected keyword arguments: {', '.join(unknown)}")


def _root_dir(root_dir: str | os.PathLike[str] | None) -> Path | None:
    if root_dir is None:
        return None
    path = Path(root_dir).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"root_dir {root_dir} is not a directory")
    return path


def _apply_log_level(level: int | str | None) -> None:
    import logging

    if level is None:
        return
    if isinstance(level, str):
        number = logging.getLevelName(level.upper())
        if not isinstance(number, int):
            raise ConfigError(f"log_level {level!r} is not a logging level (DEBUG, INFO, ...)")
        level = number
    logging.getLogger("loom").setLevel(level)


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
        """The root task's return value; raises the task's exception if the run failed.

        Integer indexing is Flyte 2's, whose ``outputs()`` is a tuple of outputs:
        ``run.outputs()[0]`` is a single-output task's value (see
        :class:`loom.remote.ActionOutputs`; ``.value`` is the plain value)."""
        from .remote._outputs import outputs_view

        if self.error is not None:
            raise self.error
        return outputs_view(self._value)

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
        custom_context: Mapping[str, str] | None = None,
        debug: bool = False,
        log_level: int | str | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        **flyte_options: Any,
    ) -> None:
        if mode not in (None, "local", "remote"):
            raise ConfigError(f"run mode must be 'local' or 'remote', got {mode!r}")
        unknown = sorted(set(flyte_options) - FLYTE_RUN_OPTIONS)
        if unknown:
            raise TypeError(f"with_runcontext() got unexpected keyword arguments: {unknown}")
        for key, value in (custom_context or {}).items():
            if not isinstance(value, str):
                raise ConfigError(f"custom_context values must be str, got {key}={value!r}")
        _apply_log_level(log_level)
        self.mode = mode
        self.name = name
        self.overwrite_cache = overwrite_cache
        self.env_vars = dict(env_vars or {})
        self.project = project
        self.domain = domain
        self.custom_context = dict(custom_context or {})
        self.debug = debug
        self.labels = dict(labels or {})
        self.annotations = dict(annotations or {})
        self._host: LocalRun | None = None

    def _custom_context(self) -> dict[str, str]:
        from ._context import current_custom_context

        return {**current_custom_context(), **self.custom_context}

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
            custom_context=self._custom_context(),
            debug=self.debug,
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
            custom_context=self._custom_context(),
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


#: Options of Flyte 2's ``with_runcontext`` that loom accepts so Flyte programs run unchanged,
#: and has no use for (packaging, queues, service accounts and storage are the server's).
FLYTE_RUN_OPTIONS = frozenset(
    {
        "service_account", "version", "copy_style", "dry_run", "copy_bundle_to",
        "interactive_mode", "raw_data_path", "run_base_dir", "log_format", "user_log_level",
        "reset_root_logger", "disable_run_cache", "queue", "max_action_concurrency",
        "notifications", "cache_lookup_scope", "preserve_original_types", "interruptible",
        "tracked", "tracked_strict", "run_start_time",
    }
)  # fmt: skip


def with_runcontext(
    mode: Mode | None = None,
    *,
    name: str | None = None,
    overwrite_cache: bool = False,
    env_vars: Mapping[str, str] | None = None,
    project: str | None = None,
    domain: str | None = None,
    custom_context: Mapping[str, str] | None = None,
    debug: bool = False,
    log_level: int | str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    **flyte_options: Any,
) -> RunContext:
    """Options for a run: ``loom.with_runcontext(mode="local", name="x").run(task, a=1)``.

    ``env_vars`` apply to every task of the run and win over the environments' own values.
    ``overwrite_cache`` recomputes cached tasks and replaces their entries.
    ``custom_context`` pairs reach every task of the run as ``ctx().custom_context``.
    ``debug`` (remote runs) opens the root task in a VS Code session.
    ``log_level`` sets the level of loom's logger. Flyte 2's other options are accepted and
    ignored (see :data:`FLYTE_RUN_OPTIONS`).
    """
    return RunContext(
        mode,
        name=name,
        overwrite_cache=overwrite_cache,
        env_vars=env_vars,
        project=project,
        domain=domain,
        custom_context=custom_context,
        debug=debug,
        log_level=log_level,
        labels=labels,
        annotations=annotations,
        **flyte_options,
    )


def run(task: TaskTemplate[Any, Any], *args: Any, **inputs: Any) -> Any:
    """Run ``task`` with default options and return its handle (``.outputs()`` is the result)."""
    return RunContext().run(task, *args, **inputs)


async def run_aio(task: TaskTemplate[Any, Any], *args: Any, **inputs: Any) -> Any:
    """Async form of :func:`run`, for code that already runs an event loop."""
    return await RunContext().run_aio(task, *args, **inputs)


run.aio = run_aio  # type: ignore[attr-defined]


# -- Flyte 2's other ways to initialise, mapped onto ``init`` ---------------------------------


def init_from_api_key(
    api_key: str | None = None,
    project: str | None = None,
    domain: str | None = None,
    root_dir: str | os.PathLike[str] | None = None,
    log_level: int | str | None = None,
    **flyte_options: Any,
) -> None:
    """Flyte 2's ``init_from_api_key``: :func:`init` with a loom API key (the server's
    endpoint comes from ``LOOM_ENDPOINT`` or the config file: loom keys do not carry it).
    ``api_key=None`` uses the configured key."""
    init(project, domain, api_key=api_key, root_dir=root_dir, log_level=log_level, **flyte_options)


def init_passthrough(
    endpoint: str | None = None,
    org: str | None = None,
    project: str | None = None,
    domain: str | None = None,
    insecure: bool = False,
) -> dict[str, Any]:
    """Flyte 2's ``init_passthrough``: :func:`init` with the given endpoint, authenticating
    with the configured API key (``org`` and ``insecure`` are accepted and ignored). Returns
    what it configured."""
    init(project, domain, endpoint=endpoint)
    return _initialised()


def init_in_cluster(
    org: str | None = None,
    project: str | None = None,
    domain: str | None = None,
    api_key: str | None = None,
    endpoint: str | None = None,
    insecure: bool = False,
) -> dict[str, Any]:
    """Flyte 2's ``init_in_cluster``, for code running inside a task: :func:`init` with the
    arguments given (a loom runtime is configured already, so none are needed). Returns what it
    configured."""
    init(project, domain, endpoint=endpoint, api_key=api_key)
    return _initialised()


def _initialised() -> dict[str, Any]:
    settings = current_settings()
    return {"endpoint": settings.endpoint, "project": settings.project, "domain": settings.domain}


async def _init_from_api_key_aio(*args: Any, **kwargs: Any) -> None:
    init_from_api_key(*args, **kwargs)


async def _init_passthrough_aio(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return init_passthrough(*args, **kwargs)


async def _init_in_cluster_aio(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return init_in_cluster(*args, **kwargs)


async def _init_aio(*args: Any, **kwargs: Any) -> None:
    init(*args, **kwargs)


async def _init_from_config_aio(*args: Any, **kwargs: Any) -> None:
    init_from_config(*args, **kwargs)


# Flyte 2's functions are also awaitable as ``.aio``
init.aio = _init_aio  # type: ignore[attr-defined]
init_from_config.aio = _init_from_config_aio  # type: ignore[attr-defined]
init_from_api_key.aio = _init_from_api_key_aio  # type: ignore[attr-defined]
init_passthrough.aio = _init_passthrough_aio  # type: ignore[attr-defined]
init_in_cluster.aio = _init_in_cluster_aio  # type: ignore[attr-defined]
