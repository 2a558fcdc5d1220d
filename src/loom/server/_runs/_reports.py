"""What runtimes and the executor report about attempts: started, beating, finished, exited,
lost."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from ... import wire
from ...executors import job_id
from ...wire import ErrorKind, Phase
from .. import _state as state
from .._errors import (
    BadRequestError,
    NotFoundError,
    ServerError,
)
from .._models import (
    Action,
    Attempt,
    InteractiveSession,
    Run,
    utcnow,
)
from .._state import ROOT_ACTION, TERMINAL
from ._common import (
    _ATTEMPTS,
    ProcessExit,
    RunningAttempt,
    _AttemptRow,
    _chunks,
    _mib,
    _Tx,
    _update_by_id,
    action_info,
    encode_value,
    task_spec,
)
from ._transitions import Transitions

log = logging.getLogger("loom.server")


_OK = wire.ItemStatus()
#: Outputs up to this size go to the long-polls waiting for their action with the news that
#: it ended (bigger ones are read by the poll, or fetched by the client on their own).
_PUSHED_OUTPUTS_BYTES = 64 * 1024
_RUN_IDS = select(Run.name, Run.id).where(Run.name.in_(bindparam("names", expanding=True)))
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


#: The phases in which a ``Timeout.deadline`` ends an action (not INTERACTIVE: nothing times out
#: while a person debugs), and those in which it still waits to start (``max_queued_time``).
_DEADLINE_PHASES = (Phase.QUEUED, Phase.RETRYING, Phase.RUNNING)
_WAITING_PHASES = (Phase.QUEUED, Phase.RETRYING)


def _exit_error(exit: ProcessExit, task: wire.TaskSpec | None = None) -> wire.ErrorInfo:
    """How an attempt of ``task`` whose process ended without reporting failed."""
    if exit.reason == "timeout":
        return wire.ErrorInfo(
            type="MaxRuntimeExceededError",
            message=f"attempt {exit.attempt} of action {exit.action!r} exceeded its timeout and "
            "was killed",
            kind=ErrorKind.TIMEOUT,
        )
    if exit.reason == "cancelled":
        return wire.ErrorInfo(
            type="ActionAborted", message="the attempt was cancelled", kind=ErrorKind.ABORTED
        )
    if exit.reason == "oom":
        limit = None if task is None else task.resources.memory_bytes
        peak = f" (it held {_mib(exit.peak_bytes)})" if exit.peak_bytes else ""
        if task is not None and task.reuse is not None:  # a warm worker's, shared
            n = task.reuse.concurrency
            limit = None if limit is None else limit * n
            what = (
                f"the warm worker running attempt {exit.attempt} of action {exit.action!r} "
                f"(up to {n} attempts at once) used more memory than its limit, {n} x "
                f"the task's request: {_mib(limit)}{peak}, and was killed with every "
                "attempt it ran"
            )
        else:
            what = (
                f"attempt {exit.attempt} of action {exit.action!r} used more memory than "
                f"its limit, {_mib(limit)}{peak}, and was killed"
            )
        return wire.ErrorInfo(
            type="OOMError",
            message=f"{what}: ask for more with Resources(memory=...), or use less",
            kind=ErrorKind.OOM,
        )
    code = exit.returncode
    if code is None:  # adopted after a restart: not our child, so no exit status
        return wire.ErrorInfo(
            type="WorkerLostError",
            message="worker lost: its process ended without reporting its result",
            kind=ErrorKind.WORKER_LOST,
        )
    detail = f"worker lost: process exited with code {code}"
    if code is not None and code < 0:
        detail += f" (killed by signal {-code})"
    if code == 0:
        detail += " without reporting its result"
    return wire.ErrorInfo(type="WorkerLostError", message=detail, kind=ErrorKind.WORKER_LOST)


def _status(error: ServerError) -> wire.ItemStatus:
    return wire.ItemStatus(status=error.status_code, detail=str(error))


class Reports(Transitions):
    """What runtimes and the executor report about attempts: started, beating, finished, exited,"""

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
        values: list[bytes | None] = [None] * len(reports)
        for i, report in enumerate(reports):
            try:
                keys[i], values[i] = self._stored_result(report.result)
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
                    value = values[i]
                    if value is not None and len(value) <= _PUSHED_OUTPUTS_BYTES:
                        tx.fx.outputs[(row.run, row.action)] = value
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
        return self._stored_result(result)[0]

    def _stored_result(self, result: wire.AttemptResult) -> tuple[str | None, bytes | None]:
        """:meth:`_result_key`, and the stored outputs' JSON."""
        if (result.outputs is None) == (result.error is None):
            raise BadRequestError("an attempt result has exactly one of 'outputs' and 'error'")
        if result.outputs is None:
            return None, None
        value = encode_value(result.outputs.value, "outputs")
        return self._put_value(value), value

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

    def launch_failed(self, run_name: str, action_name: str, number: int, message: str) -> None:
        """The executor could not start the attempt: a system error, not retried."""
        error = wire.ErrorInfo(type="LaunchError", message=message, kind=ErrorKind.SYSTEM)
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
                error = _exit_error(exit, task_spec(action.spec))
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
                .where(Attempt.phase == Phase.RUNNING)
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
                            Attempt.phase == Phase.RUNNING,
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
        silent = Attempt.phase == Phase.RUNNING, heard < now - timedelta(seconds=timeout_s)
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
                        kind=ErrorKind.WORKER_LOST,
                    )
                    tx.fx.cancel.append(job_id(run.name, action.name, attempt.number))
                    self._end_attempt(tx, run, action, attempt, error, log_key=None)
                lost += 1
            except Exception:
                log.exception("cannot declare the silent attempt (row %d) lost", attempt_id)
        return lost

    def expire_time_bounds(self) -> int:
        """Fail every open action past a bound of its ``Timeout``: its ``deadline`` (whatever
        its phase, killing its running attempt, never retried) or its ``max_queued_time``
        (still waiting to start). An interactive attempt (a person debugging) is left alone,
        as by every timeout. Returns how many failed.

        Each is ended in a transaction of its own, re-checked there (it may have started or
        ended since it was found): one that cannot be must not keep the others going."""
        now = utcnow()
        with self._db.read() as s:
            ids = set(
                s.scalars(
                    select(Action.id).where(
                        Action.phase.in_(_DEADLINE_PHASES), Action.deadline_at <= now
                    )
                )
            )
            ids.update(
                s.scalars(
                    select(Action.id).where(
                        Action.phase.in_(_WAITING_PHASES), Action.queued_until <= now
                    )
                )
            )
        expired = 0
        for action_id in sorted(ids):
            try:
                with self._tx() as tx:
                    found = tx.s.execute(
                        select(Run, Action)
                        .join(Run, Run.id == Action.run_id)
                        .where(Action.id == action_id)
                    ).first()
                    if found is None:
                        continue
                    run, action = found
                    error = self._bound_passed(action, utcnow())
                    if error is None:
                        continue
                    self._time_out(tx, run, action, error)
                expired += 1
            except Exception:
                log.exception("cannot end the action (row %d) past its time bound", action_id)
        return expired

    @staticmethod
    def _bound_passed(action: Action, now: datetime) -> wire.ErrorInfo | None:
        task = task_spec(action.spec)
        if (
            action.phase in _DEADLINE_PHASES
            and action.deadline_at is not None
            and action.deadline_at <= now
            and task.deadline_s is not None
        ):
            return state.deadline_error(action.name, task.deadline_s, action.attempts)
        if (
            action.phase in _WAITING_PHASES
            and action.queued_until is not None
            and action.queued_until <= now
            and task.max_queued_s is not None
        ):
            return state.queued_timeout_error(action.name, task.max_queued_s)
        return None

    def _time_out(self, tx: _Tx, run: Run, action: Action, error: wire.ErrorInfo) -> None:
        """End ``action`` FAILED with ``error``, killing its running attempt: a time bound
        passed, which no retry can undo."""
        if action.attempts:
            attempt = self._attempt_row(tx.s, run, action, action.attempts)
            if attempt.phase not in TERMINAL:
                attempt.phase = Phase.FAILED
                attempt.ended_at = utcnow()
                attempt.error = error.model_dump(mode="json")
                tx.fx.ended.add((run.name, action.name, attempt.number))
                tx.fx.cancel.append(job_id(run.name, action.name, attempt.number))
        self._close_sessions(tx, run, action, error.message)
        self._set_phase(tx, run, action, Phase.FAILED, error=error)

    def lose_attempts(self, lost: Sequence[tuple[RunningAttempt, str | None]]) -> None:
        """The server restarted while these attempts ran, and their processes are gone: each
        is lost (and retried per policy), with its log's key; one transaction for all."""
        with self._tx() as tx:
            for attempt, log_key in lost:
                error = wire.ErrorInfo(
                    type="WorkerLostError",
                    message="worker lost: the server restarted while attempt "
                    f"{attempt.attempt} was running",
                    kind=ErrorKind.WORKER_LOST,
                )
                run, action = self._load(tx.s, attempt.run, attempt.action)
                row = self._attempt_row(tx.s, run, action, attempt.attempt)
                self._end_attempt(tx, run, action, row, error, log_key=log_key)
