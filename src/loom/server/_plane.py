"""The control plane: storage, services, scheduler and executor wired together.

It runs on the server's event loop. Services are synchronous and run in worker threads; what
they decide to do after a commit (:class:`~loom.server._runs.Effects`) is carried out here, on
the loop. Its background work lives in modules of its own: the scheduler (``_scheduler``),
recovery at start-up (``_recovery``), the heartbeat sweep (``_heartbeats``) and the flush of
session activity (``_sessions``); this module starts and stops them, launches attempts and
records their processes' exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hashlib
import json
import logging
import os
import shutil
import stat
import threading
from collections import OrderedDict
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from anyio import to_thread

from .. import wire
from ..executors import (
    Executor,
    Job,
    JobExit,
    LocalProcessExecutor,
    job_id,
    machine_capacity,
)
from . import _state as state
from ._auth import Authenticator
from ._bundles import BundleService
from ._checkpoints import CheckpointService
from ._data import DataService
from ._db import Database
from ._environments import SERVER_PYTHON, EnvironmentBuildError, Environments
from ._errors import ConfigurationError, ServerError
from ._events import EventBus
from ._heartbeats import HeartbeatSweep
from ._keys import KeyService
from ._objects import ObjectStore, open_object_store
from ._projects import ProjectService
from ._recovery import Recovery
from ._requests import Defaults
from ._runs import (
    Effects,
    Launch,
    ProcessExit,
    RunService,
    log_key,
    log_path,
    runs_in_worker,
)
from ._scheduler import Claims, Pass, Scheduler
from ._scopes import ScopeService
from ._secrets import SecretService
from ._session_access import SessionAccess, session_host_label
from ._sessions import SessionService, flush_activity_forever
from ._settings import ServerSettings
from ._time_bounds import TimeBoundSweep
from ._values import read_value

log = logging.getLogger("loom.server")


class ControlPlane:
    """Everything the API needs, for one server process."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        executor: Executor | None = None,
        db: Database | None = None,
        store: ObjectStore | None = None,
    ) -> None:
        self.settings = settings
        self.db = db or Database(settings.database_url)
        self.store = store or open_object_store(settings)
        self.executor: Executor = executor or LocalProcessExecutor(
            settings.runtime_command,
            capacity=machine_capacity(
                settings.executor_slots, disk_path=settings.data_dir, gpus=settings.executor_gpus
            ),
            scratch_dir=settings.session_sockets_dir(),
        )
        self.keys = KeyService(self.db)
        self.projects = ProjectService(self.db)
        self.bundles = BundleService(self.db, self.store, settings.max_bundle_bytes)
        self.data = DataService(self.store, settings.max_data_bytes, self.db)
        self.checkpoints = CheckpointService(self.store, settings.max_data_bytes)
        self.runs = RunService(
            self.db,
            self.store,
            self.executor.capacity(),
            Defaults(settings.default_cpu, settings.default_memory_bytes),
            system_retries=settings.system_retries,
        )
        self.runs.dispatch = self._dispatch
        self.sessions = SessionService(self.db, self.runs, self.session_dir)
        self.secrets = SecretService(self.db, settings.data_dir / "secrets-key")
        self.scopes = ScopeService(self.db)
        self.runs.attempts_ended = self._attempts_ended
        # the login cookie's signing secret (and the root of attempt credentials) lives next
        # to the data, readable by the server only
        self.auth = Authenticator(
            self.keys, settings.data_dir / "auth-secret", self.scopes.live_attempt
        )
        self.session_access = SessionAccess(self.auth.signer.secret)
        #: the sessions' public origin (``{id}``: a label of the session's own); set again
        #: once the session listener's port is known
        self.session_origin = settings.session_origin(settings.session_bind_port())
        self.runs.session_origin = self.origin_of_session
        self.bus = EventBus()
        claims = Claims(
            self.runs, self.executor.capacity(), functools.partial(read_value, self.store)
        )
        self.runs.claim_queued = claims.claim_in
        self.runs.handles_back = claims.add_handles
        self.scheduler = Scheduler(claims, self._launch)
        self.logs_dir = settings.data_dir / "logs"
        self.work_dir = settings.data_dir / "work"
        self.tmp_dir = settings.data_dir / "tmp"
        self.runtime_home = settings.data_dir / "runtime"
        #: the Python environments of task images, built on demand
        self.environments = Environments(
            settings.data_dir / "environments", dict(settings.child_env)
        )
        self.sessions_dir = settings.session_sockets_dir()
        #: where action processes reach the API; set once the port is known
        self.endpoint = f"http://{settings.client_host()}:{settings.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # exits reported while the previous batch is being recorded, with their waiters
        self._exits: list[tuple[JobExit, asyncio.Future[None]]] = []
        self._recording_exits = False
        # a fan-out's actions share their task spec and run: their environment and pool too
        self._job_envs: dict[tuple[int, str], tuple[Launch, dict[str, str], str]] = {}
        # jobs this process launched whose exit, once their attempt has ended, changes nothing
        # in the database (not interactive: a session may outlive the attempt's report)...
        self._plain_jobs: set[str] = set()
        # ...and those of them whose attempt has ended (a transition committed): their exit
        # only moves the log to the object store
        self._ended_jobs: set[str] = set()
        self._jobs_lock = threading.Lock()  # (the two change on different threads)
        # jobs whose exit this process has handled: their log is in the store, or there is
        # none (a warm attempt that printed nothing makes no log file)
        self._logs_kept: OrderedDict[str, None] = OrderedDict()

    def prepare(self) -> None:
        """Synchronous start-up work: migrate the schema, make the directories."""
        self.db.migrate()
        self.projects.ensure_default()
        for d in (self.logs_dir, self.work_dir, self.tmp_dir, self.runtime_home):
            d.mkdir(parents=True, exist_ok=True)
        _private_root(self.sessions_dir)

    async def start(self) -> None:
        """Begin scheduling on the running loop, after recovering from a previous crash."""
        self._loop = asyncio.get_running_loop()
        self.bus.attach(self._loop)
        await self.executor.start(self._on_exit, self._on_report)
        await Recovery(
            self.runs, self.executor, self.work_dir, self.logs_dir, self.endpoint, self._keep_log
        ).recover()
        _freeze_heap()
        self.scheduler.start()
        self._spawn(flush_activity_forever(self.sessions))
        self._spawn(
            HeartbeatSweep(self.runs, self.executor, self.settings.heartbeat_timeout_s).forever()
        )
        self._spawn(TimeBoundSweep(self.runs).forever())

    async def stop(self) -> None:
        """Stop scheduling; leave the action processes running, for the next server process
        to adopt (they hold their reports until it answers)."""
        self.bus.stop()
        await self.scheduler.stop()
        # the action processes keep running: the next server process adopts them
        await self.executor.shutdown(keep=True)
        for task in list(self._tasks):
            task.cancel()
        try:
            await to_thread.run_sync(self.sessions.flush)
        except Exception:  # the database is going away too: activity is only a hint
            log.warning("cannot write the last session activity", exc_info=True)
        self._loop = None

    # -- after a commit -------------------------------------------------------------------

    def _attempts_ended(self, ended: set[tuple[str, str, int]]) -> None:
        """Attempts ended (just committed, on the committing thread): their credentials are
        revoked, and their processes' exits need no transaction of their own."""
        self.scopes.attempts_ended(ended)
        with self._jobs_lock:
            for run, action, number in ended:
                job = job_id(run, action, number)
                if job in self._plain_jobs:
                    self._ended_jobs.add(job)

    def _dispatch(self, fx: Effects) -> None:
        """Carry out ``fx`` on the loop (called from any thread, the committing one)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # the attempts the transaction claimed get their specs here, off the loop
        claimed = None if fx.claimed is None else self.scheduler.claims.loaded(fx.claimed)
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self._apply, fx, claimed)

    def _apply(self, fx: Effects, claimed: Pass | None = None) -> None:
        if claimed is not None:
            self.scheduler.adopt(claimed)
        if fx.changed:
            self.bus.publish(fx.changed, fx.outputs)
        if fx.schedule or fx.cancel:
            self.scheduler.wake()
        elif fx.freed:
            self.scheduler.wake(freed=True)
        for job in fx.cancel:
            self._spawn(self.executor.cancel(job))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- executor -------------------------------------------------------------------------

    def job_env(self, launch: Launch) -> dict[str, str]:
        """An action process's environment: the server's (less ``LOOM_*``), the task's
        variables, the run's on top, and the runtime's endpoint and home, which nobody
        overrides. The attempt's credential is added per job (see :meth:`_launch`)."""
        env = dict(self.settings.child_env)
        if launch.task.image is not None:
            env.update(launch.task.image.env_vars)
        env.update(launch.task.env_vars)
        env.update(launch.run_env)
        env["LOOM_ENDPOINT"] = self.endpoint
        # the runtime's own home (bundle cache...), shared by attempts, apart from the user's
        # ~/.loom; its config file does not exist, so the admin's key is never read by a task
        env["LOOM_HOME"] = str(self.runtime_home)
        env["LOOM_CONFIG"] = str(self.runtime_home / "config.yaml")
        if self.settings.ide_dir is not None:
            env["LOOM_IDE_DIR"] = str(self.settings.ide_dir)
        env["LOOM_HEARTBEAT_INTERVAL"] = f"{self.settings.heartbeat_interval_s:g}"
        return env

    def _env_and_pool(self, launch: Launch) -> tuple[dict[str, str], str]:
        """:meth:`job_env` and the warm pool's key, the same for every launch of one task
        spec in one run (the specs are shared objects: see ``_runs.task_spec``)."""
        key = (id(launch.task), launch.run)
        known = self._job_envs.get(key)
        if known is not None and known[0].task is launch.task and known[0].bundle == launch.bundle:
            return known[1], known[2]
        env = self.job_env(launch)
        pool = _pool_key(launch, env) if runs_in_worker(launch.task) else ""
        if len(self._job_envs) > 1000:
            self._job_envs.clear()
        self._job_envs[key] = (launch, env, pool)
        return env, pool

    async def _environment(self, launch: Launch, log_path: Path) -> str | None:
        """The interpreter of the task's image environment, built first if need be (its
        output goes to the attempt's log); ``None``: the runtime's own environment."""
        image = launch.task.image
        if image is None or not wire.needs_environment(image, SERVER_PYTHON):
            return None
        key = self.environments.key(image)
        if not self.environments.is_built(key):
            await to_thread.run_sync(
                _append, log_path, f"[loom] building the image's environment {key}\n"
            )
        environment = await self.environments.ensure(image)
        return str(environment.python)

    async def _launch(self, launch: Launch) -> str | None:
        """Submit ``launch`` to the executor; its handle, or ``None`` if it could not start
        (recorded as such). The scheduler records the handles, many at once."""
        log_file = log_path(self.logs_dir, launch.run, launch.action, launch.attempt)
        try:
            python = await self._environment(launch, log_file)
        except EnvironmentBuildError as e:
            await to_thread.run_sync(_append, log_file, f"[loom] {e}\n")
            await to_thread.run_sync(
                self.runs.launch_failed, launch.run, launch.action, launch.attempt, str(e)
            )
            return None
        env, pool = self._env_and_pool(launch)
        # an interactive attempt owns its process: it hosts an IDE, and ends it whole
        reuse = launch.task.reuse if runs_in_worker(launch.task) else None
        if launch.task.interactive is not None:
            # the one place its IDE's socket may be (see SessionService.register)
            directory = self.session_dir(launch.run, launch.action, launch.attempt)
            await to_thread.run_sync(functools.partial(directory.mkdir, 0o700, exist_ok=True))
            env = {**env, "LOOM_SESSION_DIR": str(directory)}
        job = Job(
            run=launch.run,
            action=launch.action,
            attempt=launch.attempt,
            endpoint=self.endpoint,
            env=env,
            log_path=log_file,
            workdir=self.work_dir / launch.run / launch.action / str(launch.attempt),
            # none for an interactive task: its attempt waits for a person while the session
            # is open (the session's idle limit ends an abandoned one instead)
            timeout_s=state.job_timeout_s(launch.task),
            resources=launch.task.resources,
            reuse=reuse,
            pool=pool,
            spec=launch.spec,
            credential=self.auth.attempts.mint(launch.run, launch.action, launch.attempt),
            python=python,
        )
        if launch.task.interactive is None:
            with self._jobs_lock:
                self._plain_jobs.add(job.id)
        try:
            return await self.executor.submit(job)
        except Exception as e:
            log.warning("cannot start %s: %s", job.id, e)
            with self._jobs_lock:
                self._plain_jobs.discard(job.id)
            await to_thread.run_sync(
                self.runs.launch_failed, launch.run, launch.action, launch.attempt, str(e)
            )
            return None

    async def _on_report(self, reports: list[wire.AttemptReport]) -> list[wire.ItemStatus]:
        """Results a warm worker sent through the executor (which checked they are its
        jobs'): recorded as ``POST /attempts:finish`` records them."""
        return await to_thread.run_sync(self.runs.finish_attempts, reports)

    async def _on_exit(self, exit: JobExit) -> None:
        """Record that a job ended (returns once it is recorded). Exits that come while a
        batch is being recorded are recorded together next: one thread hop and one
        transaction for all of them."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._exits.append((exit, future))
        if not self._recording_exits:
            self._recording_exits = True
            self._spawn(self._record_exits())
        await future

    async def _record_exits(self) -> None:
        """Record the queued exits, a batch at a time. An exit that cannot be recorded (the
        disk is full, the database is away) is tried again, backing off, until it is: dropped,
        its attempt would stay RUNNING and run again after the heartbeat timeout."""
        delay = _RECORD_RETRY_FIRST_S
        try:
            while self._exits:
                batch, self._exits = self._exits, []
                errors: list[Exception | None]
                try:
                    errors = await to_thread.run_sync(self._exited, [e for e, _ in batch])
                except asyncio.CancelledError:
                    for _, future in batch:
                        future.cancel()
                    raise
                except Exception as e:
                    errors = [e] * len(batch)
                again = []
                for (exit, future), error in zip(batch, errors, strict=True):
                    if future.done():
                        continue
                    if error is None:
                        future.set_result(None)
                    elif _unrecorded(error) and not self.bus.stopping.is_set():
                        again.append((exit, future))
                    else:  # its waiter logs it, as it would its own failure
                        future.set_exception(error)
                if not again:
                    delay = _RECORD_RETRY_FIRST_S
                    continue
                log.warning(
                    "cannot record %d process exit(s) (%s); trying again in %g s",
                    len(again),
                    next(e for e in errors if e is not None),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECORD_RETRY_MAX_S)
                self._exits[:0] = again
        finally:
            self._recording_exits = False

    def _exited(self, exits: list[JobExit]) -> list[Exception | None]:
        """Store the ended attempts' logs, then record the exits in one transaction. The
        exit of an attempt that has ended already (it reported) is not recorded: the log's
        key says where it went (see ``RunService.log_source``)."""
        done: list[ProcessExit] = []
        for exit in exits:
            run, action, number = exit.job_id.rsplit("/", 2)
            key = self._keep_log(run, action, int(number))
            with self._jobs_lock:
                self._logs_kept[exit.job_id] = None
                if len(self._logs_kept) > _LOGS_KEPT_REMEMBERED:
                    self._logs_kept.popitem(last=False)
                plain = exit.job_id in self._plain_jobs
                ended = exit.job_id in self._ended_jobs
                self._plain_jobs.discard(exit.job_id)
                self._ended_jobs.discard(exit.job_id)
            if plain and ended:
                continue
            done.append(
                ProcessExit(
                    run, action, int(number), exit.returncode, exit.reason, key, exit.peak_bytes
                )
            )
            if not plain:  # an interactive attempt's socket directory goes with it
                shutil.rmtree(self.session_dir(run, action, int(number)), ignore_errors=True)
        errors = iter(self.runs.processes_exited(done) if done else ())
        recorded = {job_id(e.run, e.action, e.attempt) for e in done}
        return [next(errors) if e.job_id in recorded else None for e in exits]

    def _keep_log(self, run: str, action: str, number: int) -> str | None:
        """Move an ended attempt's log into the object store; return its key."""
        path = log_path(self.logs_dir, run, action, number)
        key = log_key(run, action, number)
        if not os.path.exists(path):  # (os.path: pathlib's exists costs more than the stat)
            # moved already, if recording this exit is being tried again
            return key if self.store.exists(key) else None
        try:
            self.store.put_file(key, path, move=True)
        except Exception:
            log.exception("cannot store the log of %s/%s/%s", run, action, number)
            return None
        return key

    def session_dir(self, run: str, action: str, attempt: int) -> Path:
        """Where the IDE of that attempt must put its socket: a private directory the server
        makes when it launches the attempt (short: a socket's path has about 100 bytes)."""
        label = hashlib.sha256(job_id(run, action, attempt).encode()).hexdigest()[:12]
        return self.sessions_dir / label

    def origin_of_session(self, session_id: str) -> str:
        """The session's own origin: the sessions' origin with its label for ``{id}``."""
        return self.session_origin.replace("{id}", session_host_label(session_id))

    def live_log(self, run: str, action: str, number: int) -> Path:
        return log_path(self.logs_dir, run, action, number)

    def log_kept(self, run: str, action: str, number: int) -> bool:
        """Whether that attempt's process exited and its log (if it had one) was stored, as
        far as this server process knows: no need to wait for the log to arrive."""
        with self._jobs_lock:
            return job_id(run, action, number) in self._logs_kept


