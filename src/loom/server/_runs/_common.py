"""What the parts of the run service share: the rows and records they pass around, and the
statements they all use."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, select, update
from sqlalchemy.orm import Session

from ... import wire
from ...wire import Phase
from .._errors import (
    BadRequestError,
    ConflictError,
    PayloadTooLargeError,
    UnprocessableError,
)
from .._models import (
    Action,
    Attempt,
    Event,
    InteractiveSession,
    Run,
)
from .._state import TERMINAL

log = logging.getLogger("loom.server")
_IN_CHUNK = 500  # names per ``IN (...)`` list: well under every backend's parameter limit


@dataclass
class Effects:
    """What to do once a transaction has committed."""

    changed: set[tuple[str, str]] = field(default_factory=set)  # (run, action) phase changes
    cancel: list[str] = field(default_factory=list)  # executor job ids to kill
    schedule: bool = False  # something was queued: it may start now
    freed: bool = False  # room was freed: what waits for room may start now
    #: attempts that ended, as (run, action, number): their credentials are revoked
    ended: set[tuple[str, str, int]] = field(default_factory=set)
    #: what the transaction claimed itself (a ``_scheduler.Claimed``: see ``claim_queued``)
    claimed: Any = None
    #: the executor's handles of attempts that the transaction records, as
    #: ``(attempt id, handle)``: given back (``handles_back``) if it rolls back
    handles: list[tuple[int, str]] = field(default_factory=list)
    #: the outputs (their stored JSON) of (run, action)s that SUCCEEDED, where the
    #: transaction had them at hand: long-polls answer with them without a query
    outputs: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.changed or self.cancel or self.schedule or self.freed or self.claimed is not None
        )


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


def attempt_info(a: Attempt) -> wire.AttemptInfo:
    return wire.AttemptInfo(
        number=a.number,
        phase=Phase(a.phase),
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
        phase=Phase(a.phase),
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
        phase=Phase(r.phase),
        created_at=r.created_at,
        started_at=r.started_at,
        ended_at=r.ended_at,
        created_by=r.created_by,
        error=_error(r.error),
        actions=actions,
    )


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


def _mib(n: int | None) -> str:
    return "its memory request" if n is None else f"{n / (1 << 20):.0f} MiB"


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
