"""Warm worker pools for reusable environments (``ReusePolicy``).

Jobs whose task has a reuse policy do not get a process each: they go to a pool of worker
processes (``python -m loom.runtime --worker``), keyed by what makes workers interchangeable
(environment, code bundle, process environment). A pool starts up to ``max_replicas`` workers,
at least ``min_replicas`` while there is work, and gives each up to ``concurrency`` jobs at once;
more jobs wait in the pool until a slot frees. A worker idle for ``idle_ttl`` stops.

Workers talk to the executor over one Unix socket in a private directory (see
:mod:`loom.runtime._worker` for the protocol). A timeout or cancel asks the worker to cancel the
attempt, and the worker gets no new job until it has; if it has not ended within a grace
period, the whole worker is killed and its other attempts are lost (the server retries them
per policy). A worker of a task with a memory request may hold ``concurrency`` times it (it
runs that many attempts); over that, it is killed, and its attempts fail as over their limit
(``OOMError``). A worker that dies takes its attempts
with it: each is reported as exited with the worker's code, and the worker's last output is
appended to their logs so "worker lost" can be explained.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from .. import wire
from ._errors import JobStartError
from ._memory import MemoryGuard
from ._protocol import ExitReason, Job, JobExit, ReportCallback, job_id

log = logging.getLogger("loom.executors")

#: The name of a pools' directory begins so (a random rest follows).
POOLS_DIR_PREFIX = "loom-workers-"

#: How the handle of a job given to a warm worker begins (its pid and identity follow).
WORKER_HANDLE = "worker:"

#: A worker's idle time before it stops, when the policy sets none.
DEFAULT_IDLE_TTL_S = 30.0
#: How long a cancelled attempt may take to wind down before its worker is killed.
CANCEL_GRACE_S = 5.0
_HELLO_TIMEOUT_S = 60.0
_LOG_TAIL_BYTES = 4000
_NOT_ITS_JOB = wire.ItemStatus(status=403, detail="this attempt is not one of the worker's jobs")


class _Process(Protocol):
    @property
    def pid(self) -> int: ...

    async def wait(self) -> int | None: ...


#: Starts ``<runtime> *argv`` with this environment, working directory and log file (and the
#: interpreter of an image's environment, if any).
StartProcess = Callable[
    [Sequence[str], dict[str, str], Path, Path, str | None], Awaitable[_Process]
]
KillGroup = Callable[[int], None]


@dataclass
class _PooledJob:
    job: Job
    reason: ExitReason = "exited"
    timer: asyncio.TimerHandle | None = None
    peak_bytes: int | None = None  # its worker's, where the worker's memory was watched


@dataclass
class _Worker:
    id: str
    pool: _Pool
    process: _Process
    log_path: Path
    jobs: dict[str, _PooledJob] = field(default_factory=dict)
    writer: asyncio.StreamWriter | None = None
    outbox: list[bytes] = field(default_factory=list)  # lines
    idle_timer: asyncio.TimerHandle | None = None
    stopping: bool = False
    # jobs it was asked to cancel that have not ended: until they do, it may be hung (a
    # retry of a silent attempt must not land on the worker that went silent)
    cancelling: set[str] = field(default_factory=set)
    handle: str = ""  # the executor's handle of its jobs

    def send(
        self, message: wire.WorkerJob | wire.WorkerCancel | wire.WorkerStop, raw: str = ""
    ) -> None:
        """Send ``message``, with ``raw`` (JSON members, already serialised) added to it."""
        self.send_line(wire.encode(message, raw))

    def send_line(self, line: bytes) -> None:
        if self.writer is None:
            self.outbox.append(line)  # not connected yet: sent on hello
        else:
            self.writer.write(line)


@dataclass
class _Pool:
    key: str
    spec: wire.ReuseSpec
    env: dict[str, str]
    workers: list[_Worker] = field(default_factory=list)
    waiting: collections.deque[Job] = field(default_factory=collections.deque)
    #: workers being started: they count against ``max_replicas`` already (jobs are
    #: submitted from more than one task at once)
    starting: int = 0

    @property
    def idle_ttl_s(self) -> float:
        return DEFAULT_IDLE_TTL_S if self.spec.idle_ttl_s is None else self.spec.idle_ttl_s


class WorkerPools:
    """Every pool of one executor, and the socket their workers connect to."""

    def __init__(
        self,
        start_process: StartProcess,
        kill_group: KillGroup,
        on_exit: Callable[[JobExit], Awaitable[None]],
        identify: Callable[[int], str | None] = lambda pid: "",
        root: Path | None = None,
        memory: MemoryGuard | None = None,
    ) -> None:
        #: where the pools' directory goes (socket, workers' work dirs and logs): a private
        #: directory of the server's, where the next server process finds what a crash left
        self._root = root
        self._identify = identify
        self._memory = memory  # what watches workers' memory, if it is
        self._start_process = start_process
        self._kill_group = kill_group
        self._on_exit = on_exit
        self._pools: dict[str, _Pool] = {}
        self._workers: dict[str, _Worker] = {}
        # workers forked but not registered yet: a fast one says hello before its start
        # returns here, and must be waited for, not turned away (it would exit, jobs unread)
        self._starting: dict[str, asyncio.Future[_Worker]] = {}
        self._jobs: dict[str, _Worker | _Pool] = {}  # where each job is: a worker, or waiting
        self._ids = itertools.count(1)
        self._dir: Path | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._log_dirs: set[Path] = set()  # made already
        #: takes the results workers send over their socket (``None``: they are told to send
        #: them over HTTP)
        self.on_report: ReportCallback | None = None

    # -- the executor's side ----------------------------------------------------------------

    def has(self, job_id: str) -> bool:
        return job_id in self._jobs

    def queued(self, job_id: str) -> bool:
        """Whether the job waits for a worker: for a free slot in its pool, or for the worker
        it was given to to start (a loaded machine may take longer to start one than an
        attempt may be silent for)."""
        where = self._jobs.get(job_id)
        return isinstance(where, _Pool) or (where is not None and where.writer is None)

    async def submit(self, job: Job, pool_key: str, spec: wire.ReuseSpec) -> str:
        """Hand ``job`` to a worker of its pool (starting one if needed), or queue it there."""
        await self._listen()
        pool = self._pools.get(pool_key)
        if pool is None:
            pool = self._pools[pool_key] = _Pool(pool_key, spec, dict(job.env))
        worker = self._free_worker(pool)
        if worker is None and len(pool.workers) + pool.starting < pool.spec.max_replicas:
            pool.starting += 1
            try:
                worker = await self._start_worker(pool, job)
            finally:
                pool.starting -= 1
            self._assign(worker, job)
            self._fill(pool)  # what was queued while it started
            return worker.handle
        if worker is None:
            pool.waiting.append(job)
            self._jobs[job.id] = pool
            return "pool:waiting"
        self._assign(worker, job)
        return worker.handle

    def _fill(self, pool: _Pool) -> None:
        """Give the pool's waiting jobs to its workers' free slots."""
        while pool.waiting:
            worker = self._free_worker(pool)
            if worker is None:
                return
            self._assign(worker, pool.waiting.popleft())

    def cancel(self, job_id: str, reason: ExitReason) -> None:
        where = self._jobs.get(job_id)
        if isinstance(where, _Pool):  # never started: it ends now
            job = next(j for j in where.waiting if j.id == job_id)
            where.waiting.remove(job)
            del self._jobs[job_id]
            self._report(JobExit(job_id, None, reason))
        elif isinstance(where, _Worker):
            pooled = where.jobs.get(job_id)
            if pooled is None:
                return
            if pooled.reason == "exited":
                pooled.reason = reason
            where.cancelling.add(job_id)
            where.send(wire.WorkerCancel(cancel=job_id))
            # a sync task in a thread cannot be cancelled: then the worker goes, whole
            self._later(CANCEL_GRACE_S, self._kill_if_running, where, job_id)

    async def shutdown(self, keep: bool = False) -> None:
        """Stop every worker; with ``keep``, close only their connections: a worker then
        finishes the attempts it runs (delivering their results to the next server process),
        and exits. Its directory is left to the next server process to remove."""
        self._closing = True
        if keep:
            for worker in self._workers.values():
                if worker.writer is not None:
                    worker.writer.close()
            for task in list(self._tasks):
                task.cancel()
            if self._server is not None:
                self._server.close()
            return
        for worker in list(self._workers.values()):
            self._kill_group(worker.process.pid)
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), 5)
        if self._server is not None:
            self._server.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    # -- workers ------------------------------------------------------------------------------

    async def _listen(self) -> None:
        if self._server is not None:
            return
        # a private (0700) directory: only this user can connect; short, for the socket's path
        if self._root is not None:
            self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix=POOLS_DIR_PREFIX, dir=self._root))
        self._server = await asyncio.start_unix_server(
            self._connected, path=str(self._dir / "s"), limit=2**20
        )

    def _free_worker(self, pool: _Pool) -> _Worker | None:
        live = [w for w in pool.workers if not w.stopping]
        if len(live) < pool.spec.min_replicas:
            return None  # bring the pool up to its minimum first: spread the load
        free = [w for w in live if len(w.jobs) < pool.spec.concurrency and not w.cancelling]
        return min(free, key=lambda w: len(w.jobs)) if free else None

    async def _start_worker(self, pool: _Pool, job: Job) -> _Worker:
        assert self._dir is not None
        worker_id = f"w{next(self._ids)}"
        workdir = self._dir / worker_id
        workdir.mkdir()
        log_path = self._dir / f"{worker_id}.log"
        argv = wire.WorkerArgs(job.endpoint, str(self._dir / "s"), worker_id).argv()
        starting = self._starting[worker_id] = asyncio.get_running_loop().create_future()
        try:
            process = await self._start_process(argv, pool.env, workdir, log_path, job.python)
        except (OSError, JobStartError) as e:
            self._starting.pop(worker_id, None)
            starting.cancel()
            raise JobStartError(f"cannot start a worker for {job.id}: {e}") from e
        worker = _Worker(worker_id, pool, process, log_path)
        # what recovery finds its attempts by after a crash: this very process, not a later
        # one with its pid
        worker.handle = f"{WORKER_HANDLE}{process.pid}:{self._identify(process.pid) or ''}"
        pool.workers.append(worker)
        self._workers[worker_id] = worker
        self._starting.pop(worker_id, None)
        starting.set_result(worker)
        self._spawn(self._watch(worker))
        self._later(_HELLO_TIMEOUT_S, self._check_hello, worker)
        # a worker runs `concurrency` attempts at once: it may hold that many requests
        limit = job.resources.memory_bytes
        if limit and self._memory is not None:
            self._memory.watch(
                process.pid, limit * pool.spec.concurrency, functools.partial(self._over, worker)
            )
        log.info("started worker %s (pid %d) for pool %s", worker_id, process.pid, pool.key)
        return worker

    def _assign(self, worker: _Worker, job: Job) -> None:
        if worker.idle_timer is not None:
            worker.idle_timer.cancel()
            worker.idle_timer = None
        pooled = _PooledJob(job)
        worker.jobs[job.id] = pooled
        self._jobs[job.id] = worker
        if job.timeout_s is not None:
            pooled.timer = asyncio.get_running_loop().call_later(
                job.timeout_s, self.cancel, job.id, "timeout"
            )
        if job.log_path.parent not in self._log_dirs:  # one per run: make it once
            if len(self._log_dirs) > 10_000:
                self._log_dirs.clear()
            job.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_dirs.add(job.log_path.parent)
        message = wire.WorkerJob(
            job=job.id,
            run=job.run,
            action=job.action,
            attempt=job.attempt,
            log=str(job.log_path),
            credential=job.credential,  # the attempt's own: the worker holds no other
        )
        # with the spec, the worker starts the attempt without asking the server
        worker.send(message, "" if job.spec is None else f'"spec": {job.spec.model_dump_json()}')

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        worker: _Worker | None = None
        try:
            hello = wire.decode(await reader.readline() or b"{}")
            worker_id = str(hello.get("hello"))
            worker = self._workers.get(worker_id)
            starting = self._starting.get(worker_id)
            if worker is None and starting is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    worker = await asyncio.wait_for(asyncio.shield(starting), _HELLO_TIMEOUT_S)
            if worker is None or worker.writer is not None:
                writer.close()
                return
            worker.writer = writer
            for queued in worker.outbox:
                worker.send_line(queued)
            worker.outbox.clear()
            async for line in reader:
                message = wire.decode(line)
                if "done" in message:
                    self._job_done(worker, message["done"], message.get("code"))
                elif "report" in message:
                    self._spawn(self._take_report(worker, cast(wire.WorkerReport, message)))
        except (ConnectionError, ValueError) as e:
            log.warning("worker connection failed: %s", e)
            if worker is not None:
                self._kill_group(worker.process.pid)
        except Exception:  # a bug: lose the worker (its attempts are retried), never hang it
            log.exception("handling worker %s failed", worker.id if worker else "?")
            if worker is not None:
                self._kill_group(worker.process.pid)

    async def _take_report(self, worker: _Worker, message: wire.WorkerReport) -> None:
        """Record the results a worker sent, each of an attempt that is one of its jobs (a
        worker only ever holds its own attempts' credentials: it may speak for no other), and
        answer it."""
        number = message["report"]
        try:
            if self.on_report is None:
                raise RuntimeError("this executor takes no results: send them over HTTP")
            items = [wire.AttemptReport.model_validate(item) for item in message["items"]]
            own = [job_id(i.run, i.action, i.attempt) in worker.jobs for i in items]
            recorded = iter(
                await self.on_report([i for i, ok in zip(items, own, strict=True) if ok])
            )
            statuses = [next(recorded) if ok else _NOT_ITS_JOB for ok in own]
            answer = wire.WorkerReported(
                reported=number, statuses=[s.model_dump(mode="json") for s in statuses]
            )
        except Exception as e:  # (the worker sends them over HTTP then, which waits and retries)
            log.warning("cannot record the results worker %s sent: %s", worker.id, e)
            answer = wire.WorkerReported(reported=number, statuses=[], error=str(e))
        if worker.writer is not None and not worker.writer.is_closing():
            worker.send_line(wire.encode(answer))

    def _job_done(self, worker: _Worker, job_id: str, code: int | None) -> None:
        pooled = worker.jobs.pop(job_id, None)
        worker.cancelling.discard(job_id)
        if pooled is None:
            return
        self._jobs.pop(job_id, None)
        if pooled.timer is not None:
            pooled.timer.cancel()
        self._report(JobExit(job_id, code, pooled.reason))
        pool = worker.pool
        if pool.waiting and not worker.stopping and not worker.cancelling:
            job = pool.waiting.popleft()
            self._assign(worker, job)
        elif not worker.jobs and not worker.stopping:
            worker.idle_timer = asyncio.get_running_loop().call_later(
                worker.pool.idle_ttl_s, self._retire, worker
            )

    def _retire(self, worker: _Worker) -> None:
        """An idle worker stops; the pool starts another when work comes."""
        if worker.jobs or worker.stopping:
            return
        worker.stopping = True
        worker.send(wire.WorkerStop(stop=True))
        log.info("worker %s idle for %gs: stopping", worker.id, worker.pool.idle_ttl_s)

    async def _watch(self, worker: _Worker) -> None:
        code = await worker.process.wait()
        self._kill_group(worker.process.pid)  # whatever its tasks started goes with it
        if self._memory is not None:
            self._memory.unwatch(worker.process.pid)
        pool = worker.pool
        pool.workers.remove(worker)
        self._workers.pop(worker.id, None)
        if worker.idle_timer is not None:
            worker.idle_timer.cancel()
        lost = list(worker.jobs.values())
        worker.jobs.clear()
        if lost and not self._closing:
            tail = _tail(worker.log_path)
            log.warning(
                "worker %s exited with code %s, losing %d job(s)", worker.id, code, len(lost)
            )
            for pooled in lost:
                _append(
                    pooled.job.log_path,
                    f"[loom] the worker running this attempt (pid {worker.process.pid}) exited "
                    f"with code {code}; its last output:\n{tail}\n",
                )
        for pooled in lost:
            self._jobs.pop(pooled.job.id, None)
            if pooled.timer is not None:
                pooled.timer.cancel()
            self._report(JobExit(pooled.job.id, code, pooled.reason, pooled.peak_bytes))
        with contextlib.suppress(OSError):
            worker.log_path.unlink()
        shutil.rmtree(worker.log_path.with_suffix(""), ignore_errors=True)
        if not pool.workers and not pool.waiting:
            self._pools.pop(pool.key, None)
        elif pool.waiting and not self._closing:
            await self._refill(pool)

    async def _refill(self, pool: _Pool) -> None:
        """Give waiting jobs to workers again after one went away."""
        while pool.waiting:
            worker = self._free_worker(pool)
            if worker is None and len(pool.workers) < pool.spec.max_replicas:
                try:
                    worker = await self._start_worker(pool, pool.waiting[0])
                except JobStartError as e:
                    log.warning("%s", e)
                    worker = None
            if worker is None:
                return
            job = pool.waiting.popleft()
            self._assign(worker, job)

    def _over(self, worker: _Worker, peak: int) -> None:
        """The worker holds more memory than its attempts may: it goes, and every attempt it
        ran fails as over the limit (one process: which of them took it cannot be told)."""
        log.warning("worker %s holds %d bytes, over its limit: killing it", worker.id, peak)
        for pooled in worker.jobs.values():
            pooled.reason = "oom"
            pooled.peak_bytes = peak
        self._kill_group(worker.process.pid)

    def _check_hello(self, worker: _Worker) -> None:
        if worker.writer is None and worker.id in self._workers:
            log.warning("worker %s did not connect within %gs: killing it", worker.id, 60)
            self._kill_group(worker.process.pid)

    def _kill_if_running(self, worker: _Worker, job_id: str) -> None:
        if job_id in worker.jobs:
            log.warning("job %s did not stop when cancelled: killing worker %s", job_id, worker.id)
            self._kill_group(worker.process.pid)

    # -- plumbing -----------------------------------------------------------------------------

    def _report(self, exit: JobExit) -> None:
        if not self._closing:
            self._spawn(self._on_exit(exit))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _later(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        asyncio.get_running_loop().call_later(delay, callback, *args)


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - _LOG_TAIL_BYTES))
            return f.read().decode(errors="replace").strip() or "(nothing)"
    except OSError:
        return "(no output)"


def _append(path: Path, text: str) -> None:
    with contextlib.suppress(OSError), path.open("a", encoding="utf-8") as f:
        f.write(text)
