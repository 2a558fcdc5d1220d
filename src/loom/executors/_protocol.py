"""The executor protocol: all the scheduler knows about where actions run (DESIGN §4, rule 4)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from .. import wire


@dataclass(frozen=True, slots=True)
class Capacity:
    """How much an executor can run: the size of its largest worker, which the scheduler
    packs attempts into by their requests, and at most ``slots`` attempts at once (``None``:
    as many as their requests allow)."""

    slots: int | None
    cpu: float
    memory_bytes: int
    gpu: int = 0
    disk_bytes: int | None = None  # ``None``: unknown, requests are not checked


@dataclass(frozen=True, slots=True)
class Job:
    """One attempt of one action, to run as ``<runtime> --endpoint ... --attempt N``."""

    run: str
    action: str
    attempt: int
    endpoint: str
    env: Mapping[str, str] = field(repr=False)
    log_path: Path
    workdir: Path
    timeout_s: float | None = None
    resources: wire.ResourceSpec = field(default_factory=wire.ResourceSpec)
    #: a reusable environment's policy: the job runs in a warm worker of pool ``pool``, whose
    #: workers are interchangeable (same environment, code and process variables)
    reuse: wire.ReuseSpec | None = None
    pool: str = ""
    #: what the runtime needs to run the attempt, when the server has it at hand: the runtime
    #: then starts the attempt without asking the server first
    spec: wire.ActionSpec | None = field(default=None, repr=False)
    #: the attempt's runtime credential (``LOOM_API_KEY`` of its process; in a warm worker's
    #: job message): valid only while this attempt runs
    credential: str = field(default="", repr=False)
    #: the interpreter of the task's image environment (``None``: the executor's own runtime);
    #: its attempt runs as ``<python> -m loom.runtime ...``
    python: str | None = None

    @property
    def id(self) -> str:
        return job_id(self.run, self.action, self.attempt)


def job_id(run: str, action: str, attempt: int) -> str:
    """The id of a job: unique per attempt of an action."""
    return f"{run}/{action}/{attempt}"


#: ``oom``: the executor killed it for holding more memory than its request.
ExitReason = Literal["exited", "timeout", "cancelled", "oom"]


@dataclass(frozen=True, slots=True)
class JobExit:
    """A job ended. ``reason`` says whether the executor ended it (timeout, cancel, memory);
    ``peak_bytes``: the most memory it was seen to hold, where the executor watched."""

    job_id: str
    returncode: int | None
    reason: ExitReason
    peak_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class JobStatus:
    """``queued``: accepted, but waiting for a worker (so it cannot send heartbeats yet)."""

    state: Literal["queued", "running", "exited", "unknown"]
    returncode: int | None = None


ExitCallback = Callable[[JobExit], Awaitable[None]]
#: Records attempts' results that came from the executor's own channel to its workers rather
#: than over HTTP (the executor checked that each is one of the sender's jobs); the answers,
#: in order, are what ``POST /attempts:finish`` would have answered.
ReportCallback = Callable[[list[wire.AttemptReport]], Awaitable[list[wire.ItemStatus]]]


class Executor(Protocol):
    """Runs jobs. All methods are called on the server's event loop."""

    def capacity(self) -> Capacity:
        """The worker size (and slots); the scheduler keeps the attempts' requests within."""

    async def start(self, on_exit: ExitCallback, on_report: ReportCallback | None = None) -> None:
        """Begin; ``on_exit`` is awaited once for every job that ends after ``submit``.
        ``on_report``, if given, takes results a job's runtime sends through the executor
        (a warm worker's socket) instead of over HTTP."""

    async def submit(self, job: Job) -> str:
        """Start ``job``; return a handle the server stores to :meth:`reclaim` it later."""

    async def cancel(self, job_id: str) -> None:
        """Stop a job (its exit is reported with reason ``"cancelled"``); no-op if gone."""

    def status(self, job_id: str) -> JobStatus:
        """What the executor knows about a job it started."""

    async def adopt(self, job: Job, handle: str) -> bool:
        """Take over ``job``, which a previous server process started under ``handle``, if
        it still runs: watch it as one's own, and report its exit. ``False`` if it is gone,
        or cannot be adopted (then it is stopped, as by :meth:`reclaim`, and what it left
        in its work dir is removed)."""

    async def reclaim(self, handle: str) -> None:
        """Stop whatever a previous server process left running under ``handle``."""

    async def shutdown(self, keep: bool = False) -> None:
        """Stop every job without reporting exits (the server is going away); with ``keep``,
        leave the jobs that can be adopted running, for the next server process."""
