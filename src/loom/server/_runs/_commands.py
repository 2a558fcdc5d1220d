"""What clients ask of runs: create runs and actions, abort them."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from ... import wire
from ...wire import ErrorKind, Phase
from .. import _state as state
from .._errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    ServerError,
)
from .._models import (
    Action,
    Attempt,
    Bundle,
    CacheEntry,
    Project,
    Run,
    utcnow,
)
from .._requests import Requests, pool_of
from .._state import ROOT_ACTION, TERMINAL
from ._common import (
    _ACTIONS,
    _chunks,
    _digest,
    _first,
    _serialized,
    _Tx,
    action_info,
    encode_value,
    normalize_digest,
    run_info,
)
from ._queries import Queries

log = logging.getLogger("loom.server")
_INSERT_ACTIONS = insert(_ACTIONS)


class Commands(Queries):
    """What clients ask of runs (answered with what they read: see ``Queries``)."""

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
                phase=Phase.QUEUED,
                bundle=digest,
                env_vars=dict(spec.env_vars),
                overwrite_cache=spec.overwrite_cache,
                created_by=created_by,
                created_at=utcnow(),
            )
            tx.s.add(run)
            tx.s.flush()
            self._event(tx, "run", run.name, None, Phase.QUEUED)
            self._insert_action(tx, run, root, inputs_key)
            if tx.fx.schedule:
                self.claim_queued(tx)
            return run_info(run, project.name, 1)

    @staticmethod
    def _new_run_name(s: Session) -> str:
        """A readable name, as the CLI gives its runs."""
        while True:
            name = wire.new_run_name()
            if s.scalar(select(Run.id).where(Run.name == name)) is None:
                return name

    def abort_run(self, name: str, by: str) -> wire.RunInfo:
        """Abort every action of the run that has not ended; a no-op on an ended run."""
        with self._tx() as tx:
            run = self._run_row(tx.s, name)
            if run.phase not in TERMINAL:
                error = wire.ErrorInfo(
                    type="RunAborted",
                    message=f"run {name!r} aborted by {by!r}",
                    kind=ErrorKind.ABORTED,
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
                    kind=ErrorKind.ABORTED,
                )
                self._abort_one(tx, run, action, error)
                self._abort_descendants(tx, run, action)
        return self.get_action(run_name, action_name)

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
            if tx.fx.schedule:
                self.claim_queued(tx)
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
        if task.cache is not None or state.submission_error(task, self.capacity):
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
                    "phase": Phase.QUEUED,
                    "attempts": 0,
                    "cache": "disabled",
                    **Requests.of(task, self.defaults).columns(),
                    "pool": pool_of(task, run.project_id, run.domain, run.bundle, run.env_vars),
                    "custom_context": spec.custom_context or None,
                    "created_at": now,
                    **_time_bounds(task, now),
                }
            )
            self._event(tx, "action", run.name, spec.name, Phase.QUEUED)
            tx.fx.schedule = True
            info = wire.ActionInfo(
                run=run.name,
                name=spec.name,
                parent=spec.parent,
                group=list(spec.group),
                task=task.name,
                phase=Phase.QUEUED,
                created_at=now,
            )
        created[spec.name] = info  # a repeat later in the batch gets this one
        return info

    def _insert_action(self, tx: _Tx, run: Run, spec: wire.ActionCreate, inputs_key: str) -> Action:
        task = spec.task
        now = utcnow()
        action = Action(
            run_id=run.id,
            name=spec.name,
            parent=spec.parent,
            group=list(spec.group),
            task=task.name,
            spec=task.model_dump(mode="json"),
            inputs_key=inputs_key,
            phase=Phase.QUEUED,
            attempts=0,
            cache="disabled" if task.cache is None else "miss",
            **Requests.of(task, self.defaults).columns(),
            pool=pool_of(task, run.project_id, run.domain, run.bundle, run.env_vars),
            custom_context=spec.custom_context or None,
            created_at=now,
            **_time_bounds(task, now),
        )
        tx.s.add(action)
        self._event(tx, "action", run.name, action.name, Phase.QUEUED)
        refused = state.submission_error(task, self.capacity)
        if refused is not None:
            self._set_phase(tx, run, action, Phase.FAILED, error=refused)
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
                self._set_phase(tx, run, action, Phase.SUCCEEDED)
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


def _time_bounds(task: wire.TaskSpec, now: datetime) -> dict[str, datetime | None]:
    deadline_at, queued_until = state.time_bounds(task, now)
    return {"deadline_at": deadline_at, "queued_until": queued_until}
