"""Interactive sessions: the IDEs that runtimes start for interactive actions (DESIGN §6).

The runtime of an interactive attempt starts code-server or Jupyter on a private Unix socket and
registers it here; the action goes RUNNING ─► INTERACTIVE. Then it long-polls
:meth:`SessionService.poll` (through :func:`wait_command`) for what to do: ``resume`` or
``fail`` when somebody asked, ``abort`` once the action has ended (aborted) or the session was
replaced, ``idle`` once nobody used the IDE for ``max_idle_seconds``. A person's request
(:func:`resume`) is recorded on the session row and waits for the runtime's
:class:`~loom.wire.ResumeOutcome`; a resume moves the action INTERACTIVE ─► RUNNING while it
runs, and back if the resumed code failed (the session stays open for another try). The runtime
reports the attempt's result as usual and then that the session ended.

Activity (every request and WebSocket frame the proxy forwards) is kept in memory and written
to the session's row at most every :data:`ACTIVITY_FLUSH_S` seconds, so an IDE's chatter does
not become a stream of database writes. It is keyed by session id: a session that replaces
another (a restarted attempt) starts its own clock, and nothing the old one saw counts for it.

Phases stay the run service's to change (DESIGN §4, rule 2): this module asks it to, within its
own transactions. The IDE's token is read by :meth:`SessionService.route` for the proxy and by
nothing else; it is never returned, logged or put in a message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from anyio import to_thread
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .. import wire
from ..wire import ErrorKind, Phase
from ._db import Database
from ._errors import BadRequestError, ConflictError, NotFoundError, ServerError
from ._events import EventBus
from ._models import Action, Attempt, InteractiveSession, Run, utcnow
from ._runs import RunService, session_info
from ._state import TERMINAL

log = logging.getLogger("loom.server")

#: Seconds between writes of recorded activity to the database.
ACTIVITY_FLUSH_S = 3.0
#: The longest a command long-poll waits before answering ``none``.
MAX_COMMAND_WAIT_S = 30.0
#: The longest a resume request waits for the runtime's outcome.
MAX_RESUME_WAIT_S = 600.0
_ROUTE_TTL_S = 1.0
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ResumeTimeoutError(ServerError):
    """The runtime did not answer a resume request in time; it may still be working on it."""

    status_code = 504


@dataclass(frozen=True, slots=True)
class Route:
    """Where the proxy sends a session's traffic. ``token`` is the IDE's secret: keep it out of
    logs, messages and responses."""

    id: str
    run: str
    action: str
    kind: str
    socket: str
    token: str | None

    def __repr__(self) -> str:  # the token must not reach a log through a repr
        return f"Route(id={self.id!r}, kind={self.kind!r}, socket={self.socket!r})"


@dataclass(frozen=True, slots=True)
class Request:
    """A person's pending resume or fail request: the session and the request's number."""

    session: str
    id: int
    fail: bool


class SessionService:
    """Registration, commands, resume requests, outcomes and activity of sessions."""

    def __init__(
        self, db: Database, runs: RunService, socket_dir: Callable[[str, str, int], Path]
    ) -> None:
        """``socket_dir``: the directory the server made for an attempt's IDE socket."""
        self._db = db
        self._runs = runs
        self.socket_dir = socket_dir
        self._lock = threading.Lock()
        # activity not yet written to the rows; an entry goes once it has been written
        self._activity: dict[str, datetime] = {}
        self._routes: dict[str, tuple[float, Route | None, str]] = {}
        runs.activity = self.activity

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _latest(s: Session, action: Action) -> InteractiveSession | None:
        return s.scalar(
            select(InteractiveSession)
            .where(InteractiveSession.action_id == action.id)
            .order_by(InteractiveSession.started_at.desc())
            .limit(1)
        )

    def _info(self, row: InteractiveSession, run: Run, action: Action) -> wire.SessionInfo:
        return session_info(
            row, run.name, action.name, self.activity(row.id), self._runs.session_origin(row.id)
        )

    @staticmethod
    def _missing(run: str, action: str) -> NotFoundError:
        return NotFoundError(f"action {action!r} of run {run!r} has no interactive session")

    def _last_activity(self, row: InteractiveSession) -> datetime:
        mem = self.activity(row.id)
        return row.last_activity_at if mem is None or mem < row.last_activity_at else mem

    def _end(self, row: InteractiveSession, reason: str) -> None:
        row.state = "ended"
        row.ended_at = utcnow()
        row.end_reason = reason
        row.command = None
        self._forget(row.id)

    def _forget(self, session_id: str) -> None:
        with self._lock:
            self._activity.pop(session_id, None)
            self._routes.pop(session_id, None)

    # -- the runtime's side ---------------------------------------------------------------

    def register(
        self, run_name: str, action_name: str, spec: wire.SessionRegister
    ) -> wire.SessionInfo:
        """Record the IDE attempt ``spec.attempt`` started; the action goes INTERACTIVE.

        The attempt must be the action's current one and still going (409 otherwise). A new
        registration replaces the action's open session, if any (an IDE restarted, or a
        restarted attempt); the old one ends and nothing it recorded counts for the new one.
        The runtime may choose the id (``spec.id``: Jupyter needs its URL before it starts);
        repeating a registration with that id is a no-op, reusing another's is a 409.
        """
        if not spec.socket.startswith("/"):
            raise BadRequestError(f"socket must be an absolute path, got {spec.socket!r}")
        allowed = self.socket_dir(run_name, action_name, spec.attempt)
        if os.path.dirname(os.path.normpath(spec.socket)) != str(allowed):
            # the proxy connects only where the server said this attempt's IDE may listen
            raise BadRequestError(
                f"socket must be in the directory the server made for this attempt "
                f"({allowed}, LOOM_SESSION_DIR in the action's environment), not "
                f"{spec.socket!r}"
            )
        if spec.max_idle_seconds is not None and spec.max_idle_seconds <= 0:
            raise BadRequestError(
                "max_idle_seconds must be positive, or null for a session that never idles out"
            )
        replaced: list[str] = []
        with self._runs.transaction() as tx:
            run, action = self._runs.load(tx.s, run_name, action_name)
            if action.spec.get("interactive") is None:
                raise ConflictError(
                    f"action {action_name!r} of run {run_name!r} is not interactive (its task "
                    "has no InteractiveSpec); only interactive actions have sessions"
                )
            self._runs.current_attempt(tx.s, run, action, spec.attempt)
            if action.phase not in (Phase.RUNNING, Phase.INTERACTIVE):
                raise ConflictError(
                    f"action {action_name!r} of run {run_name!r} is {action.phase}; a session "
                    "opens only while its attempt runs"
                )
            session_id = spec.id or secrets.token_urlsafe(18)
            if spec.id is not None:
                taken = tx.s.get(InteractiveSession, spec.id)
                if taken is not None:
                    if (
                        taken.action_id == action.id
                        and taken.attempt == spec.attempt
                        and taken.ended_at is None
                    ):
                        return self._info(taken, run, action)  # a retried registration
                    raise ConflictError(
                        f"session id {spec.id!r} is taken; register with another random id"
                    )
            for old in tx.s.scalars(
                select(InteractiveSession).where(
                    InteractiveSession.action_id == action.id,
                    InteractiveSession.ended_at.is_(None),
                )
            ):
                self._end(old, f"replaced by session {session_id} of attempt {spec.attempt}")
                replaced.append(old.id)
            now = utcnow()
            row = InteractiveSession(
                id=session_id,
                action_id=action.id,
                attempt=spec.attempt,
                kind=spec.kind,
                state="ready",
                socket=spec.socket,
                token=spec.token,
                workspace=spec.workspace,
                max_idle_seconds=spec.max_idle_seconds,
                command=None,
                command_id=0,
                outcome=None,
                started_at=now,
                last_activity_at=now,
            )
            tx.s.add(row)
            self._runs.set_interactive(tx, run, action, True)
            tx.fx.changed.add((run.name, action.name))
            return self._info(row, run, action)

    def poll(
        self, run_name: str, action_name: str
    ) -> tuple[wire.SessionCommand | None, float | None]:
        """What the runtime should do now, or ``None`` and the seconds until the session would
        be idle (``None``: no idle limit, or not waiting for a person)."""
        with self._db.read() as s:
            _, action = self._runs.load(s, run_name, action_name)
            row = self._latest(s, action)
            if row is None:
                raise self._missing(run_name, action_name)
            if action.phase in TERMINAL or row.ended_at is not None:
                # over (aborted...) or replaced: whoever still waits here must stop its IDE
                return wire.SessionCommand(command="abort"), None
            if row.command is not None:
                return wire.SessionCommand(command=row.command, id=row.command_id), None  # type: ignore[arg-type]
            if row.max_idle_seconds is None or action.phase != Phase.INTERACTIVE:
                return None, None
            deadline = self._last_activity(row) + timedelta(seconds=row.max_idle_seconds)
            remaining = (deadline - utcnow()).total_seconds()
            if remaining <= 0:
                return wire.SessionCommand(command="idle"), None
            return None, remaining

    def record_outcome(self, run_name: str, action_name: str, outcome: wire.ResumeOutcome) -> None:
        """The runtime's answer to request ``outcome.id``. A failed resume puts the action back
        to INTERACTIVE (the session stays for another try). A repeat, or an outcome nobody
        asked for (a resume started from inside the IDE), changes nothing."""
        with self._runs.transaction() as tx:
            run, action = self._runs.load(tx.s, run_name, action_name)
            row = self._latest(tx.s, action)
            if row is None:
                raise self._missing(run_name, action_name)
            if row.command is None or outcome.id != row.command_id:
                return
            command, row.command = row.command, None
            row.outcome = outcome.model_dump(mode="json")
            row.last_activity_at = utcnow()  # the idle clock restarts after a try
            if command == "resume" and not outcome.ok:
                row.state = "ready"
                if action.phase == Phase.RUNNING:
                    self._runs.set_interactive(tx, run, action, True)
            tx.fx.changed.add((run.name, action.name))

    def ended(self, run_name: str, action_name: str, body: wire.SessionEnded) -> wire.SessionInfo:
        """The runtime stopped the IDE. Idempotent: a session the server already ended (an
        abort, its process gone) keeps the reason it has."""
        with self._runs.transaction() as tx:
            run, action = self._runs.load(tx.s, run_name, action_name)
            row = self._latest(tx.s, action)
            if row is None:
                raise self._missing(run_name, action_name)
            if row.ended_at is None:
                self._end(row, body.reason)
                tx.fx.changed.add((run.name, action.name))
            return self._info(row, run, action)

    # -- people's side --------------------------------------------------------------------

    def get(self, run_name: str, action_name: str) -> wire.SessionInfo:
        """The action's latest session; 404 if it never had one."""
        with self._db.read() as s:
            run, action = self._runs.load(s, run_name, action_name)
            row = self._latest(s, action)
            if row is None:
                raise self._missing(run_name, action_name)
            return self._info(row, run, action)

    def request(self, run_name: str, action_name: str, fail: bool) -> Request:
        """Ask the runtime to resume (or, with ``fail``, to give up). The action must be
        INTERACTIVE (409 otherwise); a resume moves it to RUNNING while it runs. Asking again
        while the same request is pending joins it."""
        wanted = "fail" if fail else "resume"
        with self._runs.transaction() as tx:
            run, action = self._runs.load(tx.s, run_name, action_name)
            row = self._latest(tx.s, action)
            if row is not None and row.ended_at is None and row.command == wanted:
                return Request(row.id, row.command_id, fail)
            if action.phase != Phase.INTERACTIVE:
                raise ConflictError(
                    f"action {action_name!r} of run {run_name!r} is {action.phase}, not "
                    "INTERACTIVE: there is no session waiting to be resumed"
                )
            if row is None or row.ended_at is not None:
                reason = "" if row is None else f" ({row.end_reason})"
                raise ConflictError(
                    f"the session of action {action_name!r} of run {run_name!r} has ended{reason}"
                )
            if row.command is not None:
                raise ConflictError(
                    f"a {row.command} request is pending for action {action_name!r} of run "
                    f"{run_name!r}; wait for its outcome"
                )
            row.command_id += 1
            row.command = wanted
            row.outcome = None
            row.last_activity_at = utcnow()
            if not fail:
                row.state = "resuming"
                self._runs.set_interactive(tx, run, action, False)
            tx.fx.changed.add((run.name, action.name))
            return Request(row.id, row.command_id, fail)

    def outcome_of(
        self, run_name: str, action_name: str, req: Request
    ) -> wire.ResumeOutcome | None:
        """The answer to ``req``: the runtime's, or one made up from how the attempt ended if
        it ended without answering; ``None`` while it is pending."""
        with self._db.read() as s:
            _, action = self._runs.load(s, run_name, action_name)
            row = s.get(InteractiveSession, req.session)
            if row is None:
                raise self._missing(run_name, action_name)
            if row.outcome is not None and row.outcome.get("id") == req.id:
                return wire.ResumeOutcome.model_validate(row.outcome)
            attempt = s.scalar(
                select(Attempt).where(Attempt.action_id == action.id, Attempt.number == row.attempt)
            )
            attempt_over = attempt is None or attempt.phase in TERMINAL
            if not (attempt_over or row.ended_at is not None or action.phase in TERMINAL):
                return None
            wanted = Phase.FAILED if req.fail else Phase.SUCCEEDED
            if action.phase == wanted or (req.fail and action.phase == Phase.ABORTED):
                return wire.ResumeOutcome(id=req.id, ok=True)
            error = _error(action.error) or (_error(attempt.error) if attempt else None)
            if error is None:
                error = wire.ErrorInfo(
                    type="SessionEnded",
                    message="the session ended before its runtime answered"
                    + (f": {row.end_reason}" if row.end_reason else ""),
                    kind=ErrorKind.SYSTEM,
                )
            return wire.ResumeOutcome(id=req.id, ok=False, error=error)

    # -- the proxy's side -----------------------------------------------------------------

    def route(self, session_id: str) -> Route:
        """Where to send session ``session_id``'s traffic; 404 if it is unknown or ended.
        Looked up at most once a second per session (the proxy asks on every request)."""
        now = time.monotonic()
        with self._lock:
            cached = self._routes.get(session_id)
        if cached is None or cached[0] <= now:
            cached = (now + _ROUTE_TTL_S, *self._lookup_route(session_id))
            with self._lock:
                self._routes[session_id] = cached
                if len(self._routes) > 4096:  # unknown ids must not grow it without bound
                    self._routes = {k: v for k, v in self._routes.items() if v[0] > now}
        route, problem = cached[1], cached[2]
        if route is None:
            raise NotFoundError(problem)
        return route

    def _lookup_route(self, session_id: str) -> tuple[Route | None, str]:
        if not _ID_PATTERN.match(session_id):
            return None, "no such session: session ids are letters, digits, '-' and '_'"
        with self._db.read() as s:
            found = s.execute(
                select(InteractiveSession, Action.name, Run.name)
                .join(Action, Action.id == InteractiveSession.action_id)
                .join(Run, Run.id == Action.run_id)
                .where(InteractiveSession.id == session_id)
            ).first()
            if found is None:
                return None, f"session {session_id!r} not found"
            row, action, run = found
            if row.ended_at is not None:
                return None, (
                    f"session {session_id!r} (action {action!r} of run {run!r}) has ended: "
                    f"{row.end_reason or 'no reason recorded'}"
                )
            return Route(row.id, run, action, row.kind, row.socket, row.token), ""

    def touch(self, session_id: str) -> None:
        """Record activity in ``session_id`` now (cheap: memory only; see :meth:`flush`)."""
        now = utcnow()
        with self._lock:
            self._activity[session_id] = now

    def activity(self, session_id: str) -> datetime | None:
        """Activity in ``session_id`` not yet written to its row, if any."""
        with self._lock:
            return self._activity.get(session_id)

    def flush(self) -> int:
        """Write recorded activity to the rows of open sessions; returns how many."""
        with self._lock:
            pending = dict(self._activity)
        if not pending:
            return 0
        with self._db.write() as s:
            for session_id, at in pending.items():
                s.execute(
                    update(InteractiveSession)
                    .where(
                        InteractiveSession.id == session_id,
                        InteractiveSession.ended_at.is_(None),
                        InteractiveSession.last_activity_at < at,
                    )
                    .values(last_activity_at=at)
                )
        with self._lock:  # written: forget what was not touched again meanwhile
            for session_id, at in pending.items():
                if self._activity.get(session_id) == at:
                    del self._activity[session_id]
        return len(pending)


