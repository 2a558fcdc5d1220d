"""Executing one action: attempts, retries with backoff, timeouts, caching and context.

The decisions live once, in :class:`ActionExecution`, which does no I/O of its own. Two thin
drivers run it: :func:`execute_async` for async task functions and :func:`execute_sync` for
sync ones (which may run in a worker thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .._context import RunInfo, SecretsAccessor, TaskContext, current_action
from ..errors import (
    DeadlineExceededError,
    InlineIOMaxBytesBreached,
    InputError,
    LoomError,
    MaxQueuedTimeExceededError,
    MaxRuntimeExceededError,
    MissingSecretError,
    NonRecoverableError,
    OutputTypeError,
    SerializationError,
    TaskDefinitionError,
    TaskTimeoutError,
    as_user_error,
)
from ..wire import VALUE_TAG, Phase, ValueKind
from ._environ import install_environ_overlay

if TYPE_CHECKING:
    from .._task import TaskTemplate
    from ..types import BlobStore

log = logging.getLogger("loom")

# Failures that another attempt cannot fix.
_NOT_RETRYABLE = (
    DeadlineExceededError,
    InlineIOMaxBytesBreached,
    InputError,
    MaxQueuedTimeExceededError,
    MissingSecretError,
    NonRecoverableError,
    OutputTypeError,
    TaskDefinitionError,
)


@dataclass(slots=True)
class ActionRecord:
    """What happened to one task call: shown by ``Run.actions()`` and, later, the UI."""

    name: str
    task: str
    parent: str | None
    group: tuple[str, ...]
    phase: str = Phase.QUEUED
    attempts: int = 0
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    cache: str = "disabled"
    report: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


class ActionHost(RunInfo, Protocol):
    """What an action needs from the run that hosts it."""

    name: str
    project: str
    domain: str
    mode: str
    overwrite_cache: bool
    env_vars: dict[str, str]
    inflight: dict[str, concurrent.futures.Future[None]]
    inflight_lock: threading.Lock

    @property
    def blobs(self) -> BlobStore: ...

    def cache_get(self, key: str) -> Any | None: ...

    def cache_put(self, key: str, task: str, version: str, value: Any) -> None: ...

    def resolve_secrets(
        self, task: TaskTemplate[Any, Any]
    ) -> tuple[dict[str, str], dict[str, Path], dict[str, str]]: ...


_HIT = object()


def check_inline_size(task: TaskTemplate[Any, Any], what: str, encoded: Any) -> int:
    """The size of encoded ``inputs`` or ``output`` of ``task``; raises
    :class:`~loom.errors.InlineIOMaxBytesBreached` over its ``max_inline_io_bytes``."""
    size = len(json.dumps(encoded))
    limit = task.max_inline_io_bytes
    if limit is not None and size > limit:
        raise InlineIOMaxBytesBreached(
            f"the {what} of task {task.name} take {size} bytes encoded, over its "
            f"max_inline_io_bytes of {limit}; raise the limit (@env.task(max_inline_io_bytes=...)) "
            "or pass large data as loom.io.File, Dir or DataFrame, which count by reference"
        )
    return size


def cache_key(task: TaskTemplate[Any, Any], encoded_inputs: Mapping[str, Any]) -> str:
    """The cache key of a call: task identity, cache version and inputs (minus ignored ones)."""
    import hashlib

    ignored = task.cache.ignored_inputs
    inputs = {n: _keyed(v) for n, v in encoded_inputs.items() if n not in ignored}
    payload = json.dumps([task.name, task.cache_version, inputs], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


_HASHED_KINDS = (ValueKind.FILE.value, ValueKind.DIR.value, ValueKind.DATAFRAME.value)


def _keyed(value: Any) -> Any:
    """An encoded value as the cache key sees it: a ``File``/``Dir`` with a ``hash`` (its
    ``hash_method`` or ``*_cache_key``) counts by that hash, not by its content."""
    if isinstance(value, dict):
        if value.get(VALUE_TAG) in _HASHED_KINDS and value.get("hash") is not None:
            return {VALUE_TAG: value[VALUE_TAG], "hash": value["hash"]}
        return {k: _keyed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_keyed(v) for v in value]
    return value


class ActionExecution:
    """One task call moving through its attempts; the drivers below supply the I/O."""

    __slots__ = (
        "cache_key",
        "called",
        "context",
        "host",
        "inputs",
        "leader",
        "record",
        "task",
        "value",
    )

    def __init__(
        self,
        host: ActionHost,
        task: TaskTemplate[Any, Any],
        name: str,
        parent: str | None,
        group: tuple[str, ...],
        inputs: dict[str, Any],
    ) -> None:
        self.host = host
        self.task = task
        self.inputs = inputs
        self.record = ActionRecord(name, task.name, parent, group, inputs=inputs)
        self.cache_key: str | None = None
        self.leader: concurrent.futures.Future[None] | None = None
        self.value: Any = None
        # when the caller asked: a deadline counts from here, and so does the first wait
        self.called = time.monotonic()
        self.context = TaskContext(host, name, task, group, None)
        if task.report:
            self.context.report_parts = []

    def prepare(self) -> None:
        """Resolve secrets and environment variables; a failure here fails the action."""
        task, host, context = self.task, self.host, self.context
        environ: dict[str, str] | None = None
        try:
            if task.secrets:
                values, paths, environ = host.resolve_secrets(task)
                context.secrets = SecretsAccessor(values, paths)
            if task.max_inline_io_bytes is not None and host.mode == "local":
                # (a remote caller checked them before submitting the action)
                encoded = task.interface.encode_inputs(self.inputs, host.blobs)
                check_inline_size(task, "inputs", encoded)
        except BaseException as e:
            self.failed(e)
            raise
        if task.env_vars or host.env_vars:
            environ = {**(environ or {}), **task.env_vars, **host.env_vars}
        if environ is not None:
            install_environ_overlay()
            context.environ = environ

    # -- cache --------------------------------------------------------------------------------

    def lookup(self) -> Any:
        """``_HIT`` (value in ``self.value``), ``None`` to run, or a future to wait on."""
        cache = self.task.cache
        if not cache.enabled:
            return None
        if self.cache_key is None:
            self.cache_key = self._compute_cache_key()
            if self.cache_key is None:
                return None
        host = self.host
        if cache.serialize:
            with host.inflight_lock:
                running = host.inflight.get(self.cache_key)
                if running is not None:
                    return running
                if not host.overwrite_cache and self._read_cache():
                    return _HIT
                self.leader = host.inflight[self.cache_key] = concurrent.futures.Future()
            return None
        if not host.overwrite_cache and self._read_cache():
            return _HIT
        return None

    def _compute_cache_key(self) -> str | None:
        task = self.task
        try:
            return cache_key(task, task.interface.encode_inputs(self.inputs, self.host.blobs))
        except (SerializationError, TypeError, ValueError) as e:
            log.warning("not caching %s: its inputs cannot be encoded (%s)", task.name, e)
            return None

    def _read_cache(self) -> bool:
        assert self.cache_key is not None
        data = self.host.cache_get(self.cache_key)
        if data is None:
            self.record.cache = "miss"
            return False
        try:
            self.value = self.task.interface.output.decode(data, self.host.blobs)
        except Exception as e:  # stale or unreadable entry: recompute rather than fail
            log.warning("ignoring unreadable cache entry for %s: %s", self.task.name, e)
            self.record.cache = "miss"
            return False
        now = time.time()
        rec = self.record
        rec.cache, rec.phase, rec.started, rec.ended = "hit", Phase.SUCCEEDED, now, now
        return True

    def _write_cache(self, value: Any) -> None:
        if self.cache_key is None:
            return
        task = self.task
        try:
            data = task.interface.output.encode(value, self.host.blobs)
        except (SerializationError, TypeError, ValueError, OSError) as e:
            log.warning("not caching the output of %s: %s", task.name, e)
            return
        self.host.cache_put(self.cache_key, task.name, task.cache_version, data)
        self.record.cache = "overwritten" if self.host.overwrite_cache else "miss"

    def _release(self) -> None:
        if self.leader is not None:
            with self.host.inflight_lock:
                self.host.inflight.pop(self.cache_key or "", None)
            self.leader.set_result(None)
            self.leader = None

    # -- attempts -----------------------------------------------------------------------------

    def enter_attempt(self) -> contextvars.Token[TaskContext | None]:
        context = self.context
        context.attempt += 1
        rec = self.record
        rec.attempts = context.attempt
        if rec.started is None:
            rec.started = time.time()
        rec.phase = Phase.RUNNING
        return current_action.set(context)

    def succeeded(self, value: Any) -> Any:
        rec = self.record
        task = self.task
        try:
            value = task.interface.check_output(value)  # (converted where the type says so)
            if task.max_inline_io_bytes is not None and self.host.mode == "local":
                # (a remote runtime checks what it encodes to report)
                encoded = task.interface.output.encode(value, self.host.blobs)
                check_inline_size(task, "output", encoded)
        except (OutputTypeError, InlineIOMaxBytesBreached) as e:
            self.failed(e)
            raise
        if self.cache_key is not None:
            self._write_cache(value)
        rec.phase, rec.ended = Phase.SUCCEEDED, time.time()
        if self.context.report_parts is not None:
            from ..report import render  # only for tasks with reports

            rec.report = render(self.context.report_parts)
        self._release()
        return value

    def failed(self, error: BaseException) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` if this failure is final."""
        context, rec = self.context, self.record
        strategy = self.task.retries
        if (
            isinstance(error, Exception)
            and not isinstance(error, _NOT_RETRYABLE)
            and context.attempt <= strategy.count
        ):
            log.info("%s attempt %d failed (%r); retrying", rec.name, context.attempt, error)
            return strategy.delay(context.attempt)
        rec.phase = Phase.ABORTED if isinstance(error, asyncio.CancelledError) else Phase.FAILED
        rec.ended = time.time()
        rec.error = f"{type(error).__qualname__}: {error}"
        if isinstance(error, Exception) and not isinstance(error, LoomError):
            error.add_note(
                f"[loom] raised by task {self.task.name} in action {rec.name} of run "
                f"{self.host.name} (attempt {context.attempt} of {strategy.count + 1})"
            )
        self._release()
        return None

    # -- time bounds (``loom.Timeout``) --------------------------------------------------------

    def deadline_left(self) -> float | None:
        """Seconds left before the action's ``deadline``; ``None`` without one, or remotely,
        where the server keeps it (it counts from the action's creation, not this attempt)."""
        timeout = self.task.timeout
        deadline = None if timeout is None else timeout.deadline_seconds
        if deadline is None or self.host.mode != "local":
            return None
        return deadline - (time.monotonic() - self.called)

    def attempt_limit(self) -> tuple[float, bool] | None:
        """How long the next attempt may run, and whether the deadline (not ``max_runtime``)
        is what limits it; ``None`` for no limit."""
        timeout = self.task.timeout
        if timeout is None:
            return None
        runtime, left = timeout.runtime_seconds, self.deadline_left()
        if left is not None and (runtime is None or left <= runtime):
            return max(left, 0.0), True
        return None if runtime is None else (runtime, False)

    def check_waited(self, since: float) -> None:
        """Raise if the wait for this attempt to start (from ``since``, a monotonic time)
        outlived ``max_queued_time`` or the deadline."""
        timeout = self.task.timeout
        if timeout is None or self.host.mode != "local":
            return  # the server keeps a remote action's queue limit
        left = self.deadline_left()
        if left is not None and left <= 0:
            raise self.deadline_error()
        limit = timeout.queued_seconds
        waited = time.monotonic() - since
        if limit is not None and waited > limit:
            raise MaxQueuedTimeExceededError(
                f"task {self.task.name} (action {self.record.name}) waited {waited:.2f} s to "
                f"start attempt {self.context.attempt}, longer than its max_queued_time of "
                f"{limit:g} s"
            )

    def wait_limit(self) -> float | None:
        """How long this action may wait for another (a serialized cache's holder)."""
        timeout = self.task.timeout
        if timeout is None:
            return None
        limits = [x for x in (timeout.queued_seconds, self.deadline_left()) if x is not None]
        return max(min(limits), 0.0) if limits else None

    def timeout_error(self, seconds: float, deadline: bool = False) -> TaskTimeoutError:
        if deadline:
            return self.deadline_error()
        return MaxRuntimeExceededError(
            f"task {self.task.name} (action {self.record.name}) exceeded its timeout of "
            f"{seconds:g} s in attempt {self.context.attempt} (Timeout.max_runtime)"
        )

    def deadline_error(self) -> DeadlineExceededError:
        timeout = self.task.timeout
        deadline = None if timeout is None else timeout.deadline_seconds
        return DeadlineExceededError(
            f"task {self.task.name} (action {self.record.name}) did not finish within its "
            f"deadline of {deadline:g} s (attempt {self.context.attempt}); no retry follows"
        )

    def backoff(self, delay: float) -> tuple[float, bool]:
        """How long to sleep before the next attempt, and whether the deadline ends the
        action during that sleep (then the action fails once the sleep is over)."""
        left = self.deadline_left()
        if left is not None and delay >= left:
            return max(left, 0.0), True
        return delay, False