#: How many handled exits :meth:`ControlPlane.log_kept` remembers.
_LOGS_KEPT_REMEMBERED = 10_000

#: How soon an exit that could not be recorded is tried again, and the longest wait between.
_RECORD_RETRY_FIRST_S = 0.2
_RECORD_RETRY_MAX_S = 10.0


def _unrecorded(error: Exception) -> bool:
    """Whether recording an exit failed for a reason that may pass (storage, database), as
    opposed to an answer (the attempt is unknown or over: nothing to record)."""
    return not isinstance(error, ServerError) or type(error) is ServerError


def _private_root(path: Path) -> None:
    """Make ``path`` a directory only this user can use (it may be in a shared /tmp: one that
    somebody else made, or opened up, is refused)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigurationError(
            f"{path} (for the IDE sockets of interactive sessions) is not a private directory "
            "of this user: remove it, or set LOOM_SESSION_ROOT to another"
        )


_heap_frozen = False


def _freeze_heap() -> None:
    """Move what start-up made (modules, the app, caches: hundreds of thousands of objects
    that live as long as the process) out of the collector's sight, once per process. Every
    full collection would walk them again, and the hot paths allocate enough (rows, models)
    to trigger collections often."""
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.collect()
        gc.freeze()


def _append(path: Path, text: str) -> None:
    """Add a line of the server's to an attempt's log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(text)


def _pool_key(launch: Launch, env: dict[str, str]) -> str:
    """Warm workers are interchangeable within one environment, code bundle, reuse policy and
    process environment: a worker started for one of those runs any action of the others."""
    reuse = launch.task.reuse
    assert reuse is not None
    identity = [
        launch.project,  # a worker never serves two projects (nor domains): tasks in one
        launch.domain,  # process can read each other's memory
        launch.task.environment,
        launch.bundle,
        reuse.model_dump(mode="json"),
        sorted(env.items()),
        # its image's environment: the workers' interpreter
        None if launch.task.image is None else wire.environment_digest(launch.task.image),
    ]
    digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]
    return f"{launch.task.environment}-{digest}"
