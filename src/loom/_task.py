"""``TaskTemplate``: a function turned into a task by ``@env.task``."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar

from ._cache import Cache, CacheBehavior
from ._context import current_action
from ._resources import Resources
from ._reuse import ReusePolicy
from ._secret import Secret
from ._timeout import RetryStrategy, Timeout
from .errors import TaskDefinitionError

if TYPE_CHECKING:
    from ._environment import TaskEnvironment
    from .types import Interface

P = ParamSpec("P")
R = TypeVar("R")

_UNSET: Any = object()

#: Flyte 2 task options loom accepts and records (in ``TaskTemplate.options``) without effect:
#: Kubernetes placement (``pod_template``, ``service_account``, ``queue``, ``interruptible``),
#: UI links, artifacts, triggers (deployed schedules) and custom task resolvers.
FLYTE_TASK_OPTIONS = frozenset(
    {
        "pod_template", "service_account", "queue", "interruptible", "links", "triggers",
        "task_resolver", "produces_artifacts", "plugin_config",
    }
)  # fmt: skip


def check_task_options(where: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` if they are all Flyte 2 options loom accepts, else a clear ``TypeError``."""
    unknown = sorted(set(options) - FLYTE_TASK_OPTIONS)
    if unknown:
        raise TypeError(
            f"{where} got unexpected keyword arguments: {', '.join(unknown)} (loom accepts "
            f"Flyte 2's {', '.join(sorted(FLYTE_TASK_OPTIONS))} besides its own)"
        )
    return options


