"""Runs, actions and attempts: the state machine's storage side, the only writer of their state.

Runtimes and clients *propose* (create an action, an attempt started or finished); the methods
here accept or reject, idempotently where a retried request must be safe. Each write happens in
one transaction under the database's writer lock; what must happen after it commits (wake the
scheduler, kill processes, notify waiters) is collected as :class:`Effects` and handed to the
dispatcher the control plane installs.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import string
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from .. import wire
from ..executors import Capacity, job_id
from . import _state as state
from ._db import Database
from ._errors import BadRequestError, ConflictError, NotFoundError, PayloadTooLargeError
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
from ._state import ROOT_ACTION, TERMINAL

_NAME_ALPHABET = string.ascii_lowercase + string.digits
_CLAIM_BATCH = 200  # queued actions looked at per query when claiming
_SLOT_EPSILON = 1e-6  # slot shares are fractions: 50 x 1/50 must fill a slot exactly


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


@dataclass(frozen=True, slots=True)
class RunningAttempt:
    run: str
    action: str
    attempt: int
    handle: str | None


@dataclass(frozen=True, slots=True)
class LogSource:
    """Where one attempt's log is: the object store once it ended, a local file before."""

    attempt: int  # 0 when the action has no attempt yet
    ended: bool  # the attempt (or, with no attempt, the action) is over
    log_key: str | None


@dataclass
class _Tx:
    s: Session
    fx: Effects


#: One write transaction and what to do after it commits (for the session service).
Tx = _Tx


