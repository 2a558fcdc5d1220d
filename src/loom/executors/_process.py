"""The local process executor: every attempt is a ``python -m loom.runtime`` process group."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import wire
from ._errors import JobStartError
from ._gpus import Devices
from ._memory import MemoryGuard
from ._pool import POOLS_DIR_PREFIX, WORKER_HANDLE, WorkerPools
from ._protocol import (
    Capacity,
    ExitCallback,
    ExitReason,
    Job,
    JobExit,
    JobStatus,
    ReportCallback,
)
from ._zygote import ForkedProcess, Zygote

log = logging.getLogger("loom.executors")

_KEEP_FINISHED = 10_000
_STALE_SWEEP_S = 2.0
_PROCESSES_FRESH_S = 2.0  # how long one scan of the processes serves adoptions
DEFAULT_COMMAND: tuple[str, ...] = (sys.executable, "-m", "loom.runtime")
#: How long an image environment's fork server may fork nothing before it stops.
ENV_ZYGOTE_IDLE_S = 600.0


def machine_capacity(
    slots: int | None = None, disk_path: Path | None = None, gpus: int | None = None
) -> Capacity:
    """This machine: its CPUs (the ones this process may use), physical memory, NVIDIA GPUs
    (``gpus`` if given), and the size of the file system that holds ``disk_path`` (where
    attempts work); ``slots``: at most that many attempts at once."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        memory = 0
    disk = None
    if disk_path is not None:
        with contextlib.suppress(OSError):
            disk = shutil.disk_usage(_existing(disk_path)).total
    return Capacity(
        slots=slots,
        cpu=float(cpus),
        memory_bytes=memory,
        gpu=_nvidia_gpus() if gpus is None else gpus,
        disk_bytes=disk,
    )


