"""Runs, actions and attempts: the state machine's storage side, the only writer of their state.

Runtimes and clients *propose* (create an action, an attempt started or finished); the methods
here accept or reject, idempotently where a retried request must be safe. Each write happens in
one transaction under the database's writer lock; what must happen after it commits (wake the
scheduler, kill processes, notify waiters) is collected as :class:`Effects` and handed to the
dispatcher the control plane installs.

A fan-out goes through here a thousand actions at a time, so the paths every action takes
(creating children, claiming attempts, runtimes' reports, process exits) take batches: one
transaction for many items, each item accepted or refused on its own as its one-item
counterpart would. Their common case works on plain rows with a few prepared statements per
batch (what :meth:`RunService._set_phase` does, spelled out for many rows); anything unusual
(a cache, a retry, a run's end, open children or sessions) goes through the ORM path.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Select, Table, Text, bindparam, exists, func, insert, or_, select, update
from sqlalchemy import cast as cast_
from sqlalchemy.orm import Session, aliased

from .. import wire
from ..executors import Capacity, job_id
from . import _state as state
from ._db import Database
from ._errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    ServerError,
    UnprocessableError,
)
from ._models import (
    Action,
    Attempt,
    Bundle,
    CacheEntry,
    Event,
    InteractiveSession,
    Project,
    Run,
    utcnow,
)
from ._objects import ObjectStore
from ._requests import Defaults, Requests, Room
from ._state import ROOT_ACTION, TERMINAL

log = logging.getLogger("loom.server")

_CLAIM_BATCH = 200  # queued actions looked at per query when claiming
_IN_CHUNK = 500  # names per ``IN (...)`` list: well under every backend's parameter limit


@dataclass
class Effects:
    """What to do once a transaction has committed."""

    changed: set[tuple[str, str]] = field(default_factory=set)  # (run, action) phase changes
    cancel: list[str] = field(default_factory=list)  # executor job ids to kill
    schedule: bool = False  # something may start now

    def __bool__(self) -> bool:
        return bool(self.changed or self.cancel or self.schedule)


@dataclass(frozen=True, slots=True)
class Launch:
    """An attempt the scheduler has claimed and must now start."""

    run: str
    action: str
    attempt: int
    task: wire.TaskSpec
    run_env: dict[str, str]
    bundle: str = ""
    #: the attempt's row, to record the executor's handle by
    attempt_id: int = 0
    #: what the runtime needs, loaded at claim time for an attempt that runs in a warm worker
    #: (which then asks the server for nothing before it starts)
    spec: wire.ActionSpec | None = None
    #: the run's project and domain (warm workers never serve two of them)
    project: str = ""
    domain: str = ""


def task_spec(spec: dict[str, Any] | str) -> wire.TaskSpec:
    """The ``TaskSpec`` of a stored action (its JSON column, parsed or as text): validated
    once per distinct spec (the children of a fan-out share theirs), not once per row."""
    if not isinstance(spec, str):
        spec = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return _task_spec(spec)


@functools.lru_cache(maxsize=1024)
def _task_spec(text: str) -> wire.TaskSpec:
    return wire.TaskSpec.model_validate_json(text)  # frozen: safe to share


def runs_in_worker(task: wire.TaskSpec) -> bool:
    """Whether attempts of ``task`` run in a warm worker: a reusable environment's, unless
    interactive (an interactive attempt owns its process: it hosts an IDE and ends it whole)."""
    return task.reuse is not None and task.interactive is None


@dataclass(frozen=True, slots=True)
class ProcessExit:
    """An attempt's process (or its share of a warm worker) ended; see
    :meth:`RunService.processes_exited`."""

    run: str
    action: str
    attempt: int
    returncode: int | None
    reason: str
    log_key: str | None = None
    peak_bytes: int | None = None  # the most memory it held, where the executor watched


@dataclass(frozen=True, slots=True)
class RunningAttempt:
    run: str
    action: str
    attempt: int
    handle: str | None
    started_at: datetime | None = None
    task: wire.TaskSpec | None = None


@dataclass(frozen=True, slots=True)
class LogSource:
    """Where one attempt's log is: the object store once it ended, a local file before."""

    attempt: int  # 0 when the action has no attempt yet
    ended: bool  # the attempt (or, with no attempt, the action) is over
    log_key: str | None


@dataclass(frozen=True, slots=True)
class _AttemptRow:
    """An attempt with what deciding on a report about it takes, read without the ORM."""

    run: str
    action: str
    action_id: int
    action_phase: str
    attempts: int  # the action's: the number of its current attempt
    cached: bool  # its task has a cache (``Action.cache`` is "disabled" when it has none)
    attempt_id: int
    number: int
    phase: str
    reported: bool
    error: dict[str, Any] | None
    open_children: bool

    def not_current(self) -> ConflictError | None:
        return _not_current(
            self.run, self.action, self.attempts, self.number, self.phase, self.error
        )


def _not_current(
    run: str, action: str, current: int, number: int, phase: str, error: dict[str, Any] | None
) -> ConflictError | None:
    """Why attempt ``number`` may not report (409): another replaced it, or it has ended."""
    if number != current:
        return ConflictError(
            f"attempt {number} of action {action!r} in run {run!r} is "
            f"stale: attempt {current} replaced it"
        )
    if phase in TERMINAL:
        reason = _error(error)
        return ConflictError(
            f"attempt {number} of action {action!r} in run {run!r} has "
            f"already ended ({phase}" + (f": {reason.message}" if reason else "") + ")"
        )
    return None


@dataclass
class _Tx:
    s: Session
    fx: Effects
    #: ids of actions known (from one query for a whole batch) to have no open children
    no_open_children: set[int] = field(default_factory=set)
    #: event rows, inserted together when the transaction ends (in this order: their seq)
    events: list[dict[str, Any]] = field(default_factory=list)


#: One write transaction and what to do after it commits (for the session service).
Tx = _Tx


def encode_value(value: Any, what: str) -> bytes:
    """Compact JSON of inputs or outputs, refused with 413 over ``wire.MAX_INLINE_BYTES``
    and with 422 if it holds NaN or Infinity (which JSON has not)."""
    try:
        data = json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except ValueError:
        raise UnprocessableError(
            f"{what} hold NaN or Infinity, which JSON cannot carry; send null or a string"
        ) from None
    if len(data) > wire.MAX_INLINE_BYTES:
        raise PayloadTooLargeError(
            f"{what} are {len(data)} bytes of JSON, over the limit of "
            f"{wire.MAX_INLINE_BYTES} bytes (wire.MAX_INLINE_BYTES); pass large data as "
            "loom.io.File or Dir, which travel through the object store"
        )
    return data


def _error(data: dict[str, Any] | None) -> wire.ErrorInfo | None:
    return None if data is None else wire.ErrorInfo.model_validate(data)


def _dump(error: wire.ErrorInfo) -> dict[str, Any]:
    return error.model_dump(mode="json")


def attempt_info(a: Attempt) -> wire.AttemptInfo:
    return wire.AttemptInfo(
        number=a.number,
        phase=a.phase,  # type: ignore[arg-type]
        started_at=a.started_at,
        ended_at=a.ended_at,
        error=_error(a.error),
    )


def action_info(
    run: str,
    a: Action,
    attempts: Sequence[Attempt],
    session: wire.SessionInfo | None = None,
) -> wire.ActionInfo:
    return wire.ActionInfo(
        run=run,
        name=a.name,
        parent=a.parent,
        group=list(a.group),
        task=a.task,
        phase=a.phase,  # type: ignore[arg-type]
        attempts=[attempt_info(t) for t in sorted(attempts, key=lambda t: t.number)],
        created_at=a.created_at,
        started_at=a.started_at,
        ended_at=a.ended_at,
        error=_error(a.error),
        cache=a.cache,  # type: ignore[arg-type]
        session=session,
    )


def session_url(session_id: str) -> str:
    """Where the session proxy serves a session (outside ``/api/v1``)."""
    return f"/sessions/{session_id}/"


def session_info(
    row: InteractiveSession,
    run: str,
    action: str,
    activity: datetime | None = None,
    origin: str = "",
) -> wire.SessionInfo:
    """The wire view of a session; ``activity`` is newer activity not yet written to the row,
    ``origin`` the session's own origin. The IDE's token stays out of it."""
    last = row.last_activity_at
    if activity is not None and activity > last:
        last = activity
    open_ = row.ended_at is None
    deadline = None
    if open_ and row.max_idle_seconds is not None:
        deadline = last + timedelta(seconds=row.max_idle_seconds)
    return wire.SessionInfo(
        id=row.id,
        run=run,
        action=action,
        attempt=row.attempt,
        kind=row.kind,  # type: ignore[arg-type]
        state=row.state,  # type: ignore[arg-type]
        url=session_url(row.id),
        origin=origin,
        workspace=row.workspace,
        max_idle_seconds=row.max_idle_seconds,
        started_at=row.started_at,
        last_activity_at=last,
        idle_deadline=deadline,
        ended_at=row.ended_at,
        end_reason=row.end_reason,
    )


def run_info(r: Run, project: str, actions: int) -> wire.RunInfo:
    return wire.RunInfo(
        name=r.name,
        project=project,
        domain=r.domain,
        task=r.task,
        phase=r.phase,  # type: ignore[arg-type]
        created_at=r.created_at,
        started_at=r.started_at,
        ended_at=r.ended_at,
        created_by=r.created_by,
        error=_error(r.error),
        actions=actions,
    )


