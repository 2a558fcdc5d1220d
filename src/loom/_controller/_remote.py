"""The remote controller: inside an action process, every task call becomes a child action
submitted to the control plane, and the call waits for its result."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import wire
from .._context import TaskContext, current_custom_context, current_group
from .._execution import (
    ActionExecution,
    cache_key,
    check_inline_size,
    execute_async,
    execute_sync,
)
from .._image import AUTO_IMAGE, Image, current_python
from .._resources import _cpu_value, gpu_count, parse_memory
from .._settings import Settings
from .._sync import run_sync
from ..errors import (
    DeadlineExceededError,
    LoomError,
    MaxQueuedTimeExceededError,
    MaxRuntimeExceededError,
    MissingSecretError,
    OOMError,
    RemoteTaskError,
    TaskTimeoutError,
    as_user_error,
)
from ..io._remote import remote_store
from ..remote import Client
from ..remote._bundle import task_location
from ..remote._client import item_error
from ..wire import ErrorKind, Phase
from ._checkpoints import RemoteCheckpoints

log = logging.getLogger("loom")

if TYPE_CHECKING:
    import concurrent.futures

    from .._task import TaskTemplate
    from ..types import BlobStore


def task_spec(
    task: TaskTemplate[Any, Any], encoded_inputs: Mapping[str, Any], root_dir: Path | None = None
) -> wire.TaskSpec:
    """The wire description of a task call: where the task lives (``root_dir``: see
    :func:`~loom.remote.task_location`) and how to run it."""
    _, module, attr = task_location(task, root_dir)
    r = task.resources
    resources = wire.ResourceSpec()
    if r is not None:
        cpu = r.cpu[0] if isinstance(r.cpu, tuple) else r.cpu
        memory = r.memory[0] if isinstance(r.memory, tuple) else r.memory
        resources = wire.ResourceSpec(
            cpu=None if cpu is None else _cpu_value(cpu),
            memory_bytes=None if memory is None else parse_memory(memory),
            gpu=None if r.gpu is None else gpu_count(r.gpu),
            disk_bytes=None if r.disk is None else parse_memory(r.disk),
        )
    retry = task.retries
    timeout = task.timeout
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
        secrets=[
            wire.SecretRef(
                key=s.key, env_var=s.env_var, mount=None if s.mount is None else str(s.mount)
            )
            for s in task.secrets
        ],
        retries=wire.RetrySpec(
            count=retry.count,
            # the rule caps both anyway; an infinite one (no cap) would not be JSON
            backoff_s=min(retry.backoff_seconds, wire.MAX_RETRY_BACKOFF_S),
            backoff_factor=retry.backoff_factor,
            max_backoff_s=min(retry.max_backoff_seconds, wire.MAX_RETRY_BACKOFF_S),
        ),
        timeout_s=None if timeout is None else timeout.runtime_seconds,
        max_queued_s=None if timeout is None else timeout.queued_seconds,
        deadline_s=None if timeout is None else timeout.deadline_seconds,
        cache=(
            wire.CacheSpec(key=cache_key(task, encoded_inputs), serialize=task.cache.serialize)
            if task.cache.enabled
            else None
        ),
        reuse=reuse,
        interactive=_interactive_spec(task),
        image=image_spec(task.env.image),
    )


def image_spec(image: Image | str | None) -> wire.ImageSpec | None:
    """What the server must build and set for ``image`` (``None``: the runtime's own
    environment will do). A plain string is a container image reference, as in Flyte 2."""
    if image is None or image == AUTO_IMAGE:
        return None
    if isinstance(image, str):
        return wire.ImageSpec(python=current_python(), base=image)
    spec = wire.ImageSpec(
        python=image.python_version,
        packages=list(image.pip_packages),
        requirements=[
            wire.RequirementsFile(name=f.name, content=f.content, project=f.project)
            for f in image.requirement_files
        ],
        index_url=image.index_url,
        extra_index_urls=list(image.extra_index_urls),
        pre=image.pre,
        env_vars=dict(image.env_vars),
        base=image.base,
        apt_packages=list(image.apt_packages),
        commands=list(image.commands),
    )
    plain = wire.ImageSpec(python=current_python())
    return None if spec == plain else spec


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


_TIMEOUT_ERRORS: dict[str, type[TaskTimeoutError]] = {
    cls.__name__: cls
    for cls in (MaxRuntimeExceededError, MaxQueuedTimeExceededError, DeadlineExceededError)
}


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
    if not isinstance(error, BaseException) and info.kind == ErrorKind.TIMEOUT:
        # the server ended it: the same type as locally, by the bound that fired
        error = _TIMEOUT_ERRORS.get(info.type, TaskTimeoutError)(info.message)
    if not isinstance(error, BaseException) and info.kind == ErrorKind.OOM:
        error = OOMError(info.message)
    if not isinstance(error, BaseException):
        error = RemoteTaskError(info.type, info.message, info.traceback)
    error = as_user_error(error)
    if info.traceback:
        error.add_note(f"[loom] remote traceback of action {action}:\n{info.traceback.rstrip()}")
    return error


class RemoteRun:
    """Controller and host for the one action this process executes."""

    mode = "remote"

    def __init__(
        self,
        client: Client,
        spec: wire.ActionSpec,
        settings: Settings,
        secrets: wire.SecretValues | None = None,
    ) -> None:
        """``secrets``: the values of the secrets the action's task declares, fetched by the
        runtime before it starts (``None``: it declares none)."""
        self.client = client
        self.spec = spec
        self.settings = settings
        self.name = spec.run
        self.started_at = (
            spec.run_started_at.timestamp() if spec.run_started_at is not None else time.time()
        )
        self.project = spec.project
        self.domain = spec.domain
        self.overwrite_cache = spec.overwrite_cache
        self.env_vars: dict[str, str] = {}  # applied to the process environment at start
        self.inflight: dict[str, concurrent.futures.Future[None]] = {}
        self.inflight_lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._calls = itertools.count()
        self._secrets = secrets or wire.SecretValues()
        #: where File/Dir values go: the server's object store (uploaded when passed on)
        self.data = remote_store(client.endpoint, client.api_key, settings.home)
        self._secrets_dir: Path | None = None  # mounted secrets: private, removed by close()
        self._children: _Children | None = None
        # a task's spec, when it does not depend on the inputs (no cache key): built once
        self._specs: dict[TaskTemplate[Any, Any], wire.TaskSpec] = {}
        # the report as last flushed, as last uploaded, and the upload under way
        self._report: str | None = None
        self._report_sent: str | None = None
        self._report_upload: asyncio.Future[None] | None = None
        #: ``ctx().checkpoint``: on the server, with this attempt's credential
        self.checkpoints = RemoteCheckpoints(self)

    # -- executing this process's own action --------------------------------------------------

    async def execute(self, task: TaskTemplate[Any, Any], inputs: dict[str, Any]) -> Any:
        """Run one attempt; retries, timeouts and caching are the server's business."""
        self.loop = asyncio.get_running_loop()
        once = task.override(retries=0, timeout=None, cache="disable", env_vars={})
        ex = ActionExecution(self, once, self.spec.action, None, (), inputs)
        ex.context._custom_context = dict(self.spec.custom_context)
        # the server counts the attempts: ctx().attempt is its number (entering adds one)
        ex.context.attempt = self.spec.attempt - 1
        try:
            if task.is_async:
                value = await execute_async(ex)
            else:
                value = await asyncio.to_thread(execute_sync, ex)
        except asyncio.CancelledError:
            raise  # the server decided the outcome: nothing more to send
        except BaseException:
            await self._final_report(ex)
            raise
        await self._final_report(ex)
        return value

    # -- the action's report ------------------------------------------------------------------

    def report_flushed(self, action: str, html: str) -> None:
        """``loom.report.flush()``: upload the report so far, in the background (only the
        latest is sent); :meth:`execute` waits for the last upload before the attempt ends."""
        if action != self.spec.action:
            return
        self._report = html
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._send_report()
        else:  # a sync task's thread
            loop.call_soon_threadsafe(self._send_report)

    def _send_report(self) -> asyncio.Future[None]:
        if self._report_upload is None or self._report_upload.done():
            self._report_upload = asyncio.ensure_future(self._upload_reports())
        return self._report_upload

    async def _upload_reports(self) -> None:
        while self._report is not None and self._report is not self._report_sent:
            html = self._report
            try:
                await self.client.put_report(self.name, self.spec.action, html)
            except Exception as e:  # a report is not worth failing the task over
                log.warning("cannot upload the report of %s: %s", self.spec.action, e)
                return
            self._report_sent = html

    async def _final_report(self, ex: ActionExecution) -> None:
        parts = ex.context.report_parts
        if parts is None or (self._report is None and not _has_content(parts)):
            return  # a report=True task that never wrote one
        from ..report import render

        self._report = render(parts)
        await self._send_report()

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
        encoded = task.interface.encode_inputs(inputs, self.data)
        size = check_inline_size(task, "inputs", encoded)
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
            task=self._task_spec(task, encoded),
            inputs=encoded,
            custom_context=current_custom_context(),
        )
        return lambda: self._run_child(task, body, size)

    def _task_spec(self, task: TaskTemplate[Any, Any], encoded: Mapping[str, Any]) -> wire.TaskSpec:
        root_dir = self.settings.root_dir
        if task.cache.enabled:
            return task_spec(task, encoded, root_dir)
        spec = self._specs.get(task)
        if spec is None:
            spec = self._specs[task] = task_spec(task, encoded, root_dir)
        return spec

    async def _run_child(
        self, task: TaskTemplate[Any, Any], body: wire.ActionCreate, size: int = 0
    ) -> Any:
        if self.loop is not None and asyncio.get_running_loop() is self.loop:
            # on the main loop: batched with the other calls of this process
            if self._children is None:
                self._children = _Children(self.client, self.name)
            if self.data.busy:  # the child may only start once its inputs' data is stored
                await self.data.flush(self.client)
            outcome = await self._children.run(body, size)
            if outcome.phase != Phase.SUCCEEDED:
                raise rebuild_error(outcome.error, body.name)
            if outcome.outputs is not None:
                return task.interface.output.decode(outcome.outputs.value, self.data)
            outputs = await self.client.get_outputs(self.name, body.name)
            return task.interface.output.decode(outputs.value, self.data)
        async with self._session() as client:
            if self.data.busy:
                await self.data.flush(client)
            info = await client.create_action(self.name, body)
            if info.phase not in wire.TERMINAL_PHASES:
                info = await client.wait_action(self.name, body.name)
            if info.phase != Phase.SUCCEEDED:
                raise rebuild_error(info.error, body.name)
            outputs = await client.get_outputs(self.name, body.name)
        return task.interface.output.decode(outputs.value, self.data)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Client]:
        """The shared client on the main loop; a short-lived one on any other loop."""
        if asyncio.get_running_loop() is self.loop:
            yield self.client
            return
        async with Client(
            self.client.endpoint, self.client.api_key, patience_s=self.client.patience_s
        ) as client:
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
        values: dict[str, str] = {}
        paths: dict[str, Path] = {}
        for secret in task.secrets:
            value = self._secrets.values.get(secret.key)
            if value is None:
                raise MissingSecretError(
                    f"secret {secret.key!r} is not set on the server for project "
                    f"{self.project!r}, domain {self.domain!r}: create it with `loom create "
                    f"secret {secret.key}` (--project and --domain narrow it to this one)"
                )
            values[secret.key] = value
            if secret.mount is not None:
                paths[secret.key] = self._mount(secret.key, value)
        environ = {s.env_var: values[s.key] for s in task.secrets if s.env_var}
        return values, paths, environ

    def _mount(self, key: str, value: str) -> Path:
        """The secret as a file only this user can read, in a directory of this attempt's."""
        if self._secrets_dir is None:
            self._secrets_dir = Path(tempfile.mkdtemp(prefix="loom-secrets-"))  # mode 0700
        path = self._secrets_dir / re.sub(r"[^\w.-]", "_", key)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return path

    def close(self) -> None:
        """Remove what the attempt left on disk (its mounted secrets)."""
        if self._secrets_dir is not None:
            shutil.rmtree(self._secrets_dir, ignore_errors=True)
            self._secrets_dir = None