# -- drivers ----------------------------------------------------------------------------------


async def execute_async(ex: ActionExecution) -> Any:
    """Run an async task's action on the current event loop."""
    ex.prepare()
    while (state := ex.lookup()) is not None:
        if state is _HIT:
            return ex.value
        # another call with the same key is running: wait for it, within the time bounds
        waiting = asyncio.wrap_future(state)
        try:
            await asyncio.wait_for(asyncio.shield(waiting), ex.wait_limit())
        except TimeoutError:
            break  # waited too long: check_waited below fails the attempt
    since = ex.called
    while True:
        token = ex.enter_attempt()
        try:
            ex.check_waited(since)
            limit = ex.attempt_limit()
            if limit is None:
                value = await ex.task.func(**ex.inputs)
            else:
                seconds, by_deadline = limit
                try:
                    async with asyncio.timeout(seconds) as scope:
                        value = await ex.task.func(**ex.inputs)
                except TimeoutError as e:
                    if scope.expired():
                        raise ex.timeout_error(seconds, by_deadline) from e
                    raise
        except BaseException as e:
            current_action.reset(token)
            delay = ex.failed(e)
            if delay is None:
                if (error := as_user_error(e)) is e:
                    raise
                raise error from e.__cause__
            delay, ends = ex.backoff(delay)
            await asyncio.sleep(delay)
            if ends:
                final = ex.deadline_error()
                ex.failed(final)
                raise final from e
            since = time.monotonic()
            continue
        current_action.reset(token)
        return ex.succeeded(value)