class RunService:
    """Everything about runs, actions and attempts."""

    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        capacity: Capacity,
        defaults: Defaults | None = None,
        system_retries: int = 3,
    ) -> None:
        self._db = db
        self._store = store
        self.capacity = capacity
        #: the requests of a task that makes none (see ``_requests``)
        self.defaults = defaults or Defaults()
        #: attempts the infrastructure may lose, per action, before it fails (see ``_state``)
        self.system_retries = system_retries
        self.dispatch: Callable[[Effects], None] = lambda fx: None
        #: a session's activity newer than its row (the session service keeps it in memory)
        self.activity: Callable[[str], datetime | None] = lambda session_id: None
        #: a session's own origin (the control plane knows where sessions are served)
        self.session_origin: Callable[[str], str] = lambda session_id: ""

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[_Tx]:
        fx = Effects()
        with self._db.write() as s:
            tx = _Tx(s, fx)
            yield tx
            if tx.events:  # one multi-row insert, not an ORM object per event
                s.execute(_INSERT_EVENTS, tx.events)
        if fx:
            self.dispatch(fx)

    def transaction(self) -> AbstractContextManager[Tx]:
        """A write transaction whose effects are dispatched after it commits."""
        return self._tx()

    def _put_value(self, data: bytes) -> str:
        # content-addressed: identical inputs or outputs are stored once, and a key never
        # changes meaning, so a re-submitted action can never clobber another's inputs
        key = f"values/{hashlib.sha256(data).hexdigest()}.json"
        self._store.put_content(key, data)
        return key

    @staticmethod
    def _run_row(s: Session, name: str) -> Run:
        run = s.scalar(select(Run).where(Run.name == name))
        if run is None:
            raise NotFoundError(f"run {name!r} not found")
        return run

    def _load(self, s: Session, run_name: str, action_name: str) -> tuple[Run, Action]:
        """The run and its action, in one query; 404 naming whichever is missing."""
        row = s.execute(
            select(Run, Action)
            .join(Action, Action.run_id == Run.id)
            .where(Run.name == run_name, Action.name == action_name)
        ).first()
        if row is None:
            self._run_row(s, run_name)
            raise NotFoundError(f"action {action_name!r} not found in run {run_name!r}")
        return row[0], row[1]

    def load(self, s: Session, run_name: str, action_name: str) -> tuple[Run, Action]:
        """The run and its action; 404 naming whichever is missing."""
        return self._load(s, run_name, action_name)

    def current_attempt(self, s: Session, run: Run, action: Action, number: int) -> Attempt:
        """Attempt ``number`` if it is the action's current one and has not ended; 404 or 409
        otherwise."""
        attempt = self._attempt_row(s, run, action, number)
        self._check_current(run, action, attempt)
        return attempt

    def set_interactive(self, tx: Tx, run: Run, action: Action, interactive: bool) -> None:
        """Move ``action`` between RUNNING and INTERACTIVE (a session opened, a resume began
        or failed); a no-op if it is there already."""
        phase = "INTERACTIVE" if interactive else "RUNNING"
        if action.phase != phase:
            self._set_phase(tx, run, action, phase)
            # an INTERACTIVE action holds no executor slot: one may be free now
            tx.fx.schedule = tx.fx.schedule or interactive

    def _session_of(self, s: Session, run: Run, action: Action) -> wire.SessionInfo | None:
        """The action's latest session, if its task is interactive and it had one."""
        if action.spec.get("interactive") is None:
            return None  # only interactive tasks have sessions: spare the query
        row = s.scalar(
            select(InteractiveSession)
            .where(InteractiveSession.action_id == action.id)
            .order_by(InteractiveSession.started_at.desc())
            .limit(1)
        )
        if row is None:
            return None
        return session_info(
            row, run.name, action.name, self.activity(row.id), self.session_origin(row.id)
        )

    @staticmethod
    def _close_sessions(
        tx: _Tx, run: Run, action: Action, reason: str, attempt: int | None = None
    ) -> None:
        """End the action's open sessions (of attempts up to ``attempt``): their attempt is
        over, so is their IDE."""
        if action.spec.get("interactive") is None:
            return  # only interactive actions have sessions (registering checks): no query
        query = select(InteractiveSession).where(
            InteractiveSession.action_id == action.id, InteractiveSession.ended_at.is_(None)
        )
        if attempt is not None:
            query = query.where(InteractiveSession.attempt <= attempt)
        rows = list(tx.s.scalars(query))
        now = utcnow()
        for row in rows:
            row.state = "ended"
            row.ended_at = now
            row.end_reason = reason
            row.command = None
        if rows:
            tx.fx.changed.add((run.name, action.name))  # wakes the session's long-polls

    @staticmethod
    def _attempts(s: Session, action: Action) -> list[Attempt]:
        return list(
            s.scalars(
                select(Attempt).where(Attempt.action_id == action.id).order_by(Attempt.number)
            )
        )

    def _attempt_row(self, s: Session, run: Run, action: Action, number: int) -> Attempt:
        attempt = s.scalar(
            select(Attempt).where(Attempt.action_id == action.id, Attempt.number == number)
        )
        if attempt is None:
            raise NotFoundError(
                f"attempt {number} of action {action.name!r} in run {run.name!r} not found "
                f"(it has {action.attempts} attempt(s))"
            )
        return attempt

    def _event(self, tx: _Tx, kind: str, run: str, action: str | None, phase: str) -> None:
        tx.events.append(
            {"kind": kind, "run": run, "action": action, "phase": phase, "at": utcnow()}
        )
        if action is not None:
            tx.fx.changed.add((run, action))
        else:
            tx.fx.changed.add((run, ""))

    def _set_phase(
        self,
        tx: _Tx,
        run: Run,
        action: Action,
        phase: str,
        *,
        error: wire.ErrorInfo | None = None,
        cascade: bool = True,
    ) -> None:
        """Move ``action`` to ``phase``, record the event, and keep the run in step."""
        state.check_transition(action.phase, phase)
        now = utcnow()
        action.phase = phase
        if phase == "RUNNING" and action.started_at is None:
            action.started_at = now
        if phase != "RETRYING":
            action.retry_at = None
        if phase in TERMINAL:
            action.ended_at = now
            action.error = None if error is None else _dump(error)
            tx.fx.schedule = True
        self._event(tx, "action", run.name, action.name, phase)
        if action.name == ROOT_ACTION:
            # a run's phase is its root action's
            run.phase = phase
            run.started_at = action.started_at
            run.ended_at = action.ended_at
            run.error = action.error
            self._event(tx, "run", run.name, None, phase)
        if phase in TERMINAL and action.cache_digest is not None and action.cache == "miss":
            self._end_serialized(tx, run, action)  # it computed a serialized cache
        if phase in TERMINAL and cascade:
            self._abort_descendants(tx, run, action)

    def _end_serialized(self, tx: _Tx, run: Run, leader: Action) -> None:
        """The call of a serialized cache that others wait for has ended: a success is their
        result (each a cache hit, in whichever run it is); otherwise the oldest of them runs
        in its place, and the rest wait for that one, as they would locally."""
        assert leader.cache_digest is not None
        waiting = _serialized(run, leader.cache_digest, waiting=True)
        if leader.phase != "SUCCEEDED":
            follower = _first(tx.s, waiting)
            if follower is not None:
                follower.cache = "miss"
                tx.fx.schedule = True
            return
        runs: dict[int, Run] = {run.id: run}
        for follower in list(tx.s.scalars(waiting)):
            follower_run = runs.get(follower.run_id) or tx.s.get(Run, follower.run_id)
            assert follower_run is not None
            runs[follower.run_id] = follower_run
            follower.cache = "hit"
            follower.outputs_key = leader.outputs_key
            follower.started_at = utcnow()
            tx.no_open_children.add(follower.id)  # it never ran
            self._set_phase(tx, follower_run, follower, "SUCCEEDED")

    def _abort_descendants(self, tx: _Tx, run: Run, action: Action) -> None:
        """Nobody waits for the children of an ended action: abort what is still going."""
        if action.id is not None and action.id in tx.no_open_children:
            return
        has_open_children = tx.s.scalar(
            select(Action.id)
            .where(
                Action.run_id == run.id,
                Action.parent == action.name,
                Action.phase.not_in(TERMINAL),
            )
            .limit(1)
        )
        if has_open_children is None:  # the common case (a leaf): one indexed probe
            return
        open_actions = list(
            tx.s.scalars(
                select(Action)
                .where(Action.run_id == run.id, Action.phase.not_in(TERMINAL))
                .order_by(Action.id)
            )
        )
        children: dict[str | None, list[Action]] = defaultdict(list)
        for a in open_actions:
            children[a.parent].append(a)
        error = wire.ErrorInfo(
            type="ActionAborted",
            message=f"aborted: its parent action {action.name!r} ended ({action.phase})",
            kind="aborted",
        )
        pending = list(children.get(action.name, ()))
        while pending:
            child = pending.pop()
            pending.extend(children.get(child.name, ()))
            self._abort_one(tx, run, child, error)

    def _abort_one(self, tx: _Tx, run: Run, action: Action, error: wire.ErrorInfo) -> None:
        if action.attempts:
            attempt = self._attempt_row(tx.s, run, action, action.attempts)
            if attempt.phase not in TERMINAL:
                attempt.phase = "ABORTED"
                attempt.ended_at = utcnow()
                attempt.error = _dump(error)
                tx.fx.cancel.append(job_id(run.name, action.name, attempt.number))
        self._close_sessions(tx, run, action, error.message)
        self._set_phase(tx, run, action, "ABORTED", error=error, cascade=False)

    # -- runs -----------------------------------------------------------------------------

    def create_run(self, spec: wire.RunCreate, created_by: str) -> wire.RunInfo:
        """Create a run and its root action ``a0`` (``spec.root.name`` is ignored)."""
        if spec.domain not in wire.DOMAINS:
            raise BadRequestError(
                f"unknown domain {spec.domain!r}; domains are {', '.join(wire.DOMAINS)}"
            )
        digest = normalize_digest(spec.bundle)
        root = spec.root.model_copy(update={"name": ROOT_ACTION, "parent": None})
        inputs_key = self._put_value(encode_value(root.inputs, "inputs"))
        with self._tx() as tx:
            project = tx.s.scalar(select(Project).where(Project.name == spec.project))
            if project is None:
                raise NotFoundError(
                    f"project {spec.project!r} not found; create it with POST /projects"
                )
            if tx.s.get(Bundle, digest) is None:
                raise BadRequestError(
                    f"bundle {spec.bundle} is not on the server; upload it first with "
                    f"PUT {wire.API_PREFIX}/bundles/{spec.bundle}"
                )
            name = spec.name or self._new_run_name(tx.s)
            if tx.s.scalar(select(Run.id).where(Run.name == name)) is not None:
                raise ConflictError(f"run {name!r} already exists; choose another name")
            run = Run(
                name=name,
                project_id=project.id,
                domain=spec.domain,
                task=root.task.name,
                phase="QUEUED",
                bundle=digest,
                env_vars=dict(spec.env_vars),
                overwrite_cache=spec.overwrite_cache,
                created_by=created_by,
                created_at=utcnow(),
            )
            tx.s.add(run)
            tx.s.flush()
            self._event(tx, "run", run.name, None, "QUEUED")
            self._insert_action(tx, run, root, inputs_key)
            return run_info(run, project.name, 1)

    @staticmethod
    def _new_run_name(s: Session) -> str:
        """A readable name, as the CLI gives its runs."""
        while True:
            name = wire.new_run_name()
            if s.scalar(select(Run.id).where(Run.name == name)) is None:
                return name

    def get_run(self, name: str) -> wire.RunInfo:
        with self._db.read() as s:
            run = self._run_row(s, name)
            project = s.get(Project, run.project_id)
            count = s.scalar(select(func.count()).where(Action.run_id == run.id)) or 0
            return run_info(run, project.name if project else "?", count)

    def list_runs(
        self,
        *,
        project: str | None = None,
        domain: str | None = None,
        phase: str | None = None,
        task: str | None = None,
        limit: int = 100,
        projects: frozenset[str] | None = None,
    ) -> list[wire.RunInfo]:
        """Runs matching every given filter, newest first; only of ``projects`` if given."""
        counts = select(Action.run_id, func.count().label("n")).group_by(Action.run_id).subquery()
        query = (
            select(Run, Project.name, counts.c.n)
            .join(Project, Project.id == Run.project_id)
            .outerjoin(counts, counts.c.run_id == Run.id)
        )
        if project is not None:
            query = query.where(Project.name == project)
        if projects is not None:
            query = query.where(Project.name.in_(projects))
        if domain is not None:
            query = query.where(Run.domain == domain)
        if phase is not None:
            query = query.where(Run.phase == phase)
        if task is not None:
            query = query.where(Run.task == task)
        query = query.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit)
        with self._db.read() as s:
            if (
                project is not None
                and s.scalar(select(Project.id).where(Project.name == project)) is None
            ):
                raise NotFoundError(f"project {project!r} not found")
            return [run_info(r, p, n or 0) for r, p, n in s.execute(query)]

    def abort_run(self, name: str, by: str) -> wire.RunInfo:
        """Abort every action of the run that has not ended; a no-op on an ended run."""
        with self._tx() as tx:
            run = self._run_row(tx.s, name)
            if run.phase not in TERMINAL:
                error = wire.ErrorInfo(
                    type="RunAborted", message=f"run {name!r} aborted by {by!r}", kind="aborted"
                )
                for action in tx.s.scalars(
                    select(Action)
                    .where(Action.run_id == run.id, Action.phase.not_in(TERMINAL))
                    .order_by(Action.id.desc())
                ):
                    self._abort_one(tx, run, action, error)
        return self.get_run(name)

    def abort_action(self, run_name: str, action_name: str, by: str) -> wire.ActionInfo:
        """Abort one action and its descendants (kill their processes, close their sessions);
        a no-op on an action that has ended."""
        with self._tx() as tx:
            run, action = self._load(tx.s, run_name, action_name)
            if action.phase not in TERMINAL:
                error = wire.ErrorInfo(
                    type="ActionAborted",
                    message=f"action {action_name!r} of run {run_name!r} aborted by {by!r}",
                    kind="aborted",
                )
                self._abort_one(tx, run, action, error)
                self._abort_descendants(tx, run, action)
        return self.get_action(run_name, action_name)

    # -- actions --------------------------------------------------------------------------

    def create_action(self, run_name: str, spec: wire.ActionCreate) -> wire.ActionInfo:
        """Create a child action, or return the existing one of that name unchanged."""
        (result,) = self.create_actions(run_name, [spec])
        if isinstance(result, ServerError):
            raise result
        return result

    def create_actions(
        self, run_name: str, specs: Sequence[wire.ActionCreate]
    ) -> list[wire.ActionInfo | ServerError]:
        """Create child actions in one transaction, each like :meth:`create_action`: an
        existing name returns that action unchanged, and one refused item (returned as its
        error) leaves the others alone. A missing run refuses them all (404)."""
        results: list[wire.ActionInfo | ServerError | None] = [None] * len(specs)
        keys: list[str | None] = [None] * len(specs)
        # stored before the transaction: values are content-addressed, so storing them again
        # for an existing action changes nothing, and the transaction stays short
        for i, spec in enumerate(specs):
            try:
                keys[i] = self._put_value(encode_value(spec.inputs, "inputs"))
            except ServerError as e:
                results[i] = e
        with self._tx() as tx:
            run = self._run_row(tx.s, run_name)
            wanted: set[str] = set()
            for spec, key in zip(specs, keys, strict=True):
                if key is not None:
                    wanted.add(spec.name)
                    if spec.parent is not None:
                        wanted.add(spec.parent)
            found = self._actions_named(tx.s, run.id, wanted)
            attempts: dict[int, list[Attempt]] = defaultdict(list)
            ids = [a.id for a in found.values() if a.attempts]
            for chunk in _chunks(ids):
                for attempt in tx.s.scalars(select(Attempt).where(Attempt.action_id.in_(chunk))):
                    attempts[attempt.action_id].append(attempt)
            created: dict[str, wire.ActionInfo] = {}
            rows: list[dict[str, Any]] = []
            for i, (spec, key) in enumerate(zip(specs, keys, strict=True)):
                if key is None:
                    continue
                try:
                    results[i] = self._create_one(
                        tx, run, spec, key, found, attempts, created, rows
                    )
                except ServerError as e:
                    results[i] = e
            if rows:
                tx.s.execute(_INSERT_ACTIONS, rows)
        assert all(r is not None for r in results)  # one answer per item, in order
        return cast(list[wire.ActionInfo | ServerError], results)

    def _create_one(
        self,
        tx: _Tx,
        run: Run,
        spec: wire.ActionCreate,
        inputs_key: str,
        found: dict[str, Action],
        attempts: dict[int, list[Attempt]],
        created: dict[str, wire.ActionInfo],
        rows: list[dict[str, Any]],
    ) -> wire.ActionInfo:
        """One item of :meth:`create_actions`. A plain new action (no cache, fits a worker)
        becomes a row of ``rows``, inserted with the others at the end; the rest go through
        the ORM (after the rows so far, to keep creation order)."""
        if spec.name in created:
            return created[spec.name]  # a repeat within the batch
        existing = found.get(spec.name)
        if existing is not None:
            return action_info(run.name, existing, attempts.get(existing.id, []))
        if run.phase in TERMINAL:
            raise ConflictError(f"run {run.name!r} is {run.phase}; it takes no new actions")
        if spec.parent is None:
            raise BadRequestError(
                f"action {spec.name!r} needs a parent: only the root action {ROOT_ACTION!r} "
                "has none, and POST /runs creates it"
            )
        parent = found.get(spec.parent) or created.get(spec.parent)
        if parent is None:
            raise NotFoundError(f"parent action {spec.parent!r} not found in run {run.name!r}")
        if parent.phase in TERMINAL:
            raise ConflictError(
                f"parent action {spec.parent!r} is {parent.phase}; it cannot start children"
            )
        task = spec.task
        if task.cache is not None or state.resources_error(task.resources, self.capacity):
            if rows:
                tx.s.execute(_INSERT_ACTIONS, rows)
                rows.clear()
            action = self._insert_action(tx, run, spec, inputs_key)
            tx.s.flush()  # its id now: creation order is the scheduler's order
            info = action_info(run.name, action, [])
        else:
            now = utcnow()
            rows.append(
                {
                    "run_id": run.id,
                    "name": spec.name,
                    "parent": spec.parent,
                    "group": list(spec.group),
                    "task": task.name,
                    "spec": task.model_dump(mode="json"),
                    "inputs_key": inputs_key,
                    "phase": "QUEUED",
                    "attempts": 0,
                    "cache": "disabled",
                    **Requests.of(task, self.defaults).columns(),
                    "created_at": now,
                }
            )
            self._event(tx, "action", run.name, spec.name, "QUEUED")
            tx.fx.schedule = True
            info = wire.ActionInfo(
                run=run.name,
                name=spec.name,
                parent=spec.parent,
                group=list(spec.group),
                task=task.name,
                phase="QUEUED",
                created_at=now,
            )
        created[spec.name] = info  # a repeat later in the batch gets this one
        return info

    @staticmethod
    def _actions_named(s: Session, run_id: int, names: Iterable[str]) -> dict[str, Action]:
        found: dict[str, Action] = {}
        for chunk in _chunks(sorted(names)):
            for a in s.scalars(
                select(Action).where(Action.run_id == run_id, Action.name.in_(chunk))
            ):
                found[a.name] = a
        return found

    def _insert_action(self, tx: _Tx, run: Run, spec: wire.ActionCreate, inputs_key: str) -> Action:
        task = spec.task
        action = Action(
            run_id=run.id,
            name=spec.name,
            parent=spec.parent,
            group=list(spec.group),
            task=task.name,
            spec=task.model_dump(mode="json"),
            inputs_key=inputs_key,
            phase="QUEUED",
            attempts=0,
            cache="disabled" if task.cache is None else "miss",
            **Requests.of(task, self.defaults).columns(),
            created_at=utcnow(),
        )
        tx.s.add(action)
        self._event(tx, "action", run.name, action.name, "QUEUED")
        too_big = state.resources_error(task.resources, self.capacity)
        if too_big is not None:
            self._set_phase(tx, run, action, "FAILED", error=too_big)
            return action
        if task.cache is not None and not run.overwrite_cache:
            digest = _digest(task.cache.key)
            entry = tx.s.scalar(
                select(CacheEntry).where(
                    CacheEntry.project_id == run.project_id,
                    CacheEntry.domain == run.domain,
                    CacheEntry.key_digest == digest,
                )
            )
            if entry is not None:
                action.cache = "hit"
                action.outputs_key = entry.object_key
                action.started_at = utcnow()
                self._set_phase(tx, run, action, "SUCCEEDED")
                return action
            if task.cache.serialize:
                # (looked up before this action has its digest: it must not find itself)
                if _first(tx.s, _serialized(run, digest, waiting=False)) is not None:
                    action.cache = "waiting"  # not claimable: see _end_serialized
                action.cache_digest = digest
                if action.cache == "waiting":
                    return action
        tx.fx.schedule = True
        return action

    def get_action(self, run_name: str, action_name: str) -> wire.ActionInfo:
        with self._db.read() as s:
            run, action = self._load(s, run_name, action_name)
            session = self._session_of(s, run, action)
            return action_info(run.name, action, self._attempts(s, action), session)

    def list_actions(self, run_name: str) -> list[wire.ActionInfo]:
        with self._db.read() as s:
            run_id = s.scalar(select(Run.id).where(Run.name == run_name))
            if run_id is None:
                raise NotFoundError(f"run {run_name!r} not found")
            return self.action_infos(s, run_id, run_name)

    def action_infos(self, s: Session, run_id: int, run_name: str) -> list[wire.ActionInfo]:
        """Every action of a run, with its attempts and latest session, in creation order:
        plain rows, built without re-validating what the server wrote (a big run has
        thousands of actions, and clients and the UI read them often)."""
        attempts: dict[int, list[wire.AttemptInfo]] = defaultdict(list)
        for t in s.execute(
            select(
                Attempt.action_id,
                Attempt.number,
                Attempt.phase,
                Attempt.started_at,
                Attempt.ended_at,
                Attempt.error,
            )
            .join(Action, Action.id == Attempt.action_id)
            .where(Action.run_id == run_id)
            .order_by(Attempt.action_id, Attempt.number)
        ):
            attempts[t.action_id].append(
                wire.AttemptInfo.model_construct(
                    number=t.number,
                    phase=t.phase,
                    started_at=t.started_at,
                    ended_at=t.ended_at,
                    error=_error(t.error),
                )
            )
        actions = s.execute(
            select(
                Action.id,
                Action.name,
                Action.parent,
                Action.group,
                Action.task,
                Action.phase,
                Action.created_at,
                Action.started_at,
                Action.ended_at,
                Action.error,
                Action.cache,
            )
            .where(Action.run_id == run_id)
            .order_by(Action.id)
        ).all()
        latest: dict[int, InteractiveSession] = {}
        for row in s.scalars(
            select(InteractiveSession)
            .join(Action, Action.id == InteractiveSession.action_id)
            .where(Action.run_id == run_id)
            .order_by(InteractiveSession.started_at)
        ):
            latest[row.action_id] = row  # the newest wins
        names = {a.id: a.name for a in actions} if latest else {}
        sessions = {
            action_id: session_info(
                row,
                run_name,
                names[action_id],
                self.activity(row.id),
                self.session_origin(row.id),
            )
            for action_id, row in latest.items()
        }
        return [
            wire.ActionInfo.model_construct(
                run=run_name,
                name=a.name,
                parent=a.parent,
                group=list(a.group),
                task=a.task,
                phase=a.phase,
                attempts=attempts.get(a.id, []),
                created_at=a.created_at,
                started_at=a.started_at,
                ended_at=a.ended_at,
                error=_error(a.error),
                cache=a.cache,
                session=sessions.get(a.id),
            )
            for a in actions
        ]

    def get_spec(self, run_name: str, action_name: str) -> wire.ActionSpec:
        with self._db.read() as s:
            run, action = self._load(s, run_name, action_name)
            project = s.get(Project, run.project_id)
            inputs_key, attempt = action.inputs_key, action.attempts
            result = {
                "run": run.name,
                "action": action.name,
                "attempt": attempt,
                "project": project.name if project else "?",
                "domain": run.domain,
                "bundle": run.bundle,
                "task": action.spec,
                "env_vars": run.env_vars,
                "overwrite_cache": run.overwrite_cache,
            }
        result["inputs"] = json.loads(self._store.get_bytes(inputs_key))
        return wire.ActionSpec.model_validate(result)

    def secret_scope(self, run_name: str, action_name: str) -> tuple[list[str], str, str]:
        """The secret keys the action's task declares and its run's project and domain; 409
        unless the action is running (nothing else needs its secrets)."""
        with self._db.read() as s:
            run, action = self._load(s, run_name, action_name)
            if action.phase not in ("RUNNING", "INTERACTIVE"):
                raise ConflictError(
                    f"action {action_name!r} of run {run_name!r} is {action.phase}: only a "
                    "running action gets its secrets"
                )
            project = s.get(Project, run.project_id)
            keys = [secret.key for secret in task_spec(action.spec).secrets]
            return keys, project.name if project else "", run.domain

    def outputs_json(self, run_name: str, action_name: str) -> bytes:
        """The action's outputs as the JSON of ``wire.Outputs`` (built without re-parsing)."""
        with self._db.read() as s:
            _, action = self._load(s, run_name, action_name)
            if action.phase != "SUCCEEDED" or action.outputs_key is None:
                raise ConflictError(
                    f"action {action_name!r} of run {run_name!r} is {action.phase}; it has "
                    "outputs once it SUCCEEDED"
                )
            key = action.outputs_key
        return b'{"value":' + self._store.get_bytes(key) + b"}"

    def ended_json(
        self, run_name: str, names: Sequence[str], *, after: int | None = None, check: bool = True
    ) -> tuple[bytes | None, int]:
        """Those of ``names`` that have ended, in that order, as the JSON of
        ``list[wire.ActionOutcome]`` (SUCCEEDED outputs inline, up to
        ``wire.MAX_INLINE_OUTPUTS`` bytes in all), or ``None`` if none has; and the event
        ``seq`` by which none of the others had ended (to look again after).

        Without ``after`` every name is looked up (404 unless the run has them all). With
        ``after``, the ``seq`` of an earlier look by which none of ``names`` had ended, only
        the actions that have ended since are: a long-poll for a thousand children stays
        cheap. ``check``: 404 if there is no such run."""
        ended: dict[str, tuple[str, dict[str, Any] | None, str | None]] = {}
        with self._db.read() as s:
            if after is not None and check and s.scalar(_RUN_ID, {"name": run_name}) is None:
                raise NotFoundError(f"run {run_name!r} not found")
            if after is None:
                # the seq before the states: an action that ends in between is seen twice,
                # never missed
                seq = s.scalar(_LAST_SEQ) or 0
                run_id = s.scalar(_RUN_ID, {"name": run_name})
                if run_id is None:
                    raise NotFoundError(f"run {run_name!r} not found")
                seen: set[str] = set()
                for chunk in _chunks(names):
                    for name, phase, error, key in s.execute(
                        _OUTCOMES, {"run": run_id, "names": chunk}
                    ):
                        seen.add(name)
                        if phase in TERMINAL:
                            ended[name] = (phase, error, key)
                for name in names:
                    if name not in seen:
                        raise NotFoundError(f"action {name!r} not found in run {run_name!r}")
            else:
                seq = after
                asked = set(names)
                since: set[str] = set()
                for event_seq, action in s.execute(_ENDED_SINCE, {"run": run_name, "seq": after}):
                    seq = max(seq, event_seq)
                    if action in asked:
                        since.add(action)
                if since:
                    run_id = s.scalar(_RUN_ID, {"name": run_name})
                    for chunk in _chunks(sorted(since)):
                        for name, phase, error, key in s.execute(
                            _OUTCOMES, {"run": run_id, "names": chunk}
                        ):
                            ended[name] = (phase, error, key)
        if not ended:
            return None, seq
        parts: list[bytes] = []
        budget = wire.MAX_INLINE_OUTPUTS
        for name in dict.fromkeys(names):
            if name not in ended:
                continue
            phase, error, key = ended.pop(name)
            head = json.dumps({"name": name, "phase": phase, "error": error})[:-1].encode()
            value = None
            if phase == "SUCCEEDED" and key is not None and budget > 0:
                try:
                    value = self._store.get_bytes(key)
                except NotFoundError:
                    value = None  # the client's GET .../outputs will say what is wrong
                if value is not None and len(value) > budget:
                    value = None  # too much for this response: fetched on its own
            if value is None:
                parts.append(head + b',"outputs":null}')
            else:
                budget -= len(value)
                parts.append(head + b',"outputs":{"value":' + value + b"}}")
        return b"[" + b",".join(parts) + b"]", seq

    # -- attempts: proposals from runtimes ------------------------------------------------

    def attempt_started(self, run_name: str, action_name: str, number: int) -> wire.ActionInfo:
        """The runtime of attempt ``number`` is up. Idempotent; 409 for a stale attempt."""
        with self._tx() as tx:
            run, action = self._load(tx.s, run_name, action_name)
            attempt = self._attempt_row(tx.s, run, action, number)
            self._check_current(run, action, attempt)
            if attempt.runtime_started_at is None:
                attempt.runtime_started_at = utcnow()
            return action_info(run.name, action, self._attempts(tx.s, action))

    def attempt_heartbeat(self, run_name: str, action_name: str, number: int) -> None:
        with self._tx() as tx:
            run, action = self._load(tx.s, run_name, action_name)
            attempt = self._attempt_row(tx.s, run, action, number)
            self._check_current(run, action, attempt)
            attempt.heartbeat_at = utcnow()

    def attempts_heartbeat(self, refs: Sequence[wire.AttemptRef]) -> list[wire.ItemStatus]:
        """:meth:`attempt_heartbeat` for many attempts in one transaction; each gets 200, or
        the 404 or 409 that one would have raised."""
        statuses: list[wire.ItemStatus] = []
        with self._tx() as tx:
            rows = self._attempt_rows(
                tx, [(r.run, r.action, r.attempt) for r in refs], probe_children=False
            )
            now = utcnow()
            beats: dict[int, dict[str, Any]] = {}
            for ref in refs:
                row = rows[(ref.run, ref.action, ref.attempt)]
                if isinstance(row, ServerError):
                    statuses.append(_status(row))
                elif (conflict := row.not_current()) is not None:
                    statuses.append(_status(conflict))
                else:
                    beats[row.attempt_id] = {"_id": row.attempt_id, "heartbeat_at": now}
                    statuses.append(_OK)
            _update_by_id(tx.s, _ATTEMPTS, list(beats.values()))
        return statuses

    @staticmethod
    def _check_current(run: Run, action: Action, attempt: Attempt) -> None:
        error = _not_current(
            run.name, action.name, action.attempts, attempt.number, attempt.phase, attempt.error
        )
        if error is not None:
            raise error

    def attempt_finished(
        self, run_name: str, action_name: str, number: int, result: wire.AttemptResult
    ) -> wire.ActionInfo:
        """Record the outcome the runtime reports. A duplicate report of an accepted outcome
        is ignored; a report for an attempt that is stale or that the server already ended
        (timeout, worker lost, abort) is rejected with 409."""
        outputs_key = self._result_key(result)
        with self._tx() as tx:
            run, action = self._load(tx.s, run_name, action_name)
            attempt = self._attempt_row(tx.s, run, action, number)
            self._finish(tx, run, action, attempt, result, outputs_key)
            return action_info(run.name, action, self._attempts(tx.s, action))

    def finish_attempts(self, reports: Sequence[wire.AttemptReport]) -> list[wire.ItemStatus]:
        """:meth:`attempt_finished` for many attempts in one transaction; each report gets
        the status that one would have answered (200, or 409, 404, 400, 413 with a detail)."""
        statuses: list[wire.ItemStatus | None] = [None] * len(reports)
        keys: list[str | None] = [None] * len(reports)
        for i, report in enumerate(reports):
            try:
                keys[i] = self._result_key(report.result)
            except ServerError as e:
                statuses[i] = _status(e)
        with self._tx() as tx:
            wanted = [
                (r.run, r.action, r.attempt)
                for r, st in zip(reports, statuses, strict=True)
                if st is None
            ]
            rows = self._attempt_rows(tx, wanted)
            now = utcnow()
            first: dict[tuple[str, str, int], int] = {}  # a repeat in the batch: as the first
            fast: list[tuple[_AttemptRow, str]] = []
            slow: list[int] = []
            for i, report in enumerate(reports):
                if statuses[i] is not None:
                    continue
                key = (report.run, report.action, report.attempt)
                if key in first:
                    continue
                first[key] = i
                row = rows[key]
                if isinstance(row, ServerError):
                    statuses[i] = _status(row)
                elif row.reported:
                    statuses[i] = _OK  # a repeat of an accepted report
                elif (conflict := row.not_current()) is not None:
                    statuses[i] = _status(conflict)
                elif (
                    report.result.outputs is not None
                    and row.action != ROOT_ACTION
                    and not row.cached
                    and not row.open_children
                ):
                    fast.append((row, keys[i] or ""))
                    statuses[i] = _OK
                else:
                    slow.append(i)
            self._succeed_rows(tx, fast, now)
            # the rest (failures, retries, caches, a run's end) through the full state machine
            loaded = self._load_attempts(
                tx, [(reports[i].run, reports[i].action, reports[i].attempt) for i in slow]
            )
            for i in slow:
                report = reports[i]
                try:
                    row_ = loaded[(report.run, report.action, report.attempt)]
                    if isinstance(row_, ServerError):
                        raise row_
                    self._finish(tx, *row_, report.result, keys[i])
                except ServerError as e:
                    statuses[i] = _status(e)
                else:
                    statuses[i] = _OK
            for i, report in enumerate(reports):
                if statuses[i] is None:  # a repeat: as the first report of that attempt went
                    statuses[i] = statuses[first[(report.run, report.action, report.attempt)]]
        return [st or _OK for st in statuses]

    def _succeed_rows(
        self, tx: _Tx, rows: Sequence[tuple[_AttemptRow, str]], now: datetime
    ) -> None:
        """What :meth:`_succeed` and :meth:`_set_phase` do for a successful attempt of a
        child action without cache or open children, for many at once in a few statements."""
        if not rows:
            return
        for row, _ in rows:
            state.check_transition(row.action_phase, "SUCCEEDED")
            self._event(tx, "action", row.run, row.action, "SUCCEEDED")
        _update_by_id(
            tx.s,
            _ATTEMPTS,
            [
                {"_id": row.attempt_id, "phase": "SUCCEEDED", "ended_at": now, "reported": True}
                for row, _ in rows
            ],
        )
        _update_by_id(
            tx.s,
            _ACTIONS,
            [
                {
                    "_id": row.action_id,
                    "phase": "SUCCEEDED",
                    "ended_at": now,
                    "error": None,
                    "outputs_key": key,
                    "retry_at": None,
                }
                for row, key in rows
            ],
        )
        tx.fx.schedule = True

    def _attempt_rows(
        self, tx: _Tx, wanted: Sequence[tuple[str, str, int]], *, probe_children: bool = True
    ) -> dict[tuple[str, str, int], _AttemptRow | ServerError]:
        """Many ``(run, action, attempt)`` as plain rows in a few queries (no ORM objects),
        or the 404 each would get. ``probe_children``: find out which have open children
        (else ``open_children`` is unknown, and ``True``)."""
        s = tx.s
        by_run: dict[str, set[str]] = defaultdict(set)
        for run_name, action_name, _ in wanted:
            by_run[run_name].add(action_name)
        run_ids: dict[str, int] = {}
        for name, known in s.execute(_RUN_IDS, {"names": sorted(by_run)}):
            run_ids[name] = known
        actions: dict[tuple[str, str], Any] = {}
        attempts: dict[tuple[str, str, int], Any] = {}
        open_parents: set[tuple[str, str | None]] = set()
        for run_name, names in by_run.items():
            run_id = run_ids.get(run_name)
            if run_id is None:
                continue
            for chunk in _chunks(sorted(names)):
                for r in s.execute(_ATTEMPT_ROWS, {"run": run_id, "names": chunk}):
                    actions[(run_name, r.action)] = r
                    if r.number is not None:  # (an action without attempts: no attempt row)
                        attempts[(run_name, r.action, r.number)] = r
                if not probe_children:
                    continue
                for parent in s.scalars(_OPEN_PARENTS, {"run": run_id, "names": chunk}):
                    open_parents.add((run_name, parent))
        rows: dict[tuple[str, str, int], _AttemptRow | ServerError] = {}
        for key in wanted:
            run_name, action_name, number = key
            found = attempts.get(key)
            if run_name not in run_ids:
                rows[key] = NotFoundError(f"run {run_name!r} not found")
            elif (run_name, action_name) not in actions:
                rows[key] = NotFoundError(f"action {action_name!r} not found in run {run_name!r}")
            elif found is None:
                count = actions[(run_name, action_name)].attempts
                rows[key] = NotFoundError(
                    f"attempt {number} of action {action_name!r} in run {run_name!r} not found "
                    f"(it has {count} attempt(s))"
                )
            else:
                rows[key] = _AttemptRow(
                    run=run_name,
                    action=action_name,
                    action_id=found.action_id,
                    action_phase=found.action_phase,
                    attempts=found.attempts,
                    cached=found.cache != "disabled",
                    attempt_id=found.attempt_id,
                    number=found.number,
                    phase=found.phase,
                    reported=bool(found.reported),
                    error=found.error,
                    open_children=not probe_children or (run_name, action_name) in open_parents,
                )
        return rows

    def _result_key(self, result: wire.AttemptResult) -> str | None:
        """Check ``result`` and store its outputs (before the transaction: content-addressed,
        so a duplicate report stores nothing new); their key."""
        if (result.outputs is None) == (result.error is None):
            raise BadRequestError("an attempt result has exactly one of 'outputs' and 'error'")
        if result.outputs is None:
            return None
        return self._put_value(encode_value(result.outputs.value, "outputs"))

    def _finish(
        self,
        tx: _Tx,
        run: Run,
        action: Action,
        attempt: Attempt,
        result: wire.AttemptResult,
        outputs_key: str | None,
    ) -> None:
        if attempt.reported:
            return  # a repeat of an accepted report
        self._check_current(run, action, attempt)
        attempt.reported = True
        if result.error is not None:
            self._fail_attempt(tx, run, action, attempt, result.error)
        else:
            assert outputs_key is not None
            self._succeed(tx, run, action, attempt, outputs_key)

    def _load_attempts(
        self, tx: _Tx, wanted: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], tuple[Run, Action, Attempt] | ServerError]:
        """The rows of many ``(run, action, attempt)``, in a few queries, or the 404 each
        would get. Also notes which of those actions have no open children (so ending them
        needs no query for descendants)."""
        s = tx.s
        loaded: dict[tuple[str, str, int], tuple[Run, Action, Attempt] | ServerError] = {}
        if not wanted:
            return loaded
        by_run: dict[str, set[str]] = defaultdict(set)
        for run_name, action_name, _ in wanted:
            by_run[run_name].add(action_name)
        runs = {r.name: r for r in s.scalars(select(Run).where(Run.name.in_(sorted(by_run))))}
        actions: dict[tuple[str, str], Action] = {}
        for run_name, names in by_run.items():
            if run_name in runs:
                for name, a in self._actions_named(s, runs[run_name].id, names).items():
                    actions[(run_name, name)] = a
        attempts: dict[tuple[int, int], Attempt] = {}
        for chunk in _chunks([a.id for a in actions.values()]):
            for t in s.scalars(select(Attempt).where(Attempt.action_id.in_(chunk))):
                attempts[(t.action_id, t.number)] = t
        open_parents: set[tuple[int, str | None]] = set()
        for run_name, names in by_run.items():
            if run_name not in runs:
                continue
            run_id = runs[run_name].id
            for chunk in _chunks(sorted(names)):
                for parent in s.scalars(
                    select(Action.parent)
                    .where(
                        Action.run_id == run_id,
                        Action.parent.in_(chunk),
                        Action.phase.not_in(TERMINAL),
                    )
                    .distinct()
                ):
                    open_parents.add((run_id, parent))
        for a in actions.values():
            if (a.run_id, a.name) not in open_parents:
                tx.no_open_children.add(a.id)
        for key in wanted:
            run_name, action_name, number = key
            run = runs.get(run_name)
            action = actions.get((run_name, action_name))
            attempt = None if action is None else attempts.get((action.id, number))
            if run is None:
                loaded[key] = NotFoundError(f"run {run_name!r} not found")
            elif action is None:
                loaded[key] = NotFoundError(f"action {action_name!r} not found in run {run_name!r}")
            elif attempt is None:
                loaded[key] = NotFoundError(
                    f"attempt {number} of action {action_name!r} in run {run_name!r} not found "
                    f"(it has {action.attempts} attempt(s))"
                )
            else:
                loaded[key] = (run, action, attempt)
        return loaded

    def _succeed(
        self, tx: _Tx, run: Run, action: Action, attempt: Attempt, outputs_key: str
    ) -> None:
        attempt.phase = "SUCCEEDED"
        attempt.ended_at = utcnow()
        action.outputs_key = outputs_key
        if action.spec.get("cache") is not None:
            cache = task_spec(action.spec).cache
            assert cache is not None
            self._store_cache(tx, run, action, cache, outputs_key)
            action.cache = "overwritten" if run.overwrite_cache else "miss"
        self._set_phase(tx, run, action, "SUCCEEDED")

    @staticmethod
    def _store_cache(
        tx: _Tx, run: Run, action: Action, cache: wire.CacheSpec, outputs_key: str
    ) -> None:
        digest = _digest(cache.key)
        entry = tx.s.scalar(
            select(CacheEntry).where(
                CacheEntry.project_id == run.project_id,
                CacheEntry.domain == run.domain,
                CacheEntry.key_digest == digest,
            )
        )
        if entry is None:
            entry = CacheEntry(project_id=run.project_id, domain=run.domain, key_digest=digest)
            tx.s.add(entry)
        entry.key = cache.key
        entry.object_key = outputs_key
        entry.run = run.name
        entry.action = action.name
        entry.created_at = utcnow()

    def _fail_attempt(
        self, tx: _Tx, run: Run, action: Action, attempt: Attempt, error: wire.ErrorInfo
    ) -> None:
        """End the attempt with ``error``; retry the action if its policy allows."""
        now = utcnow()
        attempt.phase = "FAILED"
        attempt.ended_at = now
        attempt.error = _dump(error)
        retries = task_spec(action.spec).retries
        if error.kind in state.INFRASTRUCTURE_KINDS:
            action.lost_attempts += 1
        if state.may_retry(
            error, attempt.number, retries, action.lost_attempts, self.system_retries
        ):
            # a lost attempt is not the task's fault: the next one starts at once
            backoff = (
                0.0
                if error.kind in state.INFRASTRUCTURE_KINDS
                else state.backoff_s(retries, attempt.number - action.lost_attempts)
            )
            action.retry_at = now + timedelta(seconds=backoff)
            self._set_phase(tx, run, action, "RETRYING")
            tx.fx.schedule = True
        else:
            self._set_phase(tx, run, action, "FAILED", error=error)

    # -- attempts: what the executor observed ---------------------------------------------

    def claim_launchable(
        self, handles: Sequence[tuple[int, str]] = ()
    ) -> tuple[list[Launch], datetime | None]:
        """Start attempts for the waiting actions that fit in what the running ones leave of
        the executor's capacity, in creation order (see ``_requests``). Returns them and when
        the next backoff ends (to wake up then).

        ``handles`` are the executor's handles of attempts the previous pass started, as
        ``(Launch.attempt_id, handle)``: recorded in the same transaction (which saves one per
        launch when passes follow each other, as they do in a fan-out)."""
        now = utcnow()
        launches: list[Launch] = []
        claimed: list[Any] = []  # the rows, by launch
        with self._tx() as tx:
            s = tx.s
            if handles:
                _update_by_id(s, _ATTEMPTS, [{"_id": i, "handle": h} for i, h in handles])
            # (statements built once: building and keying them costs more than running them)
            busy = s.execute(_BUSY).one()
            room = Room.left(self.capacity, Requests(*(float(v or 0) for v in busy)))
            after = 0
            while not room.full:
                # plain rows, not ORM objects: this is the hot path of every action
                rows = s.execute(_CLAIMABLE, {"now": now, "after": after}).all()
                taken = []
                for row in rows:
                    need = Requests.of_row(row)
                    if room.fits(need):
                        taken.append(row)
                    # one that does not fit keeps its place: what it needs is held for it
                    room = room.minus(need)
                    if room.full:
                        break
                launches.extend(self._start_attempts(tx, taken, now))
                claimed.extend(taken)
                if len(rows) < _CLAIM_BATCH:
                    break
                after = rows[-1].id
            next_due = s.scalar(_NEXT_DUE, {"now": now})
            tx.fx.schedule = False  # we are the scheduler: no need to wake ourselves
        # after the commit: every attempt gets its spec with the job (a warm worker in its
        # message, a process in a file), read here rather than asked for by each runtime
        for i, row in enumerate(claimed):
            launch = launches[i]
            try:
                inputs = json.loads(self._store.get_bytes(row.inputs_key))
            except (NotFoundError, ValueError):
                continue  # the runtime fetches the spec itself, and reports what is wrong
            launches[i] = replace(
                launch,
                # built from checked values (validating each costs as much as the rest)
                spec=wire.ActionSpec.model_construct(
                    run=launch.run,
                    action=launch.action,
                    attempt=launch.attempt,
                    project=row.project,
                    domain=row.domain,
                    bundle=launch.bundle,
                    task=launch.task,
                    inputs=inputs,
                    env_vars=launch.run_env,
                    overwrite_cache=row.overwrite_cache,
                ),
            )
        return launches, next_due

    def _start_attempts(self, tx: _Tx, rows: Sequence[Any], now: datetime) -> list[Launch]:
        """QUEUED or RETRYING -> RUNNING with a new attempt, for the rows of
        :meth:`claim_launchable`: what :meth:`_set_phase` does, in a few statements for all."""
        if not rows:
            return []
        s = tx.s
        actions: list[dict[str, Any]] = []
        attempts: list[dict[str, Any]] = []
        tasks: list[wire.TaskSpec] = []
        for row in rows:
            state.check_transition(row.phase, "RUNNING")
            task = task_spec(row.spec)
            tasks.append(task)
            number = row.attempts + 1
            started_at = row.started_at or now
            actions.append(
                {
                    "_id": row.id,
                    "phase": "RUNNING",
                    "attempts": number,
                    "started_at": started_at,
                    "retry_at": None,
                }
            )
            attempts.append(
                {
                    "action_id": row.id,
                    "number": number,
                    "phase": "RUNNING",
                    "started_at": now,
                    "timeout_s": state.job_timeout_s(task),
                    "reported": False,
                }
            )
            run_name = row.run_name
            self._event(tx, "action", run_name, row.name, "RUNNING")
            if row.name == ROOT_ACTION:  # a run's phase is its root action's
                s.execute(
                    update(Run)
                    .where(Run.id == row.run_id)
                    .values(
                        phase="RUNNING",
                        started_at=started_at,
                        ended_at=row.ended_at,
                        error=row.error,
                    )
                )
                self._event(tx, "run", run_name, None, "RUNNING")
        _update_by_id(s, _ACTIONS, actions)
        ids = s.scalars(_INSERT_ATTEMPTS, attempts).all()
        return [
            Launch(
                row.run_name,
                row.name,
                row.attempts + 1,
                task,
                dict(row.env_vars),
                row.bundle,
                attempt_id=attempt_id,
                project=row.project,
                domain=row.domain,
            )
            for row, task, attempt_id in zip(rows, tasks, ids, strict=True)
        ]

    def record_handles(self, handles: Sequence[tuple[int, str]]) -> None:
        """Record the executor's handles of attempts, as ``(Launch.attempt_id, handle)``."""
        if handles:
            with self._tx() as tx:
                _update_by_id(tx.s, _ATTEMPTS, [{"_id": i, "handle": h} for i, h in handles])

    def launch_failed(self, run_name: str, action_name: str, number: int, message: str) -> None:
        """The executor could not start the attempt: a system error, not retried."""
        error = wire.ErrorInfo(type="LaunchError", message=message, kind="system")
        self._end_by_server(run_name, action_name, number, error)

    def process_exited(
        self,
        run_name: str,
        action_name: str,
        number: int,
        returncode: int | None,
        reason: str,
        log_key: str | None,
    ) -> None:
        """The attempt's process is gone. If the runtime never reported ``finished``, the
        attempt failed: timed out, or lost."""
        exit = ProcessExit(run_name, action_name, number, returncode, reason, log_key)
        (error,) = self.processes_exited([exit])
        if error is not None:
            raise error

    def processes_exited(self, exits: Sequence[ProcessExit]) -> list[ServerError | None]:
        """:meth:`process_exited` for many attempts in one transaction; each gets ``None``,
        or the error (404) that one would have raised. Should recording them together fail,
        each is recorded alone: one that cannot be (its error logged and returned) must not
        leave the others RUNNING."""
        try:
            return self._record_exits(exits)
        except Exception:
            if len(exits) == 1:
                raise
            log.exception("cannot record %d process exits together; one at a time", len(exits))
        results: list[ServerError | None] = []
        for exit in exits:
            try:
                results.extend(self._record_exits([exit]))
            except Exception as e:
                log.exception(
                    "cannot record the exit of %s", job_id(exit.run, exit.action, exit.attempt)
                )
                results.append(ServerError(f"cannot record the process exit: {e}"))
        return results

    def _record_exits(self, exits: Sequence[ProcessExit]) -> list[ServerError | None]:
        results: list[ServerError | None] = [None] * len(exits)
        with self._tx() as tx:
            rows = self._attempt_rows(
                tx, [(e.run, e.action, e.attempt) for e in exits], probe_children=False
            )
            with_sessions = self._with_open_sessions(
                tx.s, {r.action_id for r in rows.values() if not isinstance(r, ServerError)}
            )
            logs: list[dict[str, Any]] = []
            slow: list[int] = []
            for i, exit in enumerate(exits):
                row = rows[(exit.run, exit.action, exit.attempt)]
                if isinstance(row, ServerError):
                    results[i] = row
                elif row.phase in TERMINAL and row.action_id not in with_sessions:
                    # the common case: the runtime reported first; only the log is new
                    if exit.log_key is not None:
                        logs.append({"_id": row.attempt_id, "log_key": exit.log_key})
                else:
                    slow.append(i)
            _update_by_id(tx.s, _ATTEMPTS, logs)
            loaded = self._load_attempts(
                tx, [(exits[i].run, exits[i].action, exits[i].attempt) for i in slow]
            )
            for i in slow:
                exit = exits[i]
                row_ = loaded[(exit.run, exit.action, exit.attempt)]
                if isinstance(row_, ServerError):
                    results[i] = row_
                    continue
                run, action, attempt = row_
                error = _exit_error(exit, task_spec(action.spec).resources.memory_bytes)
                self._end_attempt(tx, run, action, attempt, error, log_key=exit.log_key)
        return results

    @staticmethod
    def _with_open_sessions(s: Session, action_ids: set[int]) -> set[int]:
        """Those of ``action_ids`` with a session still open."""
        found: set[int] = set()
        for chunk in _chunks(sorted(action_ids)):
            found.update(
                s.scalars(
                    select(InteractiveSession.action_id)
                    .where(
                        InteractiveSession.action_id.in_(chunk),
                        InteractiveSession.ended_at.is_(None),
                    )
                    .distinct()
                )
            )
        return found

    def _end_by_server(
        self,
        run_name: str,
        action_name: str,
        number: int,
        error: wire.ErrorInfo,
        *,
        log_key: str | None = None,
    ) -> None:
        with self._tx() as tx:
            run, action = self._load(tx.s, run_name, action_name)
            attempt = self._attempt_row(tx.s, run, action, number)
            self._end_attempt(tx, run, action, attempt, error, log_key=log_key)

    def _end_attempt(
        self,
        tx: _Tx,
        run: Run,
        action: Action,
        attempt: Attempt,
        error: wire.ErrorInfo,
        *,
        log_key: str | None,
    ) -> None:
        """The server ends ``attempt`` with ``error`` (timed out, lost, aborted, never
        started), unless it has ended already."""
        number = attempt.number
        if log_key is not None:
            attempt.log_key = log_key
        if attempt.phase in TERMINAL:
            # the runtime reported first, or the attempt was aborted; a session it did not
            # report ended is gone with its process
            reason = f"attempt {number} ended ({attempt.phase}) and its process exited"
            self._close_sessions(tx, run, action, reason, attempt=number)
            return
        if error.kind == "timeout" and attempt.timeout_s is not None:
            error = error.model_copy(
                update={
                    "message": f"attempt {number} of action {action.name!r} timed out "
                    f"after {attempt.timeout_s:g}s and was killed"
                }
            )
        if error.kind == "aborted":
            self._abort_one(tx, run, action, error)
            return
        self._close_sessions(tx, run, action, error.message, attempt=number)
        self._fail_attempt(tx, run, action, attempt, error)

    def running_attempts(self) -> list[RunningAttempt]:
        """Attempts the database believes are running (after a restart: those whose
        processes outlived the previous server process still are)."""
        with self._db.read() as s:
            rows = s.execute(
                select(
                    Run.name,
                    Action.name,
                    Attempt.number,
                    Attempt.handle,
                    Attempt.started_at,
                    Action.spec,
                )
                .join(Action, Action.id == Attempt.action_id)
                .join(Run, Run.id == Action.run_id)
                .where(Attempt.phase == "RUNNING")
                .order_by(Attempt.id)
            ).all()
        return [
            RunningAttempt(r, a, n, h, started, task_spec(spec))
            for r, a, n, h, started, spec in rows
        ]

    def heard_from(self, attempts: Sequence[RunningAttempt]) -> None:
        """Adopted attempts count as heard from now: they could not beat while the server
        was away, and get a whole heartbeat timeout to resume."""
        now = utcnow()
        with self._tx() as tx:
            for chunk in _chunks(attempts):
                for a in chunk:
                    tx.s.execute(
                        update(Attempt)
                        .where(
                            Attempt.phase == "RUNNING",
                            Attempt.number == a.attempt,
                            Attempt.action_id
                            == select(Action.id)
                            .join(Run, Run.id == Action.run_id)
                            .where(Run.name == a.run, Action.name == a.action)
                            .scalar_subquery(),
                        )
                        .values(heartbeat_at=now)
                    )

    def lose_silent(self, timeout_s: float) -> int:
        """Fail as lost every running attempt not heard from for ``timeout_s`` seconds (no
        heartbeat, nor start, nor launch since), and kill what is left of its process: it is
        stopped, hung, or cut off from the server. Its retry policy decides the rest. Returns
        how many there were.

        Each is ended in a transaction of its own: one that cannot be (its error is logged)
        must not keep the others running, nor stop the next sweep."""
        now = utcnow()
        heard = func.coalesce(Attempt.heartbeat_at, Attempt.runtime_started_at, Attempt.started_at)
        silent = Attempt.phase == "RUNNING", heard < now - timedelta(seconds=timeout_s)
        with self._db.read() as s:
            ids = s.scalars(select(Attempt.id).where(*silent).order_by(Attempt.id)).all()
        lost = 0
        for attempt_id in ids:
            try:
                with self._tx() as tx:
                    row = tx.s.execute(
                        select(Run, Action, Attempt, heard)
                        .join(Action, Action.id == Attempt.action_id)
                        .join(Run, Run.id == Action.run_id)
                        .where(Attempt.id == attempt_id, *silent)  # it may have beaten since
                    ).first()
                    if row is None:
                        continue
                    run, action, attempt, last = row
                    silence = (now - last).total_seconds() if last is not None else timeout_s
                    error = wire.ErrorInfo(
                        type="WorkerLostError",
                        message=f"worker lost: no heartbeat from attempt {attempt.number} for "
                        f"{silence:.0f} s (the limit is {timeout_s:g} s): its process was "
                        "stopped, hung or cut off from the server, and was killed",
                        kind="worker_lost",
                    )
                    tx.fx.cancel.append(job_id(run.name, action.name, attempt.number))
                    self._end_attempt(tx, run, action, attempt, error, log_key=None)
                lost += 1
            except Exception:
                log.exception("cannot declare the silent attempt (row %d) lost", attempt_id)
        return lost

    def lose_attempt(self, attempt: RunningAttempt, log_key: str | None) -> None:
        """The server restarted while ``attempt`` ran: it is lost (and retried per policy)."""
        error = wire.ErrorInfo(
            type="WorkerLostError",
            message=f"worker lost: the server restarted while attempt {attempt.attempt} was "
            "running",
            kind="worker_lost",
        )
        self._end_by_server(attempt.run, attempt.action, attempt.attempt, error, log_key=log_key)

    # -- logs and events ------------------------------------------------------------------

    def log_source(self, run_name: str, action_name: str, number: int | None) -> LogSource:
        with self._db.read() as s:
            run, action = self._load(s, run_name, action_name)
            if number is None:
                number = action.attempts
            if number == 0:
                return LogSource(0, action.phase in TERMINAL, None)
            attempt = self._attempt_row(s, run, action, number)
            return LogSource(number, attempt.phase in TERMINAL, attempt.log_key)

    def events_after(
        self, seq: int, run: str | None, limit: int = 500, projects: frozenset[str] | None = None
    ) -> list[wire.Event]:
        """The events after ``seq`` (of ``run``; of runs of ``projects`` if given), oldest
        first: plain rows, and models built without validating what the server wrote itself
        (a busy run has thousands)."""
        query = select(Event.seq, Event.kind, Event.run, Event.action, Event.phase, Event.at)
        query = query.where(Event.seq > seq)
        if run is not None:
            query = query.where(Event.run == run)
        elif projects is not None:
            query = query.where(
                Event.run.in_(
                    select(Run.name)
                    .join(Project, Project.id == Run.project_id)
                    .where(Project.name.in_(projects))
                )
            )
        with self._db.read() as s:
            return [
                wire.Event.model_construct(
                    seq=e.seq, kind=e.kind, run=e.run, action=e.action, phase=e.phase, at=e.at
                )
                for e in s.execute(query.order_by(Event.seq).limit(limit))
            ]

    def last_event_seq(self) -> int:
        with self._db.read() as s:
            return s.scalar(select(func.max(Event.seq))) or 0


