"""The remote controller: inside an action process, every task call becomes a child action
submitted to the control plane, and the call waits for its result."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import threading
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import wire
from .._context import TaskContext, current_group
from .._execution import ActionExecution, cache_key, execute_async, execute_sync
from .._resources import _cpu_value, parse_memory
from .._settings import Settings
from .._sync import run_sync
from ..errors import LoomError, RemoteTaskError, TaskTimeoutError
from ..remote import Client
from ..remote._bundle import task_location
from ._secrets import LocalSecrets

if TYPE_CHECKING:
    import concurrent.futures

    from .._task import TaskTemplate
    from ..types import BlobStore


def task_spec(task: TaskTemplate[Any, Any], encoded_inputs: Mapping[str, Any]) -> wire.TaskSpec:
    """The wire description of a task call: where the task lives and how to run it."""
    _, module, attr = task_location(task)
    r = task.resources
    resources = wire.ResourceSpec()
    if r is not None:
        cpu = r.cpu[0] if isinstance(r.cpu, tuple) else r.cpu
        memory = r.memory[0] if isinstance(r.memory, tuple) else r.memory
        resources = wire.ResourceSpec(
            cpu=None if cpu is None else _cpu_value(cpu),
            memory_bytes=None if memory is None else parse_memory(memory),
            gpu=None if r.gpu is None else int(r.gpu),
            disk_bytes=None if r.disk is None else parse_memory(r.disk),
        )
    retry = task.retries
    reuse = None
    if task.reusable is not None:
        low, high = (
            task.reusable.replicas
            if isinstance(task.reusable.replicas, tuple)
            else (task.reusable.replicas,) * 2
        )
        idle = task.reusable.idle_ttl
        reuse = wire.ReuseSpec(
            min_replicas=low,
            max_replicas=high,
            concurrency=task.reusable.concurrency,
            idle_ttl_s=None if idle is None else _seconds(idle),
        )
    return wire.TaskSpec(
        module=module,
        attr=attr,
        name=task.name,
        environment=task.env.name,
        resources=resources,
        env_vars=dict(task.env_vars),
        secrets=[wire.SecretRef(key=s.key, env_var=s.env_var, mount=s.mount) for s in task.secrets],
        retries=wire.RetrySpec(
            count=retry.count,
            backoff_s=retry.backoff_seconds,
            backoff_factor=retry.backoff_factor,
            max_backoff_s=retry.max_backoff_seconds,
        ),
        timeout_s=None if task.timeout is None else task.timeout.runtime_seconds,
        cache=(
            wire.CacheSpec(key=cache_key(task, encoded_inputs), serialize=task.cache.serialize)
            if task.cache.enabled
            else None
        ),
        reuse=reuse,
        interactive=_interactive_spec(task),
    )


def _interactive_spec(task: TaskTemplate[Any, Any]) -> wire.InteractiveSpec | None:
    """What ``@vscode``/``@jupyter`` recorded, for the server (hooks stay in the code)."""
    options = task.interactive
    if options is None:
        return None
    return wire.InteractiveSpec(
        kind=options.kind,
        max_idle_seconds=options.max_idle_seconds,
        run_task_first=options.run_task_first,
        notebook_dir=options.notebook_dir,
    )


def error_info(error: BaseException, kind: str = "user") -> wire.ErrorInfo:
    """A portable description of an exception, with the exception itself when it pickles."""
    import cloudpickle

    cls = type(error)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    try:
        pickled: str | None = base64.b64encode(cloudpickle.dumps(error)).decode()
    except Exception:
        pickled = None
    return wire.ErrorInfo(
        type=name,
        message=str(error),
        traceback="".join(traceback.format_exception(error)),
        kind=kind,  # type: ignore[arg-type]
        pickled=pickled,
    )


def rebuild_error(info: wire.ErrorInfo | None, action: str) -> BaseException:
    """The exception a failed child raised, as the same type when it can be rebuilt."""
    if info is None:
        return RemoteTaskError("UnknownError", f"action {action} failed without an error report")
    error: BaseException | None = None
    if info.pickled:
        import cloudpickle

        try:
            error = cloudpickle.loads(base64.b64decode(info.pickled))
        except Exception:
            error = None
    if not isinstance(error, BaseException) and info.kind == "timeout":
        error = TaskTimeoutError(info.message)  # the server ended it: the same type as locally
    if not isinstance(error, BaseException):
        error = RemoteTaskError(info.type, info.message, info.traceback)
    if info.traceback:
        error.add_note(f"[loom] remote traceback of action {action}:\n{info.traceback.rstrip()}")
    return error


class RemoteRun:
    """Controller and host for the one action this process executes."""

    mode = "remote"

    def __init__(self, client: Client, spec: wire.ActionSpec, settings: Settings) -> None:
        self.client = client
        self.spec = spec
        self.settings = settings
        self.name = spec.run
        self.project = spec.project
        self.domain = spec.domain
        self.overwrite_cache = spec.overwrite_cache
        self.env_vars: dict[str, str] = {}  # applied to the process environment at start
        self.inflight: dict[str, concurrent.futures.Future[None]] = {}
        self.inflight_lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._calls = itertools.count()
        self._secrets = LocalSecrets(settings)

    # -- executing this process's own action --------------------------------------------------

    async def execute(self, task: TaskTemplate[Any, Any], inputs: dict[str, Any]) -> Any:
        """Run one attempt; retries, timeouts and caching are the server's business."""
        self.loop = asyncio.get_running_loop()
        once = task.override(retries=0, timeout=None, cache="disable", env_vars={})
        ex = ActionExecution(self, once, self.spec.action, None, (), inputs)
        if task.is_async:
            return await execute_async(ex)
        return await asyncio.to_thread(execute_sync, ex)

    # -- child calls --------------------------------------------------------------------------

    def call(
        self,
        task: TaskTemplate[Any, Any],
        parent: TaskContext | None,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        make = self._prepare(task, parent, args, kwargs)
        return make() if task.is_async else self._block(make)

    def call_aio(
        self,
        task: TaskTemplate[Any, Any],
        parent: TaskContext | None,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        return self._prepare(task, parent, args, kwargs)()

    def _prepare(
        self,
        task: TaskTemplate[Any, Any],
        parent: TaskContext | None,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Callable[[], Coroutine[Any, Any, Any]]:
        # Binding and naming happen at call time, in call order, so names are deterministic.
        inputs = task.interface.bind(args, kwargs)
        encoded = task.interface.encode_inputs(inputs)
        size = len(json.dumps(encoded))
        if size > wire.MAX_INLINE_BYTES:
            raise LoomError(
                f"inputs of {task.name} are {size} bytes encoded, over the limit of "
                f"{wire.MAX_INLINE_BYTES}; pass large data as loom.io.File or DataFrame"
            )
        parent_name = parent.action if parent is not None else self.spec.action
        seq = next(self._calls)
        digest = hashlib.sha256(
            json.dumps([parent_name, task.name, encoded, seq], sort_keys=True).encode()
        ).hexdigest()[:16]
        body = wire.ActionCreate(
            name=f"{_slug(task.short_name)}-{digest}",
            parent=parent_name,
            group=list(current_group.get()),
            task=task_spec(task, encoded),
            inputs=encoded,
        )
        return lambda: self._run_child(task, body)

    async def _run_child(self, task: TaskTemplate[Any, Any], body: wire.ActionCreate) -> Any:
        async with self._session() as client:
            info = await client.create_action(self.name, body)
            if info.phase not in wire.TERMINAL_PHASES:
                info = await client.wait_action(self.name, body.name)
            if info.phase != "SUCCEEDED":
                raise rebuild_error(info.error, body.name)
            outputs = await client.get_outputs(self.name, body.name)
        return task.interface.output.decode(outputs.value, None)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Client]:
        """The shared client on the main loop; a short-lived one on any other loop."""
        if asyncio.get_running_loop() is self.loop:
            yield self.client
            return
        async with Client(self.client.endpoint, self.client._api_key) as client:
            yield client

    def _block(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Wait for a child from sync code, without blocking the loop the child needs."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is None and self.loop is not None and self.loop.is_running():
            return asyncio.run_coroutine_threadsafe(make(), self.loop).result()
        return run_sync(make())  # on the main loop's thread: a private loop in a helper thread

    # -- host services ------------------------------------------------------------------------

    @property
    def blobs(self) -> BlobStore:
        raise LoomError("remote actions do not use the local cache")

    def cache_get(self, key: str) -> Any | None:
        return None

    def cache_put(self, key: str, task: str, version: str, value: Any) -> None:
        return None

    def resolve_secrets(
        self, task: TaskTemplate[Any, Any]
    ) -> tuple[dict[str, str], dict[str, Path], dict[str, str]]:
        values = {s.key: self._secrets.get(s.key) for s in task.secrets}
        environ = {s.env_var: values[s.key] for s in task.secrets if s.env_var}
        return values, {}, environ


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _slug(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "-" for c in name).strip("-._")
    return (cleaned or "task")[:60]
