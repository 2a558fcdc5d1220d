"""What clients read about runs, actions and attempts (nothing here writes)."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from ... import wire
from ...wire import Phase
from .._errors import (
    ConflictError,
    NotFoundError,
)
from .._models import (
    Action,
    Attempt,
    Event,
    InteractiveSession,
    Project,
    Run,
)
from .._state import TERMINAL
from .._values import read_value
from ._common import (
    LogSource,
    _chunks,
    _error,
    action_info,
    log_key,
    run_info,
    session_info,
    task_spec,
)
from ._transitions import Transitions

log = logging.getLogger("loom.server")


_RUN_ID = select(Run.id).where(Run.name == bindparam("name"))
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


class Queries(Transitions):
    """What clients read about runs, actions and attempts (nothing here writes)."""

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
                    phase=Phase(t.phase),
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
                phase=Phase(a.phase),
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
                "custom_context": action.custom_context or {},
                "run_started_at": run.created_at,
            }
        result["inputs"] = json.loads(read_value(self._store, inputs_key))
        return wire.ActionSpec.model_validate(result)

    def secret_scope(self, run_name: str, action_name: str) -> tuple[list[str], str, str]:
        """The secret keys the action's task declares and its run's project and domain; 409
        unless the action is running (nothing else needs its secrets)."""
        with self._db.read() as s:
            run, action = self._load(s, run_name, action_name)
            if action.phase not in (Phase.RUNNING, Phase.INTERACTIVE):
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
            if action.phase != Phase.SUCCEEDED or action.outputs_key is None:
                raise ConflictError(
                    f"action {action_name!r} of run {run_name!r} is {action.phase}; it has "
                    "outputs once it SUCCEEDED"
                )
            key = action.outputs_key
        return b'{"value":' + read_value(self._store, key) + b"}"

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
            if phase == Phase.SUCCEEDED and key is not None and budget > 0:
                try:
                    value = read_value(self._store, key)
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

    def log_source(self, run_name: str, action_name: str, number: int | None) -> LogSource:
        with self._db.read() as s:
            run, action = self._load(s, run_name, action_name)
            if number is None:
                number = action.attempts
            if number == 0:
                return LogSource(0, action.phase in TERMINAL, None)
            attempt = self._attempt_row(s, run, action, number)
        ended = attempt.phase in TERMINAL
        key = attempt.log_key
        if ended and key is None and self._store.exists(log_key(run_name, action_name, number)):
            # its process exited after it reported: the log went to its key unrecorded
            key = log_key(run_name, action_name, number)
        return LogSource(number, ended, key)

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
                    seq=e.seq,
                    kind=e.kind,
                    run=e.run,
                    action=e.action,
                    phase=Phase(e.phase),
                    at=e.at,
                )
                for e in s.execute(query.order_by(Event.seq).limit(limit))
            ]

    def last_event_seq(self) -> int:
        with self._db.read() as s:
            return s.scalar(select(func.max(Event.seq))) or 0