def _inline_limit(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TaskDefinitionError(
            f"max_inline_io_bytes must be a positive number of bytes, got {value!r}"
        )
    return value


_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect on the import path


def is_coroutine_function(func: Any) -> bool:
    """``inspect.iscoroutinefunction`` for plain functions, cheaply."""
    code = getattr(func, "__code__", None)
    if code is not None and not hasattr(func, "__wrapped__"):
        return bool(code.co_flags & _CO_COROUTINE)
    import inspect

    return inspect.iscoroutinefunction(func)


class TaskTemplate(Generic[P, R]):
    """A task: call it like the function it wraps.

    Outside a run the call is a plain function call. Inside a run every call becomes an action
    of the run, with retries, timeouts, caching, secrets and env vars applied.
    """

    def __init__(
        self,
        func: Callable[P, R],
        env: TaskEnvironment,
        *,
        cache: Cache | CacheBehavior | bool | None = "disable",
        retries: int | RetryStrategy = 0,
        timeout: Timeout | float | None = None,
        report: bool = False,
        short_name: str | None = None,
        resources: Resources | None = _UNSET,
        env_vars: dict[str, str] | None = _UNSET,
        secrets: Iterable[Secret] | None = _UNSET,
        reusable: ReusePolicy | None = _UNSET,
        max_inline_io_bytes: int | None = None,
        entrypoint: bool = False,
        docs: Any = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.func = func
        self.env = env
        self.is_async = is_coroutine_function(func)
        self.name = f"{env.name}.{func.__name__}"
        self.short_name = short_name or func.__name__
        self.cache = Cache.coerce(cache)
        self.retries = RetryStrategy.coerce(retries)
        self.timeout = Timeout.coerce(timeout)
        self.report = report
        self.resources = env.resources if resources is _UNSET else resources
        self.env_vars: dict[str, str] = dict(env.env_vars if env_vars is _UNSET else env_vars or {})  # type: ignore[arg-type]
        self.secrets: tuple[Secret, ...] = tuple(
            env.secrets if secrets is _UNSET else secrets or ()  # type: ignore[arg-type]
        )
        self.reusable = env.reusable if reusable is _UNSET else reusable
        #: the most bytes its encoded inputs, and its encoded output, may take (``None``: the
        #: server's limit, ``loom.wire.MAX_INLINE_BYTES``); files, directories and data frames
        #: count by reference, not by content
        self.max_inline_io_bytes = _inline_limit(max_inline_io_bytes)
        #: Flyte 2's hint that this task is where a workflow starts (shown, not enforced)
        self.entrypoint = bool(entrypoint)
        self.docs = docs
        #: Flyte 2 options accepted without effect (see ``FLYTE_TASK_OPTIONS``)
        self.options: dict[str, Any] = dict(options or {})
        #: set by ``@loom.interactive.vscode``/``jupyter`` (above or below ``@env.task``)
        self.interactive: Any = getattr(func, "__loom_interactive__", None)
        self._interface: Interface | None = None
        self._cache_version: str | None = None
        functools.update_wrapper(self, func)

    # -- pickling -----------------------------------------------------------------------------

    def __reduce_ex__(self, protocol: Any) -> Any:
        """A task defined at module level pickles by reference (module and name), so a task
        passed as an input is the same task in the receiving process, where its code is the
        run's bundle; any other (an override) pickles by value."""
        from .errors import BundleError
        from .remote._bundle import task_location

        try:
            _, module, attr = task_location(self)
        except BundleError:
            return super().__reduce_ex__(protocol)
        return (_task_by_reference, (module, attr))

    # -- calling ------------------------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        parent = current_action.get()
        if parent is None:
            return self.func(*args, **kwargs)
        return parent.run.call(self, parent, args, kwargs)  # type: ignore[no-any-return]

    def aio(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[Any]:
        """Call the task and get an awaitable, whether the function is sync or async.

        Sync tasks run in worker threads, so ``asyncio.gather`` over ``t.aio(...)`` runs a
        fan-out of sync tasks concurrently.
        """
        parent = current_action.get()
        if parent is None:
            if self.is_async:
                return self.func(*args, **kwargs)  # type: ignore[return-value]
            import asyncio

            return asyncio.to_thread(self.func, *args, **kwargs)
        return parent.run.call_aio(self, parent, args, kwargs)

    def forward(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the underlying function directly, never as an action."""
        return self.func(*args, **kwargs)

    # -- configuration ------------------------------------------------------------------------

    def override(
        self,
        *,
        cache: Cache | CacheBehavior | bool | None = _UNSET,
        retries: int | RetryStrategy | None = _UNSET,
        timeout: Timeout | float | None = _UNSET,
        report: bool = _UNSET,
        short_name: str | None = _UNSET,
        resources: Resources | None = _UNSET,
        env_vars: dict[str, str] | None = _UNSET,
        secrets: Iterable[Secret] | None = _UNSET,
        reusable: ReusePolicy | Literal["off"] | None = _UNSET,
        max_inline_io_bytes: int | None = _UNSET,
        entrypoint: bool = _UNSET,
        **flyte_options: Any,
    ) -> TaskTemplate[P, R]:
        """A copy of the task with some settings replaced.

        Every setting can be set back to zero or ``None`` (``override(retries=0)``,
        ``override(timeout=None)``, ``override(cache="disable")``): only settings you pass change.
        ``reusable="off"`` (Flyte 2's spelling) is ``reusable=None``. Flyte 2's other options
        (``FLYTE_TASK_OPTIONS``) are accepted and recorded without effect.
        """
        check_task_options("override()", flyte_options)
        given = {
            k: v
            for k, v in locals().items()
            if k not in ("self", "flyte_options") and v is not _UNSET
        }
        if given.get("reusable") == "off":
            given["reusable"] = None
        current: dict[str, Any] = {
            "cache": self.cache,
            "retries": self.retries,
            "timeout": self.timeout,
            "report": self.report,
            "short_name": self.short_name,
            "resources": self.resources,
            "env_vars": self.env_vars,
            "secrets": self.secrets,
            "reusable": self.reusable,
            "max_inline_io_bytes": self.max_inline_io_bytes,
            "entrypoint": self.entrypoint,
            "docs": self.docs,
            "options": {**self.options, **flyte_options},
        }
        if "retries" in given and given["retries"] is None:
            given["retries"] = 0
        current.update(given)
        copy: TaskTemplate[P, R] = TaskTemplate(self.func, self.env, **current)
        copy._interface = self._interface
        copy.interactive = self.interactive
        return copy

    # -- derived facts, computed once ---------------------------------------------------------

    @property
    def interface(self) -> Interface:
        """Typed inputs and output, read from the signature on first use."""
        if self._interface is None:
            from .types import Interface

            self._interface = Interface.of(self.func, self.name)
        return self._interface

    @property
    def cache_version(self) -> str:
        """``version_override`` or, for ``"auto"``, a digest of the function's source."""
        if self._cache_version is None:
            import hashlib
            import inspect
            import textwrap

            if self.cache.version_override:
                version = self.cache.version_override
            else:
                try:
                    source = textwrap.dedent(inspect.getsource(self.func)).encode()
                except (OSError, TypeError):  # no source (REPL, exec): fall back to bytecode
                    source = self.func.__code__.co_code
                version = hashlib.sha256(source).hexdigest()[:16]
            self._cache_version = version + (f"+{self.cache.salt}" if self.cache.salt else "")
        return self._cache_version

    def __repr__(self) -> str:
        kind = "async task" if self.is_async else "task"
        return f"<{kind} {self.name}>"

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        raise TaskDefinitionError(f"task {self.name} cannot be a method; define it at module level")


def _task_by_reference(module: str, attr: str) -> TaskTemplate[Any, Any]:
    """The task ``attr`` of ``module``: the run's module, or the script run as ``__main__``
    (a task pickled by the client's script and read back in the same process)."""
    import importlib
    import sys

    found = sys.modules.get(module)
    if found is None:
        main = sys.modules.get("__main__")
        main_file = getattr(main, "__file__", None) or ""
        stem = main_file.rsplit("/", 1)[-1].removesuffix(".py")
        found = main if stem == module.rsplit(".", 1)[-1] and hasattr(main, attr) else None
    if found is None:
        found = importlib.import_module(module)
    task = getattr(found, attr)
    if not isinstance(task, TaskTemplate):
        raise TypeError(f"{module}.{attr} is not a loom task")
    return task