def encode_value(value: Any, what: str) -> bytes:
    """Compact JSON of inputs or outputs, refused with 413 over ``wire.MAX_INLINE_BYTES``."""
    data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
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
    row: InteractiveSession, run: str, action: str, activity: datetime | None = None
) -> wire.SessionInfo:
    """The wire view of a session; ``activity`` is newer activity not yet written to the row.
    The IDE's token stays out of it."""
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

    def __init__(self, db: Database, store: ObjectStore, capacity: Capacity) -> None:
        self._db = db
        self._store = store
        self.capacity = capacity
        self.dispatch: Callable[[Effects], None] = lambda fx: None
        #: a session's activity newer than its row (the session service keeps it in memory)
        self.activity: Callable[[str], datetime | None] = lambda session_id: None

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[_Tx]:
        fx = Effects()
        with self._db.write() as s:
            yield _Tx(s, fx)
        if fx:
            self.dispatch(fx)

    def transaction(self) -> AbstractContextManager[Tx]:
        """A write transaction whose effects are dispatched after it commits."""
        return self._tx()

    def _put_value(self, data: bytes) -> str:
        # content-addressed: identical inputs or outputs are stored once, and a key never
        # changes meaning, so a re-submitted action can never clobber another's inputs
        key = f"values/{hashlib.sha256(data).hexdigest()}.json"
        self._store.put_bytes(key, data)
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
        return session_info(row, run.name, action.name, self.activity(row.id))

    @staticmethod
    def _close_sessions(
        tx: _Tx, run: Run, action: Action, reason: str, attempt: int | None = None
    ) -> None:
        """End the action's open sessions (of attempts up to ``attempt``): their attempt is
        over, so is their IDE."""
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
        tx.s.add(Event(kind=kind, run=run, action=action, phase=phase, at=utcnow()))
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
        if phase in TERMINAL and cascade:
            self._abort_descendants(tx, run, action)

    def _abort_descendants(self, tx: _Tx, run: Run, action: Action) -> None:
        """Nobody waits for the children of an ended action: abort what is still going."""
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
        while True:
            name = "r" + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(11))
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
    ) -> list[wire.RunInfo]:
        """Runs matching every given filter, newest first."""
        counts = select(Action.run_id, func.count().label("n")).group_by(Action.run_id).subquery()
        query = (
            select(Run, Project.name, counts.c.n)
            .join(Project, Project.id == Run.project_id)
            .outerjoin(counts, counts.c.run_id == Run.id)
        )
        if project is not None:
            query = query.where(Project.name == project)
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
        # stored before the check: values are content-addressed, so storing them again for an
        # existing action changes nothing, and the transaction stays short
        inputs_key = self._put_value(encode_value(spec.inputs, "inputs"))
        with self._tx() as tx:
            run = self._run_row(tx.s, run_name)
            names = [spec.name] if spec.parent is None else [spec.name, spec.parent]
            found = {
                a.name: a
                for a in tx.s.scalars(
                    select(Action).where(Action.run_id == run.id, Action.name.in_(names))
                )
            }
            existing = found.get(spec.name)
            if existing is not None:
                return action_info(run.name, existing, self._attempts(tx.s, existing))
            if run.phase in TERMINAL:
                raise ConflictError(f"run {run_name!r} is {run.phase}; it takes no new actions")
            if spec.parent is None:
                raise BadRequestError(
                    f"action {spec.name!r} needs a parent: only the root action {ROOT_ACTION!r} "
                    "has none, and POST /runs creates it"
                )
            parent = found.get(spec.parent)
            if parent is None:
                raise NotFoundError(f"parent action {spec.parent!r} not found in run {run_name!r}")
            if parent.phase in TERMINAL:
                raise ConflictError(
                    f"parent action {spec.parent!r} is {parent.phase}; it cannot start children"
                )
            action = self._insert_action(tx, run, spec, inputs_key)
            return action_info(run.name, action, [])

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
            weight=1.0 if task.reuse is None else 1.0 / task.reuse.concurrency,
            created_at=utcnow(),
        )
        tx.s.add(action)
        self._event(tx, "action", run.name, action.name, "QUEUED")
        too_big = state.resources_error(task.resources, self.capacity)
        if too_big is not None:
            self._set_phase(tx, run, action, "FAILED", error=too_big)
            return action
        if task.cache is not None and not run.overwrite_cache:
            entry = tx.s.scalar(
                select(CacheEntry).where(
                    CacheEntry.project_id == run.project_id,
                    CacheEntry.domain == run.domain,
                    CacheEntry.key_digest == _digest(task.cache.key),
                )
            )
            if entry is not None:
                action.cache = "hit"
                action.outputs_key = entry.object_key
                action.started_at = utcnow()
                self._set_phase(tx, run, action, "SUCCEEDED")
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
            run = self._run_row(s, run_name)
            actions = list(
                s.scalars(select(Action).where(Action.run_id == run.id).order_by(Action.id))
            )
            by_action: dict[int, list[Attempt]] = defaultdict(list)
            for attempt in s.scalars(
                select(Attempt)
                .join(Action, Action.id == Attempt.action_id)
                .where(Action.run_id == run.id)
            ):
                by_action[attempt.action_id].append(attempt)
            latest: dict[int, InteractiveSession] = {}
            if any(a.spec.get("interactive") is not None for a in actions):
                for row in s.scalars(
                    select(InteractiveSession)
                    .join(Action, Action.id == InteractiveSession.action_id)
                    .where(Action.run_id == run.id)
                    .order_by(InteractiveSession.started_at)
                ):
                    latest[row.action_id] = row  # the newest wins
            names = {a.id: a.name for a in actions}
            sessions = {
                action_id: session_info(row, run.name, names[action_id], self.activity(row.id))
                for action_id, row in latest.items()
            }
            return [action_info(run.name, a, by_action[a.id], sessions.get(a.id)) for a in actions]

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

    @staticmethod
    def _check_current(run: Run, action: Action, attempt: Attempt) -> None:
        if attempt.number != action.attempts:
            raise ConflictError(
                f"attempt {attempt.number} of action {action.name!r} in run {run.name!r} is "
                f"stale: attempt {action.attempts} replaced it"
            )
        if attempt.phase in TERMINAL:
            reason = _error(attempt.error)
            raise ConflictError(
                f"attempt {attempt.number} of action {action.name!r} in run {run.name!r} has "
                f"already ended ({attempt.phase}" + (f": {reason.message}" if reason else "") + ")"
            )

    def attempt_finished(
        self, run_name: str, action_name: str, number: int, result: wire.AttemptResult
    ) -> wire.ActionInfo:
        """Record the outcome the runtime reports. A duplicate report of an accepted outcome
        is ignored; a report for an attempt that is stale or that the server already ended
        (timeout, worker lost, abort) is rejected with 409."""
        if (result.outputs is None) == (result.error is None):
            raise BadRequestError("an attempt result has exactly one of 'outputs' and 'error'")
        outputs_key = None
        if result.outputs is not None:  # content-addressed: a duplicate report stores nothing new
            outputs_key = self._put_value(encode_value(result.outputs.value, "outputs"))
        with self._tx() as tx:
            run, action = self._load(tx.s, run_name, action_name)
            attempt = self._attempt_row(tx.s, run, action, number)
            if attempt.reported:
                return action_info(run.name, action, self._attempts(tx.s, action))
            self._check_current(run, action, attempt)
            attempt.reported = True
            if result.error is not None:
                self._fail_attempt(tx, run, action, attempt, result.error)
            else:
                assert outputs_key is not None
                self._succeed(tx, run, action, attempt, outputs_key)
            return action_info(run.name, action, self._attempts(tx.s, action))

    def _succeed(
        self, tx: _Tx, run: Run, action: Action, attempt: Attempt, outputs_key: str
    ) -> None:
        attempt.phase = "SUCCEEDED"
        attempt.ended_at = utcnow()
        action.outputs_key = outputs_key
        task = wire.TaskSpec.model_validate(action.spec)
        if task.cache is not None:
            self._store_cache(tx, run, action, task.cache, outputs_key)
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
        retries = wire.TaskSpec.model_validate(action.spec).retries
        if state.may_retry(error, attempt.number, retries):
            action.retry_at = now + timedelta(seconds=state.backoff_s(retries, attempt.number))
            self._set_phase(tx, run, action, "RETRYING")
            tx.fx.schedule = True
        else:
            self._set_phase(tx, run, action, "FAILED", error=error)

    # -- attempts: what the executor observed ---------------------------------------------

    def claim_launchable(self, slots: int) -> tuple[list[Launch], datetime | None]:
        """Start attempts for as many waiting actions as there are free slots, in creation
        order. Returns them and when the next backoff ends (to wake up then)."""
        now = utcnow()
        with self._tx() as tx:
            s = tx.s
            child = aliased(Action)
            waiting_on_children = exists().where(
                child.run_id == Action.run_id,
                child.parent == Action.name,
                child.phase.not_in(TERMINAL),
            )
            # a parent blocked on its children holds no slot, or a deep tree would deadlock
            busy = s.scalar(
                select(func.coalesce(func.sum(Action.weight), 0.0)).where(
                    Action.phase == "RUNNING", ~waiting_on_children
                )
            )
            free = slots - float(busy or 0.0)
            launches: list[Launch] = []
            while free > _SLOT_EPSILON:
                rows = s.execute(
                    select(Action, Run)
                    .join(Run, Run.id == Action.run_id)
                    .where(
                        or_(
                            Action.phase == "QUEUED",
                            (Action.phase == "RETRYING") & (Action.retry_at <= now),
                        )
                    )
                    .order_by(Action.id)
                    .limit(_CLAIM_BATCH)
                ).all()
                for action, run in rows:
                    free -= action.weight  # may go below 0 by less than one slot
                    task = wire.TaskSpec.model_validate(action.spec)
                    action.attempts += 1
                    s.add(
                        Attempt(
                            action_id=action.id,
                            number=action.attempts,
                            phase="RUNNING",
                            started_at=now,
                            timeout_s=state.job_timeout_s(task),
                        )
                    )
                    self._set_phase(tx, run, action, "RUNNING")
                    launches.append(
                        Launch(
                            run.name,
                            action.name,
                            action.attempts,
                            task,
                            dict(run.env_vars),
                            run.bundle,
                        )
                    )
                    if free <= _SLOT_EPSILON:
                        break
                if len(rows) < _CLAIM_BATCH:
                    break
                s.flush()  # the claimed rows are RUNNING now: the next batch skips them
            next_due = s.scalar(
                select(func.min(Action.retry_at)).where(
                    Action.phase == "RETRYING", Action.retry_at > now
                )
            )
            tx.fx.schedule = False  # we are the scheduler: no need to wake ourselves
        return launches, next_due

    def record_handle(self, run_name: str, action_name: str, number: int, handle: str) -> None:
        with self._tx() as tx:
            run, action = self._load(tx.s, run_name, action_name)
            self._attempt_row(tx.s, run, action, number).handle = handle

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
        error: wire.ErrorInfo
        if reason == "timeout":
            error = wire.ErrorInfo(
                type="TaskTimeoutError",
                message=f"attempt {number} of action {action_name!r} exceeded its timeout and "
                "was killed",
                kind="timeout",
            )
        elif reason == "cancelled":
            error = wire.ErrorInfo(
                type="ActionAborted", message="the attempt was cancelled", kind="aborted"
            )
        else:
            detail = f"worker lost: process exited with code {returncode}"
            if returncode is not None and returncode < 0:
                detail += f" (killed by signal {-returncode})"
            if returncode == 0:
                detail += " without reporting its result"
            error = wire.ErrorInfo(type="WorkerLostError", message=detail, kind="worker_lost")
        self._end_by_server(run_name, action_name, number, error, log_key=log_key)

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
                        "message": f"attempt {number} of action {action_name!r} timed out "
                        f"after {attempt.timeout_s:g}s and was killed"
                    }
                )
            if error.kind == "aborted":
                self._abort_one(tx, run, action, error)
                return
            self._close_sessions(tx, run, action, error.message, attempt=number)
            self._fail_attempt(tx, run, action, attempt, error)

    def running_attempts(self) -> list[RunningAttempt]:
        """Attempts the database believes are running (after a restart: none really are)."""
        with self._db.read() as s:
            rows = s.execute(
                select(Run.name, Action.name, Attempt.number, Attempt.handle)
                .join(Action, Action.id == Attempt.action_id)
                .join(Run, Run.id == Action.run_id)
                .where(Attempt.phase == "RUNNING")
                .order_by(Attempt.id)
            ).all()
        return [RunningAttempt(r, a, n, h) for r, a, n, h in rows]

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

    def events_after(self, seq: int, run: str | None, limit: int = 500) -> list[wire.Event]:
        query = select(Event).where(Event.seq > seq)
        if run is not None:
            query = query.where(Event.run == run)
        with self._db.read() as s:
            return [
                wire.Event(
                    seq=e.seq,
                    kind=e.kind,  # type: ignore[arg-type]
                    run=e.run,
                    action=e.action,
                    phase=e.phase,  # type: ignore[arg-type]
                    at=e.at,
                )
                for e in s.scalars(query.order_by(Event.seq).limit(limit))
            ]

    def last_event_seq(self) -> int:
        with self._db.read() as s:
            return s.scalar(select(func.max(Event.seq))) or 0

    def check_run(self, name: str) -> None:
        with self._db.read() as s:
            self._run_row(s, name)


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
    """Where the executor writes an attempt's live log."""
    return logs_dir / run / action / f"{attempt}.log"


def log_key(run: str, action: str, attempt: int) -> str:
    """The object key of an attempt's log once it has ended."""
    return f"logs/{run}/{action}/{attempt}.log"
