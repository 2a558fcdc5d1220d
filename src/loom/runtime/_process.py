"""One attempt of one action, from spec to reported result."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from .. import wire
from .._controller._remote import RemoteRun, error_info
from .._settings import Settings
from .._task import TaskTemplate
from ..errors import (
    ApiError,
    IdeInstallError,
    InputError,
    LoomError,
    MissingSecretError,
    OutputTypeError,
    TaskDefinitionError,
    TaskLoadError,
)
from ..remote import Client
from ..remote._bundle import extract_bundle

HEARTBEAT_SECONDS = 10.0
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


async def _heartbeat(client: Client, spec: wire.ActionSpec) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_SECONDS)
        with contextlib.suppress(ApiError):
            await client.heartbeat(spec.run, spec.action, spec.attempt)


async def run_attempt(endpoint: str, run: str, action: str, attempt: int) -> int:
    """Execute and report one attempt; the exit code says whether reporting worked."""
    settings = Settings.load()
    async with Client(endpoint, settings.api_key) as client:
        return await attempt_with(client, settings, run, action, attempt)


async def attempt_with(
    client: Client, settings: Settings, run: str, action: str, attempt: int, *, shared: bool = False
) -> int:
    """One attempt over an open client: in its own process, or one of many in a warm worker
    (``shared``: the process environment is the worker's and must not be changed)."""
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
    _say(f"run {run} action {action} attempt {attempt}: {spec.task.name}")
    beat = asyncio.create_task(_heartbeat(client, spec))
    started = time.monotonic()
    try:
        result = await _execute(client, settings, spec, shared=shared)
    finally:
        beat.cancel()
    outcome = "succeeded" if result.error is None else f"failed: {result.error.type}"
    _say(f"attempt {attempt} {outcome} after {time.monotonic() - started:.2f} s")
    try:
        await client.attempt_finished(run, action, attempt, result)
    except ApiError as e:
        _say(f"cannot report the result: {e}")
        return 0 if e.status == 409 else 3  # 409: the server already ended the attempt
    return 0


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
        inputs = task.interface.decode_inputs(spec.inputs)
        host = RemoteRun(client, spec, settings)
        if spec.task.interactive is not None:
            from ._session import Session

            return await Session(client, settings, spec, task, host, bundle).run()
        value = await host.execute(task, inputs)
        encoded = task.interface.output.encode(value, None)
    except BaseException as e:  # every failure is reported; none escapes the attempt
        if isinstance(e, KeyboardInterrupt | SystemExit | asyncio.CancelledError):
            raise  # a cancelled attempt reports nothing: the server decided its outcome
        # failures another attempt cannot fix are "system" errors, which the server never retries
        kind = "system" if isinstance(e, _NOT_RETRYABLE) else "user"
        return wire.AttemptResult(error=error_info(e, kind))
    return wire.AttemptResult(outputs=wire.Outputs(value=encoded))