def _error(data: dict[str, Any] | None) -> wire.ErrorInfo | None:
    return None if data is None else wire.ErrorInfo.model_validate(data)


# -- long-polls (on the event loop) -------------------------------------------------------


async def _changed_or_stopping(
    bus: EventBus, changed: asyncio.Future[bytes | None], timeout: float
) -> None:
    stopping: asyncio.Future[bool] = asyncio.ensure_future(bus.stopping.wait())
    waiters: set[asyncio.Future[Any]] = {changed, stopping}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()


async def wait_command(
    sessions: SessionService, bus: EventBus, run: str, action: str, timeout: float
) -> wire.SessionCommand:
    """The runtime's long-poll: a command as soon as there is one, else ``none`` after
    ``timeout`` seconds (at most :data:`MAX_COMMAND_WAIT_S`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(max(timeout, 0.0), MAX_COMMAND_WAIT_S)
    while True:
        changed = bus.watch(run, action)  # before reading, so no change slips between
        try:
            command, idle_in = await to_thread.run_sync(sessions.poll, run, action)
            if command is not None:
                return command
            remaining = deadline - loop.time()
            if remaining <= 0 or bus.stopping.is_set():
                return wire.SessionCommand(command="none")
            if idle_in is not None:  # look again when it would be idle (activity may move it)
                remaining = min(remaining, idle_in + 0.01)
            await _changed_or_stopping(bus, changed, remaining)
        finally:
            bus.unwatch(run, action, changed)


async def resume(
    sessions: SessionService,
    bus: EventBus,
    run: str,
    action: str,
    body: wire.SessionResume,
    timeout: float = MAX_RESUME_WAIT_S,
) -> wire.ResumeOutcome:
    """Ask the runtime to resume (or give up) and wait for its outcome. Ends when the runtime
    answers or the attempt ends (whatever killed it); 504 after ``timeout`` seconds."""
    req = await to_thread.run_sync(sessions.request, run, action, body.fail)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        changed = bus.watch(run, action)
        try:
            outcome = await to_thread.run_sync(sessions.outcome_of, run, action, req)
            if outcome is not None:
                return outcome
            remaining = deadline - loop.time()
            if remaining <= 0 or bus.stopping.is_set():
                what = "give up" if body.fail else "resume"
                raise ResumeTimeoutError(
                    f"the runtime of action {action!r} of run {run!r} has not answered the "
                    f"request to {what} within {timeout:g} s; it may still be working on it: "
                    "watch the action's phase"
                )
            # the attempt's end is a phase change too, so a dead runtime wakes this up
            await _changed_or_stopping(bus, changed, remaining)
        finally:
            bus.unwatch(run, action, changed)


async def flush_activity_forever(sessions: SessionService) -> None:
    """Write recorded activity every :data:`ACTIVITY_FLUSH_S` seconds (a plane task)."""
    while True:
        await asyncio.sleep(ACTIVITY_FLUSH_S)
        try:
            await to_thread.run_sync(sessions.flush)
        except Exception:  # a database hiccup: the next round writes it
            log.exception("cannot write session activity")