_OK = wire.ItemStatus()
# the tables themselves: bulk statements on them are plain executemany, without the ORM's
# per-row bookkeeping (which costs more than the statement)
_ACTIONS = cast(Table, Action.__table__)
_ATTEMPTS = cast(Table, Attempt.__table__)
_EVENTS = cast(Table, Event.__table__)


def _update_by_id(s: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """``UPDATE table SET ... WHERE id = :_id`` for each row (all with the same keys)."""
    if rows:
        s.execute(_update_statement(table, tuple(k for k in rows[0] if k != "_id")), rows)


@functools.cache
def _update_statement(table: Table, columns: tuple[str, ...]) -> Any:
    # one statement object per shape: SQLAlchemy keys its compiled form on the object
    values: dict[str, Any] = {k: bindparam(k) for k in columns}
    return update(table).where(table.c.id == bindparam("_id")).values(values)


_INSERT_EVENTS = insert(_EVENTS)
_INSERT_ACTIONS = insert(_ACTIONS)
_INSERT_ATTEMPTS = insert(_ATTEMPTS).returning(_ATTEMPTS.c.id, sort_by_parameter_order=True)

_child = aliased(Action)
#: What running actions hold (see ``_requests``). A parent blocked on its children holds
#: nothing, or a deep tree would deadlock.
_BUSY = select(
    func.sum(Action.weight),
    func.sum(Action.cpu_request),
    func.sum(Action.memory_request),
    func.sum(Action.gpu_request),
).where(
    Action.phase == "RUNNING",
    ~exists().where(
        _child.run_id == Action.run_id,
        _child.parent == Action.name,
        _child.phase.not_in(TERMINAL),
    ),
)
#: What may start now (``:now``), in creation order.
_CLAIMABLE = (
    select(
        Action.id,
        Action.name,
        Action.run_id,
        Action.phase,
        cast_(Action.spec, Text).label("spec"),  # text: a cache key as it is
        Action.weight,
        Action.cpu_request,
        Action.memory_request,
        Action.gpu_request,
        Action.attempts,
        Action.started_at,
        Action.ended_at,
        Action.error,
        Action.inputs_key,
        Run.name.label("run_name"),
        Run.env_vars,
        Run.bundle,
        Run.domain,
        Run.overwrite_cache,
        Project.name.label("project"),
    )
    .join(Run, Run.id == Action.run_id)
    .join(Project, Project.id == Run.project_id)
    .where(
        Action.id > bindparam("after"),
        or_(
            (Action.phase == "QUEUED") & (Action.cache != "waiting"),
            (Action.phase == "RETRYING") & (Action.retry_at <= bindparam("now")),
        ),
    )
    .order_by(Action.id)
    .limit(_CLAIM_BATCH)
)


def _serialized(run: Run, digest: str, *, waiting: bool) -> Select[Action]:
    """The open actions of ``digest``'s serialized cache in ``run``'s project and domain,
    oldest first: those ``waiting`` for another, or the one computing it (the others)."""
    status = Action.cache == "waiting" if waiting else Action.cache != "waiting"
    return (
        select(Action)
        .join(Run, Run.id == Action.run_id)
        .where(
            Action.cache_digest == digest,
            Action.phase.not_in(TERMINAL),
            status,
            Run.project_id == run.project_id,
            Run.domain == run.domain,
        )
        .order_by(Action.id)
    )


def _first(s: Session, query: Select[Action]) -> Action | None:
    return s.scalars(query.limit(1)).first()


_RUN_ID = select(Run.id).where(Run.name == bindparam("name"))
_RUN_IDS = select(Run.name, Run.id).where(Run.name.in_(bindparam("names", expanding=True)))
_OUTCOMES = select(Action.name, Action.phase, Action.error, Action.outputs_key).where(
    Action.run_id == bindparam("run"), Action.name.in_(bindparam("names", expanding=True))
)
_LAST_SEQ = select(func.max(Event.seq))
#: Actions of run ``:run`` that ended after event ``:seq`` (events commit in seq order).
_ENDED_SINCE = select(Event.seq, Event.action).where(
    Event.run == bindparam("run"),
    Event.seq > bindparam("seq"),
    Event.kind == "action",
    Event.phase.in_(TERMINAL),
)
#: What deciding on reports about attempts of actions ``:names`` of run ``:run`` takes.
_ATTEMPT_ROWS = (
    select(
        Action.id.label("action_id"),
        Action.name.label("action"),
        Action.phase.label("action_phase"),
        Action.attempts,
        Action.cache,
        Attempt.id.label("attempt_id"),
        Attempt.number,
        Attempt.phase,
        Attempt.reported,
        Attempt.error,
    )
    .outerjoin(Attempt, Attempt.action_id == Action.id)
    .where(Action.run_id == bindparam("run"), Action.name.in_(bindparam("names", expanding=True)))
)
#: Which of actions ``:names`` of run ``:run`` have children that have not ended.
_OPEN_PARENTS = (
    select(Action.parent)
    .where(
        Action.run_id == bindparam("run"),
        Action.parent.in_(bindparam("names", expanding=True)),
        Action.phase.not_in(TERMINAL),
    )
    .distinct()
)
#: When the next backoff (after ``:now``) ends.
_NEXT_DUE = select(func.min(Action.retry_at)).where(
    Action.phase == "RETRYING", Action.retry_at > bindparam("now")
)


def _exit_error(exit: ProcessExit, memory_limit: int | None = None) -> wire.ErrorInfo:
    """How an attempt whose process ended without reporting failed (``memory_limit``: its
    task's request, which the executor enforces)."""
    if exit.reason == "timeout":
        return wire.ErrorInfo(
            type="TaskTimeoutError",
            message=f"attempt {exit.attempt} of action {exit.action!r} exceeded its timeout and "
            "was killed",
            kind="timeout",
        )
    if exit.reason == "cancelled":
        return wire.ErrorInfo(
            type="ActionAborted", message="the attempt was cancelled", kind="aborted"
        )
    if exit.reason == "oom":
        peak = f" (it held {_mib(exit.peak_bytes)})" if exit.peak_bytes else ""
        return wire.ErrorInfo(
            type="OOMError",
            message=f"attempt {exit.attempt} of action {exit.action!r} used more memory than "
            f"its limit, {_mib(memory_limit)}{peak}, and was killed: ask for more with "
            "Resources(memory=...), or use less",
            kind="oom",
        )
    code = exit.returncode
    if code is None:  # adopted after a restart: not our child, so no exit status
        return wire.ErrorInfo(
            type="WorkerLostError",
            message="worker lost: its process ended without reporting its result",
            kind="worker_lost",
        )
    detail = f"worker lost: process exited with code {code}"
    if code is not None and code < 0:
        detail += f" (killed by signal {-code})"
    if code == 0:
        detail += " without reporting its result"
    return wire.ErrorInfo(type="WorkerLostError", message=detail, kind="worker_lost")


def _mib(n: int | None) -> str:
    return "its memory request" if n is None else f"{n / (1 << 20):.0f} MiB"


def _status(error: ServerError) -> wire.ItemStatus:
    return wire.ItemStatus(status=error.status_code, detail=str(error))


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def normalize_digest(digest: str) -> str:
    """The bare sha256 hex of a bundle digest given as ``sha256:<hex>`` or ``<hex>``."""
    hexpart = digest.removeprefix("sha256:").lower()
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise BadRequestError(
            f"invalid bundle digest {digest!r}: expected 'sha256:' followed by 64 hex digits "
            "(the SHA-256 of the .tar.gz bytes)"
        )
    return hexpart


def log_path(logs_dir: Path, run: str, action: str, attempt: int) -> Path:
    """Where the executor writes an attempt's live log (one directory per run, not per
    action: making a directory for each of a fan-out's actions costs more than its log)."""
    return logs_dir / run / f"{action}.{attempt}.log"


def log_key(run: str, action: str, attempt: int) -> str:
    """The object key of an attempt's log once it has ended."""
    return f"logs/{run}/{action}/{attempt}.log"