def execute_sync(ex: ActionExecution) -> Any:
    """Run a sync task's action in the calling thread (timed attempts get their own thread)."""
    ex.prepare()
    while (state := ex.lookup()) is not None:
        if state is _HIT:
            return ex.value
        try:
            state.result(ex.wait_limit())
        except concurrent.futures.TimeoutError:
            break  # waited too long: check_waited below fails the attempt
    since = ex.called  # (a call given to the thread pool may have waited for a thread)
    while True:
        token = ex.enter_attempt()
        try:
            ex.check_waited(since)
            limit = ex.attempt_limit()
            value = ex.task.func(**ex.inputs) if limit is None else _call_with_timeout(ex, *limit)
        except BaseException as e:
            current_action.reset(token)
            delay = ex.failed(e)
            if delay is None:
                if (error := as_user_error(e)) is e:
                    raise
                raise error from e.__cause__
            delay, ends = ex.backoff(delay)
            time.sleep(delay)
            if ends:
                final = ex.deadline_error()
                ex.failed(final)
                raise final from e
            since = time.monotonic()
            continue
        current_action.reset(token)
        return ex.succeeded(value)


def _call_with_timeout(ex: ActionExecution, seconds: float, by_deadline: bool = False) -> Any:
    """Run the attempt in its own thread; on timeout, interrupt it and raise in the caller."""
    result: concurrent.futures.Future[Any] = concurrent.futures.Future()
    context = contextvars.copy_context()

    def attempt() -> None:
        try:
            result.set_result(context.run(ex.task.func, **ex.inputs))
        except BaseException as e:
            if not result.done():
                result.set_exception(e)

    worker = threading.Thread(target=attempt, name=f"loom-{ex.record.name}", daemon=True)
    worker.start()
    try:
        return result.result(seconds)
    except concurrent.futures.TimeoutError:
        error = ex.timeout_error(seconds, by_deadline)
        _interrupt(worker)
        raise error from None


def _interrupt(thread: threading.Thread) -> None:
    """Ask a thread to stop by raising in it; it stops at its next Python bytecode."""
    import ctypes

    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(_AttemptAbandoned)
        )


class _AttemptAbandoned(BaseException):
    """Raised inside a timed-out sync attempt's thread to stop it."""
