"""The transition engine: every phase change of an action, its attempts and its run is made
here, with the rules that follow from it. The legal moves are ``_state.ALLOWED``; nothing
else in the server writes a phase (commands only create actions, QUEUED).

The transitions, one at a time (ORM rows) or in batches (plain rows, a few statements for many:
the paths every action of a fan-out takes):

- QUEUED/RETRYING -> RUNNING with a new attempt: :meth:`Transitions.start_attempts` (batch);
- RUNNING <-> INTERACTIVE: :meth:`Transitions.set_interactive`;
- -> SUCCEEDED on a runtime's result: :meth:`Transitions._succeed`, and
  :meth:`Transitions._succeed_rows` (batch);
- -> RETRYING or FAILED on a failed attempt, the runtime's report or the server's verdict
  (timeout, lost, out of memory): :meth:`Transitions._fail_attempt`, via
  :meth:`Transitions._end_attempt` for the server's;
- -> ABORTED: :meth:`Transitions._abort_one`;
- any of them, for one action: :meth:`Transitions._set_phase`, which applies the rules.

The rules, what follows from a transition within its transaction (and the effects carried out
after it commits, :class:`~._common.Effects`):

- every phase change is an event (published to watchers after the commit): ``_event``;
- a run's phase is its root action's: ``_set_phase``;
- an action that ends frees what it held: the scheduler is woken (``fx.freed``) if some
  action waits for room; one queued or due for a retry wakes it anyway (``fx.schedule``);
- an action that ends aborts its descendants still open, and kills their processes
  (``fx.cancel``): ``_abort_descendants``;
- the end of a serialized cache's computation ends its waiters' wait (its result is theirs,
  or the next of them computes it): ``_end_serialized``;
- an attempt that ends closes its sessions: ``_close_sessions``;
- an attempt's credential is valid only while it runs: it is checked against its phase at
  each request (``_authz``), so ending the attempt revokes it; the live ones are cached, and
  every end is told to the cache as it commits (``fx.ended``, ``attempts_ended``);
- a failed attempt retries by the task's policy, or from the server's allowance when the
  infrastructure lost it (``_state.may_retry``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from ... import wire
from ...executors import Capacity, job_id
from ...wire import ErrorKind, Phase
from .. import _state as state
from .._db import Database
from .._errors import (
    NotFoundError,
)
from .._models import (
    Action,
    Attempt,
    CacheEntry,
    InteractiveSession,
    Run,
    utcnow,
)
from .._objects import ObjectStore
from .._requests import Defaults
from .._state import ROOT_ACTION, TERMINAL
from .._values import put_value
from ._common import (
    _ACTIONS,
    _ATTEMPTS,
    _EVENTS,
    Effects,
    Launch,
    Tx,
    _AttemptRow,
    _chunks,
    _digest,
    _first,
    _not_current,
    _serialized,
    _Tx,
    _update_by_id,
    task_spec,
)

log = logging.getLogger("loom.server")


def _dump(error: wire.ErrorInfo) -> dict[str, Any]:
    return error.model_dump(mode="json")


_INSERT_EVENTS = insert(_EVENTS)
_INSERT_ATTEMPTS = insert(_ATTEMPTS).returning(_ATTEMPTS.c.id, sort_by_parameter_order=True)


class Transitions:
    """The transition engine: every phase change of an action, its attempts and its run is made"""

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
        #: claims, in a transaction that queued actions, what of them fits now (the
        #: scheduler's policy: ``_scheduler.Claims.claim_in``); unset, the scheduler does
        self.claim_queued: Callable[[_Tx], None] = lambda tx: None
        #: takes back the handles a transaction that rolled back meant to record
        self.handles_back: Callable[[list[tuple[int, str]]], None] = lambda handles: None
        #: told of the attempts that ended as soon as that committed (before anything else
        #: runs on this thread): what caches live credentials forgets them
        self.attempts_ended: Callable[[set[tuple[str, str, int]]], None] = lambda ended: None
        #: a session's activity newer than its row (the session service keeps it in memory)
        self.activity: Callable[[str], datetime | None] = lambda session_id: None
        #: a session's own origin (the control plane knows where sessions are served)
        self.session_origin: Callable[[str], str] = lambda session_id: ""

    @contextmanager
    def _tx(self) -> Iterator[_Tx]:
        fx = Effects()
        try:
            with self._db.write() as s:
                tx = _Tx(s, fx)
                yield tx
                if tx.events:  # one multi-row insert, not an ORM object per event
                    s.execute(_INSERT_EVENTS, tx.events)
        except BaseException:
            if fx.handles:
                self.handles_back(fx.handles)
            raise
        if fx.ended:
            self.attempts_ended(fx.ended)
        if fx:
            self.dispatch(fx)

    def transaction(self) -> AbstractContextManager[Tx]:
        """A write transaction whose effects are dispatched after it commits."""
        return self._tx()

    def _put_value(self, data: bytes) -> str:
        return put_value(self._store, data)

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
        phase = Phase.INTERACTIVE if interactive else Phase.RUNNING
        if action.phase != phase:
            self._set_phase(tx, run, action, phase)
            # an INTERACTIVE action holds no executor slot: one may be free now
            tx.fx.freed = tx.fx.freed or interactive

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
        phase: Phase,
        *,
        error: wire.ErrorInfo | None = None,
        cascade: bool = True,
    ) -> None:
        """Move ``action`` to ``phase``, record the event, and keep the run in step."""
        state.check_transition(action.phase, phase)
        now = utcnow()
        action.phase = phase
        if phase == Phase.RUNNING and action.started_at is None:
            action.started_at = now
        if phase != Phase.RETRYING:
            action.retry_at = None
        if phase in TERMINAL:
            action.ended_at = now
            action.error = None if error is None else _dump(error)
            tx.fx.freed = True
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
        if leader.phase != Phase.SUCCEEDED:
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
            self._set_phase(tx, follower_run, follower, Phase.SUCCEEDED)

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
            kind=ErrorKind.ABORTED,
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
                attempt.phase = Phase.ABORTED
                tx.fx.ended.add((run.name, action.name, attempt.number))
                attempt.ended_at = utcnow()
                attempt.error = _dump(error)
                tx.fx.cancel.append(job_id(run.name, action.name, attempt.number))
        self._close_sessions(tx, run, action, error.message)
        self._set_phase(tx, run, action, Phase.ABORTED, error=error, cascade=False)

    @staticmethod
    def _check_current(run: Run, action: Action, attempt: Attempt) -> None:
        error = _not_current(
            run.name, action.name, action.attempts, attempt.number, attempt.phase, attempt.error
        )
        if error is not None:
            raise error

    def _succeed_rows(
        self, tx: _Tx, rows: Sequence[tuple[_AttemptRow, str]], now: datetime
    ) -> None:
        """What :meth:`_succeed` and :meth:`_set_phase` do for a successful attempt of a
        child action without cache or open children, for many at once in a few statements."""
        if not rows:
            return
        for row, _ in rows:
            state.check_transition(row.action_phase, Phase.SUCCEEDED)
            self._event(tx, "action", row.run, row.action, Phase.SUCCEEDED)
            tx.fx.ended.add((row.run, row.action, row.number))
        _update_by_id(
            tx.s,
            _ATTEMPTS,
            [
                {"_id": row.attempt_id, "phase": Phase.SUCCEEDED, "ended_at": now, "reported": True}
                for row, _ in rows
            ],
        )
        _update_by_id(
            tx.s,
            _ACTIONS,
            [
                {
                    "_id": row.action_id,
                    "phase": Phase.SUCCEEDED,
                    "ended_at": now,
                    "error": None,
                    "outputs_key": key,
                    "retry_at": None,
                }
                for row, key in rows
            ],
        )
        tx.fx.freed = True

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

    def _succeed(
        self, tx: _Tx, run: Run, action: Action, attempt: Attempt, outputs_key: str
    ) -> None:
        attempt.phase = Phase.SUCCEEDED
        attempt.ended_at = utcnow()
        tx.fx.ended.add((run.name, action.name, attempt.number))
        action.outputs_key = outputs_key
        if action.spec.get("cache") is not None:
            cache = task_spec(action.spec).cache
            assert cache is not None
            self._store_cache(tx, run, action, cache, outputs_key)
            action.cache = "overwritten" if run.overwrite_cache else "miss"
        self._set_phase(tx, run, action, Phase.SUCCEEDED)

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
        attempt.phase = Phase.FAILED
        attempt.ended_at = now
        attempt.error = _dump(error)
        tx.fx.ended.add((run.name, action.name, attempt.number))
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
            queued = task_spec(action.spec).max_queued_s
            if queued is not None and action.queued_until is not None:
                # the wait for the next attempt counts from when it may start
                action.queued_until = action.retry_at + timedelta(seconds=queued)
            self._set_phase(tx, run, action, Phase.RETRYING)
            tx.fx.schedule = True
        else:
            self._set_phase(tx, run, action, Phase.FAILED, error=error)

    def start_attempts(self, tx: _Tx, rows: Sequence[Any], now: datetime) -> list[Launch]:
        """QUEUED or RETRYING -> RUNNING with a new attempt, for the rows the scheduler
        claims (``_scheduler.Claims``): what :meth:`_set_phase` does, in a few statements for
        all."""
        if not rows:
            return []
        s = tx.s
        actions: list[dict[str, Any]] = []
        attempts: list[dict[str, Any]] = []
        tasks: list[wire.TaskSpec] = []
        for row in rows:
            state.check_transition(row.phase, Phase.RUNNING)
            task = task_spec(row.spec)
            tasks.append(task)
            number = row.attempts + 1
            started_at = row.started_at or now
            actions.append(
                {
                    "_id": row.id,
                    "phase": Phase.RUNNING,
                    "attempts": number,
                    "started_at": started_at,
                    "retry_at": None,
                }
            )
            attempts.append(
                {
                    "action_id": row.id,
                    "number": number,
                    "phase": Phase.RUNNING,
                    "started_at": now,
                    "timeout_s": state.job_timeout_s(task),
                    "reported": False,
                }
            )
            run_name = row.run_name
            self._event(tx, "action", run_name, row.name, Phase.RUNNING)
            if row.name == ROOT_ACTION:  # a run's phase is its root action's
                s.execute(
                    update(Run)
                    .where(Run.id == row.run_id)
                    .values(
                        phase=Phase.RUNNING,
                        started_at=started_at,
                        ended_at=row.ended_at,
                        error=row.error,
                    )
                )
                self._event(tx, "run", run_name, None, Phase.RUNNING)
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
        if error.kind == ErrorKind.TIMEOUT and attempt.timeout_s is not None:
            error = error.model_copy(
                update={
                    "message": f"attempt {number} of action {action.name!r} timed out "
                    f"after {attempt.timeout_s:g}s and was killed"
                }
            )
        if error.kind == ErrorKind.ABORTED:
            self._abort_one(tx, run, action, error)
            return
        self._close_sessions(tx, run, action, error.message, attempt=number)
        self._fail_attempt(tx, run, action, attempt, error)

    @staticmethod
    def _actions_named(s: Session, run_id: int, names: Iterable[str]) -> dict[str, Action]:
        found: dict[str, Action] = {}
        for chunk in _chunks(sorted(names)):
            for a in s.scalars(
                select(Action).where(Action.run_id == run_id, Action.name.in_(chunk))
            ):
                found[a.name] = a
        return found

    @staticmethod
    def record_handles(tx: _Tx, handles: Sequence[tuple[int, str]]) -> None:
        """Record the executor's handles of attempts, as ``(Launch.attempt_id, handle)``: what
        recovery adopts or kills them by after a crash."""
        if handles:
            _update_by_id(tx.s, _ATTEMPTS, [{"_id": i, "handle": h} for i, h in handles])
