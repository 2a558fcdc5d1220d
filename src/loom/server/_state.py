"""The action state machine's rules, free of storage: legal transitions, retries, backoff.

::

    QUEUED ──► RUNNING ──► SUCCEEDED
      │         │  ▲ ╲───► FAILED
      │         │  │  ╲──► RETRYING ──► RUNNING (next attempt)
      │         ▼  │
      │      INTERACTIVE ──► SUCCEEDED | FAILED | RETRYING
      │           │
      └──────► ABORTED ◄── (from any non-terminal phase)

An action created from a cache hit starts SUCCEEDED; one that can never fit a worker goes
QUEUED ─► FAILED at submission.

An interactive attempt goes RUNNING ─► INTERACTIVE when its runtime registers the IDE it
started, INTERACTIVE ─► RUNNING while a resume runs (and back to INTERACTIVE if the resumed
code fails: the session stays), and ends from either phase like any attempt: the runtime's
report (resumed, given up, idle), an abort, or the process dying (RETRYING if the task's retry
policy allows, as for any lost worker). INTERACTIVE holds no executor slot (the scheduler
counts RUNNING actions only) and no timeout applies: the task's timeout cannot know how long
somebody debugs (see :func:`job_timeout_s`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .. import wire
from ..executors import Capacity
from ..wire import ErrorKind, Phase

ROOT_ACTION = "a0"
TERMINAL = wire.TERMINAL_PHASES
RETRYABLE_KINDS = frozenset(
    {ErrorKind.USER, ErrorKind.TIMEOUT, ErrorKind.WORKER_LOST, ErrorKind.OOM}
)

ALLOWED: dict[str, frozenset[Phase]] = {
    Phase.QUEUED: frozenset({Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED, Phase.ABORTED}),
    Phase.RUNNING: frozenset(
        {Phase.INTERACTIVE, Phase.SUCCEEDED, Phase.FAILED, Phase.RETRYING, Phase.ABORTED}
    ),
    Phase.RETRYING: frozenset({Phase.RUNNING, Phase.FAILED, Phase.ABORTED}),
    Phase.INTERACTIVE: frozenset(
        {Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED, Phase.RETRYING, Phase.ABORTED}
    ),
}


class IllegalTransition(RuntimeError):
    """A bug: the server tried a transition the state machine does not have."""


def check_transition(current: str, new: Phase) -> None:
    if new not in ALLOWED.get(current, frozenset()):
        raise IllegalTransition(f"illegal action transition {current} -> {new}")


def job_timeout_s(task: wire.TaskSpec) -> float | None:
    """The executor's time limit for an attempt of ``task``: none for an interactive task,
    whose attempt waits for a person for as long as its session is open (its idle limit,
    ``InteractiveSpec.max_idle_seconds``, ends an abandoned one instead)."""
    return None if task.interactive is not None else task.timeout_s


def time_bounds(task: wire.TaskSpec, now: datetime) -> tuple[datetime | None, datetime | None]:
    """When an action of ``task`` created ``now`` fails if it has not ended (its
    ``deadline_s``) and if it has not started (its ``max_queued_s``); ``None`` where the task
    sets no bound. An interactive task has none, like no timeout (see :func:`job_timeout_s`)."""
    if task.interactive is not None:
        return None, None
    return _after(now, task.deadline_s), _after(now, task.max_queued_s)


def _after(when: datetime, seconds: float | None) -> datetime | None:
    return None if seconds is None else when + timedelta(seconds=seconds)


def queued_timeout_error(action: str, seconds: float) -> wire.ErrorInfo:
    """Why an action that waited ``seconds`` to start failed: ``Timeout.max_queued_time``."""
    return wire.ErrorInfo(
        type="MaxQueuedTimeExceededError",
        message=f"action {action!r} waited longer than its max_queued_time of {seconds:g} s "
        "to start: no worker had room for it (see its Resources, and the server's capacity)",
        kind=ErrorKind.TIMEOUT,
    )


def deadline_error(action: str, seconds: float, attempts: int) -> wire.ErrorInfo:
    """Why an action that did not end within its ``Timeout.deadline`` failed."""
    killed = " (its running attempt was killed)" if attempts else ""
    return wire.ErrorInfo(
        type="DeadlineExceededError",
        message=f"action {action!r} did not finish within its deadline of {seconds:g} s after "
        f"{attempts} attempt{'' if attempts == 1 else 's'}{killed}; no retry follows",
        kind=ErrorKind.TIMEOUT,
    )


#: Failures of the infrastructure, not of the task: retried from the server's own allowance
#: (``LOOM_SYSTEM_RETRIES``), never charged to the task's ``retries``.
INFRASTRUCTURE_KINDS = frozenset({ErrorKind.WORKER_LOST})


def may_retry(
    error: wire.ErrorInfo,
    attempts_used: int,
    retries: wire.RetrySpec,
    lost: int = 0,
    system_retries: int = 0,
) -> bool:
    """Whether a failed attempt gets another: a retryable kind and attempts left. ``lost``:
    how many of the ``attempts_used`` the infrastructure lost (this one included)."""
    if error.kind in INFRASTRUCTURE_KINDS:
        return lost <= system_retries
    return error.kind in RETRYABLE_KINDS and attempts_used - lost < retries.count + 1


def backoff_s(retries: wire.RetrySpec, failed_attempt: int) -> float:
    """Seconds to wait before the attempt after ``failed_attempt`` (numbered from 1), by the
    rule local runs follow too (:func:`loom.wire.retry_backoff_s`)."""
    return wire.retry_backoff_s(
        retries.backoff_s, retries.backoff_factor, retries.max_backoff_s, failed_attempt
    )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def submission_error(task: wire.TaskSpec, capacity: Capacity) -> wire.ErrorInfo | None:
    """Why a task can never run here (its requests, or an image this executor cannot
    realise), or ``None``: it fails at submission, not after a wait."""
    return resources_error(task.resources, capacity) or image_error(task)


def image_error(task: wire.TaskSpec) -> wire.ErrorInfo | None:
    """Why the task's image cannot be realised by the process executor, which builds Python
    environments and runs no containers; ``None`` if it can."""
    parts = [] if task.image is None else wire.container_parts(task.image)
    if not parts:
        return None
    message = (
        f"the image of {task.name} needs a container for {', '.join(parts)}, and this "
        "server's executor runs tasks as processes in Python environments built with uv, "
        "which cannot start from another image, install Debian packages or run build "
        "commands. Install what those parts provide on the server's machine and drop them "
        "from the image (Python packages go in with_pip_packages or with_requirements), or "
        "build the image with `loom image dockerfile FILE ENV` and run the task where "
        "containers run"
    )
    return wire.ErrorInfo(type="ImageNotSupportedError", message=message, kind=ErrorKind.SYSTEM)


def resources_error(resources: wire.ResourceSpec, capacity: Capacity) -> wire.ErrorInfo | None:
    """Why an action can never run on these workers, or ``None`` if it fits."""
    message = None
    if resources.cpu is not None and resources.cpu > capacity.cpu:
        message = (
            f"requests {resources.cpu:g} CPUs but the largest worker has {capacity.cpu:g}; "
            "lower Resources(cpu=...)"
        )
    elif resources.memory_bytes is not None and resources.memory_bytes > capacity.memory_bytes:
        message = (
            f"requests {_size(resources.memory_bytes)} of memory but the largest worker has "
            f"{_size(capacity.memory_bytes)}; lower Resources(memory=...)"
        )
    elif resources.gpu and resources.gpu > capacity.gpu:
        has = f"{capacity.gpu}" if capacity.gpu else "none"
        message = (
            f"requests {resources.gpu} GPU{'s' if resources.gpu > 1 else ''} but the largest "
            f"worker has {has}; lower Resources(gpu=...), or run it on a server with GPUs"
        )
    elif (
        resources.disk_bytes is not None
        and capacity.disk_bytes is not None
        and resources.disk_bytes > capacity.disk_bytes
    ):
        message = (
            f"requests {_size(resources.disk_bytes)} of disk but the largest worker has "
            f"{_size(capacity.disk_bytes)}; lower Resources(disk=...)"
        )
    if message is None:
        return None
    return wire.ErrorInfo(type="InsufficientResourcesError", message=message, kind=ErrorKind.SYSTEM)
