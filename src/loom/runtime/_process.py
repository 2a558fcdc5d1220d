"""One attempt of one action, from spec to reported result."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .. import wire
from .._controller._remote import RemoteRun, error_info
from .._execution import check_inline_size
from .._settings import Settings
from .._task import TaskTemplate
from .._tracebacks import trim_traceback_text
from ..errors import (
    ApiError,
    IdeInstallError,
    InlineIOMaxBytesBreached,
    InputError,
    LoomError,
    MissingSecretError,
    NonRecoverableError,
    OutputTypeError,
    TaskDefinitionError,
    TaskLoadError,
)
from ..io._remote import remote_store
from ..remote import Client
from ..remote._bundle import extract_bundle
from ..wire import ErrorKind
from ._heartbeat import Heartbeats

#: How a warm worker reports results: many attempts' in one request (see ``_worker``).
Report = Callable[[wire.AttemptReport], Awaitable[wire.ItemStatus]]
_NOT_RETRYABLE = (
    IdeInstallError,
    InputError,
    OutputTypeError,
    MissingSecretError,
    TaskDefinitionError,
    TaskLoadError,
)


def _say(message: str) -> None:
    print(f"[loom] {message}", file=sys.stderr, flush=True)


async def _bundle_dir(client: Client, settings: Settings, digest: str) -> Path:
    target = settings.home / "bundles" / digest
    if not target.exists():
        data = await client.download_bundle(digest)
        extract_bundle(data, target)
    return target


def _load_task(bundle: Path, spec: wire.TaskSpec) -> TaskTemplate[Any, Any]:
    if str(bundle) not in sys.path:  # a warm worker loads from its one bundle many times
        sys.path.insert(0, str(bundle))
    try:
        module = importlib.import_module(spec.module)
    except Exception as e:
        raise TaskLoadError(
            f"cannot import module {spec.module!r} from the code bundle: {type(e).__name__}: {e}"
        ) from e
    task = getattr(module, spec.attr, None)
    if not isinstance(task, TaskTemplate):
        raise TaskLoadError(
            f"module {spec.module!r} has no task named {spec.attr!r} in this code bundle"
        )
    return task


async def run_attempt(
    endpoint: str, run: str, action: str, attempt: int, spec_file: str | None = None
) -> int:
    """Execute and report one attempt; the exit code says whether reporting worked.

    ``spec_file``: the attempt's spec, which the executor wrote for it (removed once read: it
    holds the inputs); without it the runtime asks the server."""
    settings = Settings.load()
    spec = None
    if spec_file is not None:
        path = Path(spec_file)
        try:
            spec = wire.ActionSpec.model_validate_json(path.read_bytes())
        except (OSError, ValueError) as e:
            _say(f"cannot read the spec file {spec_file} ({e}); asking the server instead")
        path.unlink(missing_ok=True)
    # a server that restarts meanwhile is waited for: the attempt goes on, its reports held
    async with Client(endpoint, settings.api_key, patience_s=settings.server_patience_s) as client:
        return await attempt_with(client, settings, run, action, attempt, spec=spec)


async def attempt_with(
    client: Client,
    settings: Settings,
    run: str,
    action: str,
    attempt: int,
    *,
    shared: bool = False,
    spec: wire.ActionSpec | None = None,
    report: Report | None = None,
    heartbeat: bool = True,
) -> int:
    """One attempt over an open client: in its own process, or one of many in a warm worker
    (``shared``: the process environment is the worker's and must not be changed).

    The ``spec`` usually comes with the job (a warm worker's message, a process's spec file):
    the server loaded it when it claimed the attempt, which it did by making it RUNNING, so
    there is nothing to fetch and no ``started`` to report (an attempt ended before it starts
    is cancelled by the executor instead). ``report`` sends the result, batched with other
    attempts' (409 still means the server ended the attempt first, item by item), and without
    ``heartbeat`` the caller sends the attempt's heartbeats (a worker sends all of its
    attempts' at once)."""
    if spec is None:
        try:
            spec = await client.get_spec(run, action)
        except ApiError as e:
            _say(f"cannot fetch the spec of {run}/{action}: {e}")
            return 2
        spec = spec.model_copy(update={"attempt": attempt})
        try:
            await client.attempt_started(run, action, attempt)
        except ApiError as e:  # e.g. 409: the server already ended this attempt
            _say(f"the server will not start attempt {attempt}: {e}")
            return 0
    elif spec.attempt != attempt:
        spec = spec.model_copy(update={"attempt": attempt})
    if not shared:  # (in a warm worker: nothing, so that a quiet attempt makes no log file)
        _say(f"run {run} action {action} attempt {attempt}: {spec.task.name}")
    beats = None
    if heartbeat:
        ref = wire.AttemptRef(run=run, action=action, attempt=attempt)
        beats = Heartbeats(
            client.endpoint, client.api_key, settings.heartbeat_interval_s, lambda: [ref]
        )
        beats.start()
    started = time.monotonic()
    try:
        result = await _execute(client, settings, spec, shared=shared)
    finally:
        if beats is not None:
            beats.stop()
    outcome = "succeeded" if result.error is None else f"failed: {result.error.type}"
    if not shared or result.error is not None:
        _say(f"attempt {attempt} {outcome} after {time.monotonic() - started:.2f} s")
    if result.error is not None and result.error.traceback:
        # the log of a failed attempt ends with why, as the user's own frames show it
        print(trim_traceback_text(result.error.traceback).rstrip(), file=sys.stderr, flush=True)
    item = wire.AttemptReport(
        run=run, action=action, attempt=attempt, result=result, credential=client.api_key
    )
    try:
        # alone, through the batch endpoint all the same: its answer is all we need
        status = await (report or _report_alone(client))(item)
    except ApiError as e:
        _say(f"cannot report the result: {e}")
        return 3
    if status.status != 200:
        _say(f"cannot report the result: {status.detail} (HTTP {status.status})")
        return 0 if status.status == 409 else 3  # 409: the server already ended the attempt
    return 0


def _report_alone(client: Client) -> Report:
    async def report(item: wire.AttemptReport) -> wire.ItemStatus:
        (status,) = await client.finish_attempts([item])
        return status

    return report


async def _execute(
    client: Client, settings: Settings, spec: wire.ActionSpec, *, shared: bool
) -> wire.AttemptResult:
    try:
        bundle = await _bundle_dir(client, settings, spec.bundle)
    except (ApiError, LoomError) as e:
        return wire.AttemptResult(error=error_info(e, "system"))
    try:
        if not shared:  # a worker was started with exactly these variables already
            os.environ.update({**spec.task.env_vars, **spec.env_vars})
        task = _load_task(bundle, spec.task)
        # File/Dir values travel through the server's object store (see loom.io._remote)
        data = remote_store(client.endpoint, client.api_key, settings.home)
        inputs = task.interface.decode_inputs(spec.inputs, data)
        # fetched up front: the engine reads them synchronously, as it does locally
        secrets = await client.action_secrets(spec.run, spec.action) if spec.task.secrets else None
        # children's modules are named from the bundle's root, as the client named this one
        host = RemoteRun(client, spec, settings.with_overrides(root_dir=bundle), secrets)
        try:
            if spec.task.interactive is not None:
                from ._session import Session

                return await Session(client, settings, spec, task, host, bundle).run()
            value = await host.execute(task, inputs)
        finally:
            host.close()
        encoded = task.interface.output.encode(value, data)
        if task.max_inline_io_bytes is not None:
            check_inline_size(task, "output", encoded)
        await data.flush(client)  # what the outputs refer to is stored before they are reported
    except BaseException as e:  # every failure is reported; none escapes the attempt
        if isinstance(e, KeyboardInterrupt | SystemExit | asyncio.CancelledError):
            raise  # a cancelled attempt reports nothing: the server decided its outcome
        # failures another attempt cannot fix are "system" errors, which the server never retries
        kind = ErrorKind.SYSTEM if isinstance(e, _NOT_RETRYABLE) else ErrorKind.USER
        if isinstance(e, NonRecoverableError | InlineIOMaxBytesBreached):
            kind = ErrorKind.NON_RECOVERABLE
        return wire.AttemptResult(error=error_info(e, kind))
    return wire.AttemptResult(outputs=wire.Outputs(value=encoded))