#: Child actions per create request, and their inputs' bytes (well under the server's limit
#: on a request body): a big fan-out goes in a few requests, the first ones starting to run
#: while the rest are still being created.
_CREATE_BATCH = 200
_CREATE_BYTES = 8 * 1024 * 1024

#: A child to create: its body, the size of its inputs, and its caller's future.
_Create = tuple[wire.ActionCreate, int, "asyncio.Future[wire.ActionOutcome]"]


class _Children:
    """The child actions of one action process, over few requests (on the process's loop).

    Creates issued in the same turn of the event loop (``asyncio.gather`` of many calls, a
    loop of ``create_task``) go to the server together, and one long-poll waits for every
    child still running: ``asyncio.gather`` of 1,000 calls makes a handful of requests, not
    3,000. Children created while a long-poll is out get one of their own; whichever returns
    next asks about every child left, so the polls merge into one again (an older one still
    out only answers for what it knows, once).
    """

    def __init__(self, client: Client, run: str) -> None:
        self._client = client
        self._run = run
        self._creates: list[_Create] = []
        self._waiting: dict[str, asyncio.Future[wire.ActionOutcome]] = {}
        self._polled: dict[str, int] = {}  # name: the latest unanswered long-poll asking
        self._polls = itertools.count()
        # the event seq by which a name (still waited for) was known not to have ended
        self._not_ended_by: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def run(self, body: wire.ActionCreate, size: int) -> asyncio.Future[wire.ActionOutcome]:
        """Create ``body`` and resolve to its outcome once it has ended."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[wire.ActionOutcome] = loop.create_future()
        if not self._creates:
            loop.call_soon(self._flush)  # after every call made in this turn
        self._creates.append((body, size, future))
        return future

    def _flush(self) -> None:
        pending, self._creates = self._creates, []
        chunk: list[_Create] = []
        size = 0
        for item in pending:
            if item[2].done():
                continue  # the caller gave up already
            if chunk and (len(chunk) >= _CREATE_BATCH or size + item[1] > _CREATE_BYTES):
                self._spawn(self._create(chunk))
                chunk, size = [], 0
            chunk.append(item)
            size += item[1]
        if chunk:
            self._spawn(self._create(chunk))

    async def _create(self, chunk: list[_Create]) -> None:
        try:
            answers = await self._client.create_actions(self._run, [body for body, _, _ in chunk])
        except Exception as e:  # each call raises what its own request would have
            for _, _, future in chunk:
                if not future.done():
                    future.set_exception(e)
            return
        for (body, _, future), answer in zip(chunk, answers, strict=True):
            if future.done():
                continue
            if answer.error is not None:
                future.set_exception(item_error(answer.error))
            else:
                self._waiting[body.name] = future  # even if ended: the poll brings its outputs
        self._poll_more(every=False)

    def _poll_more(self, *, every: bool) -> None:
        """Start a long-poll for every child still waited for, or (not ``every``) for those
        no long-poll asks about yet."""
        for name in [n for n, f in self._waiting.items() if f.done()]:
            del self._waiting[name]  # cancelled by its caller
            self._not_ended_by.pop(name, None)
        names = [n for n in self._waiting if every or n not in self._polled]
        if names:
            poll = next(self._polls)
            for name in names:
                self._polled[name] = poll
            # names asked about before need no new look-up: only what ended since
            known = [self._not_ended_by.get(n) for n in names]
            after = None if None in known else min(k for k in known if k is not None)
            self._spawn(self._poll(poll, names, after))

    async def _poll(self, poll: int, names: list[str], after: int | None) -> None:
        try:
            answer = await self._client.wait_actions(self._run, names, after=after)
        except Exception as e:
            for name in names:
                if self._polled.get(name) == poll:  # (else a later poll answers for it)
                    self._not_ended_by.pop(name, None)
                    future = self._waiting.pop(name, None)
                    if future is not None and not future.done():
                        future.set_exception(e)
            return
        finally:
            for name in names:
                if self._polled.get(name) == poll:
                    del self._polled[name]
        for outcome in answer.actions:
            self._not_ended_by.pop(outcome.name, None)
            future = self._waiting.pop(outcome.name, None)
            if future is not None and not future.done():
                future.set_result(outcome)
        for name in names:
            if name in self._waiting:
                self._not_ended_by[name] = answer.seq
        if any(self._polled.get(n, poll) == poll for n in names):
            # the latest poll for some of these: carry on, for every child (merging polls)
            self._poll_more(every=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _has_content(parts: list[str]) -> bool:
    tabs = getattr(parts, "tabs", None)  # a loom.report.Report: any tab's fragments count
    return bool(parts) or (tabs is not None and any(t.content for t in tabs.values()))


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _slug(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "-" for c in name).strip("-._")
    return (cleaned or "task")[:60]