def _nvidia_gpus() -> int:
    """NVIDIA's driver makes one ``/dev/nvidiaN`` per GPU (and others, such as
    ``/dev/nvidiactl``, that are not GPUs)."""
    try:
        return sum(1 for name in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", name))
    except OSError:
        return 0


def _existing(path: Path) -> Path:
    """``path``, or its nearest ancestor that exists (the data directory may be new)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _env(job: Job) -> Mapping[str, str]:
    """The job's process environment, with its attempt's credential as ``LOOM_API_KEY``."""
    if not job.credential:
        return job.env
    return {**job.env, "LOOM_API_KEY": job.credential}


def _spec_file(job: Job) -> Path:
    return job.workdir / ".loom-spec.json"


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only this user can read: a spec holds the action's inputs."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def process_identity(pid: int) -> str | None:
    """A token that tells this process apart from a later one with a reused pid (its start
    time on Linux), or ``None`` if no process ``pid`` exists."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        stat = ""
    if not stat:  # no /proc: fall back to "it exists"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    # the command name may contain spaces and parentheses: fields start after the last ')'
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def _working_dirs() -> list[tuple[str, int]]:
    """The working directory of every process this user can see, and its pid."""
    found: list[tuple[str, int]] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    found.append((os.readlink(f"/proc/{entry.name}/cwd"), int(entry.name)))
    return found


def _working_in(workdir: Path, dirs: list[tuple[str, int]] | None = None) -> tuple[int, str] | None:
    """The process working in an attempt's work dir (each attempt has its own; the one that
    leads its process group, not a child it started), with its identity: an attempt whose
    handle was not recorded yet when the server died. ``dirs``: :func:`_working_dirs`, if
    just taken."""
    target = str(workdir.resolve())
    for cwd, pid in _working_dirs() if dirs is None else dirs:
        with contextlib.suppress(OSError):
            if cwd == target and os.getpgid(pid) == pid:
                return pid, process_identity(pid) or ""
    return None


def remove_workdir(workdir: Path) -> None:
    """Remove an attempt's work dir, and its action's and run's once they are empty (the
    server makes them ``<work>/<run>/<action>/<attempt>``)."""
    shutil.rmtree(workdir, ignore_errors=True)
    for parent in (workdir.parent, workdir.parent.parent):
        try:
            parent.rmdir()
        except OSError:  # not empty: another attempt of the run is still there
            return


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group; a group that is gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def _ended(pid: int) -> None:
    """Return once process ``pid`` has ended (a pidfd turns readable then: the process need
    not be our child)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    ended = loop.create_future()

    def readable() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await ended
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


class _Spawned:
    """A process started here without the fork server (the part of ``Process`` we use).
    Not an asyncio subprocess: closing one of those kills its process, and the processes
    must outlive a server that stops, for the next one to adopt."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.pid = popen.pid
        self._popen = popen
        self.returncode: int | None = None

    async def wait(self) -> int | None:
        if self._popen.poll() is None:
            await _ended(self.pid)
        self.returncode = self._popen.wait()
        return self.returncode


class _Adopted:
    """A process a previous server process started and this one took over: not our child,
    so no exit status, but a pidfd says when it ends."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    async def wait(self) -> int | None:
        await _ended(self.pid)
        return None


def parse_handle(handle: str) -> tuple[int, str] | None:
    """The pid and identity in a job's handle: ``pid:<pid>:<identity>`` for a process of the
    job's own, ``worker:<pid>:<identity>`` for the warm worker it was given to."""
    kind, _, rest = handle.partition(":")
    pid_text, _, identity = rest.partition(":")
    if kind not in ("pid", WORKER_HANDLE[:-1]) or not pid_text.isdigit():
        return None
    return int(pid_text), identity


@dataclass
class _Running:
    job: Job
    process: _Spawned | ForkedProcess | _Adopted
    reason: ExitReason = "exited"
    peak_bytes: int | None = None
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


class LocalProcessExecutor:
    """Runs each job as a process in its own session and process group on this machine.

    stdout and stderr go to the job's log file. A timeout or a cancel SIGKILLs the whole
    group at once: the attempt's outcome is decided by the server, so the runtime gets no
    chance to report something else in between. When the main process exits, whatever it
    left behind in its group is killed too. Jobs of a reusable environment run in warm
    worker processes instead (:mod:`loom.executors._pool`).
    """

    def __init__(
        self,
        command: Sequence[str] = DEFAULT_COMMAND,
        *,
        slots: int | None = None,
        capacity: Capacity | None = None,
        fork_server: bool | None = None,
        spec_files: bool | None = None,
        scratch_dir: Path | None = None,
    ) -> None:
        self._command = tuple(command)
        #: a private directory of this server's (the pools' sockets go there: short paths),
        #: where the next server process finds what a crash left behind
        self._scratch_dir = scratch_dir
        self._stale_dirs: list[Path] = []
        self._processes_seen: tuple[float, list[tuple[str, int]]] | None = None
        self._ledgers_read: tuple[float, dict[Path, set[str]]] | None = None
        self._sweeping: asyncio.Task[None] | None = None
        # Fork attempts from a warm runtime process; only the real runtime speaks its protocol.
        use_zygote = self._command == DEFAULT_COMMAND if fork_server is None else fork_server
        self._zygote: Zygote | None = Zygote(self._command) if use_zygote else None
        # a job's spec goes along in a file (saving the runtime two requests): an option of
        # the real runtime (``--spec-file``), as the fork server is its protocol
        self._spec_files = self._command == DEFAULT_COMMAND if spec_files is None else spec_files
        self._zygote_starting: asyncio.Task[None] | None = None
        # a fork server per image environment (by interpreter), started when first needed
        # and stopped once idle (see _stop_idle_zygotes)
        self._env_zygotes: dict[str, tuple[Zygote, asyncio.Task[None]]] = {}
        self._idle_zygotes: asyncio.Task[None] | None = None
        self._capacity = capacity or machine_capacity(slots)
        self._running: dict[str, _Running] = {}
        self._finished: OrderedDict[str, int | None] = OrderedDict()  # recent exits
        self._cancelled_early: OrderedDict[str, None] = OrderedDict()  # see cancel()
        self._ended_early: set[asyncio.Task[None]] = set()  # their exit reports, under way
        self._on_exit: ExitCallback | None = None
        self._closing = False
        self._keeping = False  # shutting down, leaving the processes for the next server
        self._memory = MemoryGuard()
        self._gpus = Devices(self._capacity.gpu)
        self._pools = WorkerPools(
            self._start,
            kill_group,
            self._recorded_exit,
            process_identity,
            root=scratch_dir,
            memory=self._memory,
        )

    def capacity(self) -> Capacity:
        return self._capacity

    async def start(self, on_exit: ExitCallback, on_report: ReportCallback | None = None) -> None:
        self._on_exit = on_exit
        self._pools.on_report = on_report
        if self._scratch_dir is not None and self._scratch_dir.is_dir():
            # a previous server process's pools: gone once their last worker is
            self._stale_dirs = sorted(self._scratch_dir.glob(POOLS_DIR_PREFIX + "*"))
            self._remove_stale_dirs()
            if self._stale_dirs:
                self._sweeping = asyncio.create_task(self._sweep_stale_dirs())
        if self._zygote is not None:  # warm up in the background; spawn directly meanwhile
            self._zygote_starting = asyncio.create_task(self._start_zygote(self._zygote))
            self._idle_zygotes = asyncio.create_task(self._stop_idle_zygotes())

    async def _stop_idle_zygotes(self) -> None:
        """Stop the fork server of an image environment that has forked nothing for
        :data:`ENV_ZYGOTE_IDLE_S` and has no child left (the next attempt of that
        environment starts another)."""
        while True:
            await asyncio.sleep(min(30.0, ENV_ZYGOTE_IDLE_S / 2))
            now = time.monotonic()
            for python, (zygote, starting) in list(self._env_zygotes.items()):
                idle = now - zygote.last_spawn >= ENV_ZYGOTE_IDLE_S
                if idle and starting.done() and zygote.children == 0:
                    del self._env_zygotes[python]
                    log.info("stopping the idle fork server of %s", python)
                    await zygote.stop()

    @staticmethod
    async def _start_zygote(zygote: Zygote) -> None:
        try:
            await zygote.start()
        except (OSError, JobStartError, TimeoutError, ValueError) as e:
            log.warning("no runtime fork server (%s); every attempt starts a fresh process", e)

    def argv(self, job: Job) -> list[str]:
        """The command line of ``job``."""
        spec_file = str(_spec_file(job)) if job.spec is not None and self._spec_files else None
        args = wire.AttemptArgs(job.endpoint, job.run, job.action, job.attempt, spec_file)
        return [*self._command_of(job.python), *args.argv()]

    def _command_of(self, python: str | None) -> tuple[str, ...]:
        """The runtime's command: this executor's, or the one of an image's interpreter."""
        return self._command if python is None else (python, "-m", "loom.runtime")

    async def submit(self, job: Job) -> str:
        if self._closing:
            raise JobStartError("the executor is shutting down")
        if self._cancelled_early.pop(job.id, 0) is None:
            # not started; its end is reported all the same, as for every submitted job
            exit = JobExit(job.id, None, "cancelled")
            task = asyncio.create_task(self._recorded_exit(exit))
            self._ended_early.add(task)
            task.add_done_callback(self._ended_early.discard)
            return "cancelled"
        if job.reuse is not None:
            return await self._pools.submit(job, job.pool or job.id, job.reuse)
        try:
            job.log_path.parent.mkdir(parents=True, exist_ok=True)
            job.workdir.mkdir(parents=True, exist_ok=True)
            if job.spec is not None and self._spec_files:
                _write_private(_spec_file(job), job.spec.model_dump_json().encode())
            env = {**_env(job), **self._gpus.take(job.id, job.resources.gpu or 0)}
            process = await self._fork(job, env) or await self._spawn(job, env)
        except (OSError, JobStartError) as e:
            self._gpus.give_back(job.id)
            remove_workdir(job.workdir)
            if isinstance(e, JobStartError):
                raise
            raise JobStartError(f"cannot start {self._command[0]!r}: {e}") from e
        running = _Running(job, process)
        self._running[job.id] = running
        running.watcher = asyncio.create_task(self._watch(running), name=f"job {job.id}")
        identity = process_identity(process.pid) or ""
        return f"pid:{process.pid}:{identity}"

    async def _fork(self, job: Job, env: Mapping[str, str]) -> ForkedProcess | None:
        command = self._command_of(job.python)
        return await self._fork_argv(
            self.argv(job)[len(command) :], env, job.workdir, job.log_path, job.python
        )

    def _zygote_for(self, python: str | None) -> Zygote | None:
        """The fork server of the executor's runtime, or of an image's environment: started
        in the background the first time one is asked for (attempts spawn meanwhile)."""
        if python is None or self._zygote is None:  # (no fork servers at all: none per image)
            return self._zygote
        found = self._env_zygotes.get(python)
        if found is None:
            zygote = Zygote(self._command_of(python))
            found = self._env_zygotes[python] = (
                zygote,
                asyncio.create_task(self._start_zygote(zygote)),
            )
        return found[0]

    async def _fork_argv(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        python: str | None = None,
    ) -> ForkedProcess | None:
        """A child of the warm fork server, or ``None`` when it is not available."""
        zygote = self._zygote_for(python)
        if zygote is None or not zygote.alive:
            return None
        try:
            return await zygote.spawn(argv, env, cwd, log_path)
        except (JobStartError, OSError, TimeoutError) as e:
            log.warning("forking %s failed (%s); starting a fresh process", argv, e)
            return None

    async def _spawn(self, job: Job, env: Mapping[str, str]) -> _Spawned:
        command = self._command_of(job.python)
        return await self._spawn_argv(
            self.argv(job)[len(command) :], env, job.workdir, job.log_path, job.python
        )

    async def _spawn_argv(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        python: str | None = None,
    ) -> _Spawned:
        with log_path.open("ab") as out:
            return _Spawned(
                subprocess.Popen(
                    [*self._command_of(python), *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=dict(env),
                    cwd=cwd,
                    start_new_session=True,  # its own process group, to kill it whole
                )
            )

    async def _start(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
        python: str | None = None,
    ) -> ForkedProcess | _Spawned:
        """``<runtime> *argv`` (of an image's ``python``) forked from the fork server when it
        runs, spawned otherwise."""
        forked = await self._fork_argv(argv, env, cwd, log_path, python)
        if forked is not None:
            return forked
        return await self._spawn_argv(argv, env, cwd, log_path, python)

    async def _recorded_exit(self, exit: JobExit) -> None:
        """Remember a job's end and report it: a warm worker's job, or one never started."""
        self._finished[exit.job_id] = exit.returncode
        while len(self._finished) > _KEEP_FINISHED:
            self._finished.popitem(last=False)
        if self._on_exit is not None and not self._closing:
            try:
                await self._on_exit(exit)
            except Exception:
                log.exception("handling the exit of job %s failed", exit.job_id)

    def _over_memory(self, running: _Running, peak: int) -> None:
        running.reason = "oom"
        running.peak_bytes = peak
        kill_group(running.process.pid)

    async def _watch(self, running: _Running) -> None:
        job, process = running.job, running.process
        limit = job.resources.memory_bytes
        if limit:
            self._memory.watch(process.pid, limit, functools.partial(self._over_memory, running))
        try:
            if job.timeout_s is None:
                await process.wait()
            else:
                try:
                    await asyncio.wait_for(process.wait(), job.timeout_s)
                except TimeoutError:
                    running.reason = "timeout"
                    kill_group(process.pid)
                    await process.wait()
        except asyncio.CancelledError:
            if self._keeping:  # left running for the next server process, work dir and all
                raise
            self._end(running)
            raise
        self._end(running)
        if self._on_exit is not None and not self._closing:
            try:
                await self._on_exit(
                    JobExit(job.id, process.returncode, running.reason, running.peak_bytes)
                )
            except Exception:  # the server logs and recovers; never lose the watcher quietly
                log.exception("handling the exit of job %s failed", job.id)

    def _end(self, running: _Running) -> None:
        """What is left of a job whose process ended (or that is given up)."""
        job, process = running.job, running.process
        if job.resources.memory_bytes:
            running.peak_bytes = max(running.peak_bytes or 0, self._memory.unwatch(process.pid))
        # leftovers: children the task started in its group outlive nothing
        kill_group(process.pid)
        self._running.pop(job.id, None)
        self._gpus.give_back(job.id)
        self._finished[job.id] = process.returncode
        while len(self._finished) > _KEEP_FINISHED:
            self._finished.popitem(last=False)
        remove_workdir(job.workdir)
        if self._stale_dirs and isinstance(process, _Adopted):
            self._remove_stale_dirs()

    def _processes(self) -> list[tuple[str, int]]:
        """:func:`_working_dirs`, looked up once for the many adoptions of a recovery (the
        processes it looks for were there before it began)."""
        now = time.monotonic()
        if self._processes_seen is None or now - self._processes_seen[0] > _PROCESSES_FRESH_S:
            self._processes_seen = (now, _working_dirs())
        return self._processes_seen[1]

    def _pool_worker_of(self, job: Job) -> tuple[int, str] | None:
        """The worker of a previous server process's pool that runs ``job`` (it keeps a
        ledger of the attempts it runs, see ``loom.wire.WORKER_LEDGER``)."""
        mark = wire.worker_job_marker(job.run, job.action, job.attempt)
        for worker_dir, running in self._ledgers().items():
            if mark in running:
                return _working_in(worker_dir, self._processes())
        return None

    def _ledgers(self) -> dict[Path, set[str]]:
        """What the stale pools' workers say they run, by worker directory (read once for
        the adoptions of one recovery: a second's old news is news enough)."""
        now = time.monotonic()
        if self._ledgers_read is None or now - self._ledgers_read[0] > _PROCESSES_FRESH_S:
            found: dict[Path, set[str]] = {}
            for pools in self._stale_dirs:
                for ledger in pools.glob(f"*/{wire.WORKER_LEDGER}"):
                    with contextlib.suppress(OSError):
                        found[ledger.parent] = wire.ledger_running(ledger.read_bytes())
            self._ledgers_read = (now, found)
        return self._ledgers_read[1]

    async def _sweep_stale_dirs(self) -> None:
        """Workers left idle by a crash exit on their own, adopted by nobody: look again."""
        while self._stale_dirs:
            await asyncio.sleep(_STALE_SWEEP_S)
            self._remove_stale_dirs()

    def _remove_stale_dirs(self) -> None:
        """Remove the stale pools' directories in which no process works any more."""
        busy = _working_dirs()
        kept = []
        for path in self._stale_dirs:
            prefix = str(path) + os.sep
            if any(cwd.startswith(prefix) for cwd, _ in busy):
                kept.append(path)
            else:
                shutil.rmtree(path, ignore_errors=True)
        self._stale_dirs = kept

    async def cancel(self, job_id: str) -> None:
        if self._pools.has(job_id):
            self._pools.cancel(job_id, "cancelled")
            return
        running = self._running.get(job_id)
        if running is None:
            if job_id not in self._finished:
                # cancelled before it was submitted (an abort while the scheduler is still
                # launching a fan-out): it must not start at all
                self._cancelled_early[job_id] = None
                while len(self._cancelled_early) > _KEEP_FINISHED:
                    self._cancelled_early.popitem(last=False)
            return
        if running.reason == "exited":
            running.reason = "cancelled"
        kill_group(running.process.pid)

    def status(self, job_id: str) -> JobStatus:
        if self._pools.queued(job_id):
            return JobStatus("queued")
        if job_id in self._running or self._pools.has(job_id):
            return JobStatus("running")
        if job_id in self._finished:
            return JobStatus("exited", self._finished[job_id])
        return JobStatus("unknown")

    async def adopt(self, job: Job, handle: str) -> bool:
        # a warm worker marks each attempt it runs, until its result is delivered; where it
        # waited in a pool, or its handle was not recorded yet, the marks are all there is
        parsed = self._pool_worker_of(job)
        if parsed is None and not handle.startswith(WORKER_HANDLE):
            parsed = parse_handle(handle) or _working_in(job.workdir, self._processes())
        # (a worker's handle, unmarked: it ran the attempt to its end, or never began it)
        current = None if parsed is None else process_identity(parsed[0])
        if parsed is None or current is None or (parsed[1] and current != parsed[1]):
            # never started, or gone (a reused pid is someone else's)
            await self.reclaim(handle)
            remove_workdir(job.workdir)
            return False
        pid = parsed[0]
        running = _Running(job, _Adopted(pid))
        self._running[job.id] = running
        running.watcher = asyncio.create_task(self._watch(running), name=f"job {job.id}")
        return True

    async def reclaim(self, handle: str) -> None:
        if handle.startswith(WORKER_HANDLE):
            return  # a warm worker runs other attempts too: it ends when they have
        parsed = parse_handle(handle)
        if parsed is None:
            return
        pid, identity = parsed
        current = process_identity(pid)
        # only kill the very process we started: a reused pid belongs to someone else
        if current is not None and (current == identity or not identity):
            kill_group(pid)

    async def shutdown(self, keep: bool = False) -> None:
        self._closing = True
        if self._sweeping is not None:
            self._sweeping.cancel()
        await self._memory.close()
        await self._pools.shutdown(keep)
        running = list(self._running.values())
        self._keeping = keep
        if keep:  # for the next server process to adopt; their work dirs are theirs still
            for r in running:
                if r.watcher is not None:
                    r.watcher.cancel()
            running = []
        for r in running:
            kill_group(r.process.pid)
        for r in running:
            if r.watcher is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(r.watcher), 5)
        if self._zygote_starting is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._zygote_starting, 5)
        if self._zygote is not None:
            await self._zygote.stop(keep_children=keep)
        if self._idle_zygotes is not None:
            self._idle_zygotes.cancel()
        for zygote, starting in self._env_zygotes.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(starting, 5)
            await zygote.stop(keep_children=keep)
