"""The scheduler: starts waiting actions, in creation order, as the executor has room for
their requests (see ``_requests``).

:class:`Claims` is the policy, what to start: one transaction moves the actions that fit to
RUNNING, each with a new attempt (through the run service's transition engine).
:class:`Scheduler` is the loop that claims and hands the claimed attempts to the executor.

The transaction that queues actions (a run's creation, a batch of children) claims what fits
itself, before it commits (:meth:`Claims.claim_in`): a child of a warm pool is then handed to
its worker as soon as it exists, without waiting for a pass of the loop, a wake-up and a
transaction of its own. The loop's passes start the rest: what waited for room, retries whose
backoff ended, actions queued by other transitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from anyio import to_thread
from sqlalchemy import Text, bindparam, exists, func, or_, select
from sqlalchemy import cast as cast_
from sqlalchemy.orm import aliased

from .. import wire
from ..executors import Capacity
from ..wire import Phase
from ._errors import NotFoundError
from ._models import Action, Project, Run, utcnow
from ._requests import Requests, Room, pool_size
from ._runs import Launch, RunService, Tx, task_spec
from ._state import TERMINAL

log = logging.getLogger("loom.server")

#: Look again at least this often, whatever happens (cheap insurance against a lost wake-up).
_MAX_SLEEP_S = 5.0
#: How long the executor's handles of a pass's launches wait for the next pass's transaction
#: before they get one of their own.
_HANDLES_WAIT_S = 0.5


_CLAIM_BATCH = 200  # queued actions looked at per query when claiming

_child = aliased(Action)
#: What running actions hold (see ``_requests``). A parent blocked on its children holds
#: nothing, or a deep tree would deadlock.
_BUSY = select(
    func.sum(Action.weight),
    func.sum(Action.cpu_request),
    func.sum(Action.memory_request),
    func.sum(Action.gpu_request),
).where(
    Action.phase == Phase.RUNNING,
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
        Action.pool,
        Action.attempts,
        Action.started_at,
        Action.ended_at,
        Action.error,
        Action.inputs_key,
        Action.custom_context,
        Run.name.label("run_name"),
        Run.env_vars,
        Run.bundle,
        Run.domain,
        Run.overwrite_cache,
        Run.created_at.label("run_created_at"),
        Project.name.label("project"),
    )
    .join(Run, Run.id == Action.run_id)
    .join(Project, Project.id == Run.project_id)
    .where(
        Action.id > bindparam("after"),
        or_(
            (Action.phase == Phase.QUEUED) & (Action.cache != "waiting"),
            (Action.phase == Phase.RETRYING) & (Action.retry_at <= bindparam("now")),
        ),
    )
    .order_by(Action.id)
    .limit(_CLAIM_BATCH)
)
#: The claimable actions but those of the warm pools ``:full``.
_CLAIMABLE_OUTSIDE = _CLAIMABLE.where(
    or_(Action.pool.is_(None), Action.pool.not_in(bindparam("full", expanding=True)))
)
#: How many attempts run in each warm pool.
_IN_POOLS = (
    select(Action.pool, func.count())
    .where(Action.phase == Phase.RUNNING, Action.pool.is_not(None))
    .group_by(Action.pool)
)
#: When the next backoff (after ``:now``) ends.
_NEXT_DUE = select(func.min(Action.retry_at)).where(
    Action.phase == Phase.RETRYING, Action.retry_at > bindparam("now")
)


@dataclass(frozen=True)
class Claimed:
    """The attempts a transaction started, as it commits (their specs are loaded after)."""

    launches: list[Launch]
    rows: list[Any]  # the claimed rows, by launch
    next_due: datetime | None
    backlog: bool


@dataclass(frozen=True)
class Pass:
    """What one scheduling pass did."""

    launches: list[Launch]  # the attempts it started, to hand to the executor
    next_due: datetime | None  # when the next backoff ends (to look again then)
    #: whether it left claimable actions waiting (for room, or for their warm pool): if not,
    #: room freed later starts nothing, and needs no pass until more work comes
    backlog: bool


class Claims:
    """Which waiting actions start now: those that fit in what the running ones leave of the
    executor's ``capacity``, in creation order (``read``: a stored value's bytes)."""

    def __init__(self, runs: RunService, capacity: Capacity, read: Callable[[str], bytes]) -> None:
        self._runs = runs
        self._capacity = capacity
        self._read = read
        self._handles: list[tuple[int, str]] = []
        self._handles_since = 0.0
        self._handles_lock = threading.Lock()

    def claim(self) -> Pass:
        """Start attempts for the waiting actions that fit in what the running ones leave of
        the executor's capacity, in creation order (see ``_requests``), in a transaction of
        their own (which also records the executor's handles waiting to be, see
        :meth:`add_handles`)."""
        with self._runs.transaction() as tx:
            self._record_handles(tx)
            claimed = self._claim(tx)
            # we are the scheduler: no need to wake ourselves
            tx.fx.schedule = tx.fx.freed = False
        return self.loaded(claimed)

    def claim_in(self, tx: Tx) -> None:
        """Claim in ``tx``, a transaction that queued actions: what fits starts when it
        commits (its effects carry the claim to the scheduler, see :meth:`Scheduler.adopt`)
        rather than after a pass of the scheduler's own. It records the executor's handles
        waiting to be, too: in a chain of calls, each child's transaction records the last
        one's."""
        self._record_handles(tx)
        tx.fx.claimed = self._claim(tx)
        tx.fx.schedule = False  # (a pass follows if it left some waiting: see adopt)

    # -- the executor's handles, recorded by the next transaction that claims -------------

    def add_handles(self, handles: Sequence[tuple[int, str]]) -> None:
        """Handles of attempts just started, as ``(Launch.attempt_id, handle)``: recorded (for
        crash recovery) by the next transaction that claims, which saves one per launch while
        work flows; :meth:`record_handles` takes them after :data:`_HANDLES_WAIT_S` if none
        comes (a crash before finds the attempts by their work dirs and workers' ledgers).
        Handles a transaction took come back here if it rolls back."""
        if handles:
            with self._handles_lock:
                if not self._handles:
                    self._handles_since = time.monotonic()
                self._handles.extend(handles)

    def handles_due(self) -> float | None:
        """When (``time.monotonic()``) the waiting handles should be recorded on their own."""
        with self._handles_lock:
            return self._handles_since + _HANDLES_WAIT_S if self._handles else None

    def _take_handles(self) -> list[tuple[int, str]]:
        with self._handles_lock:
            handles, self._handles = self._handles, []
            return handles

    def _record_handles(self, tx: Tx) -> None:
        tx.fx.handles = self._take_handles()  # (given back if ``tx`` rolls back)
        self._runs.record_handles(tx, tx.fx.handles)

    def record_handles(self) -> None:
        """Record the waiting handles in a transaction of their own."""
        if self.handles_due() is not None:
            with self._runs.transaction() as tx:
                self._record_handles(tx)

    def _claim(self, tx: Tx) -> Claimed:
        now = utcnow()
        launches: list[Launch] = []
        claimed: list[Any] = []  # the rows, by launch
        backlog = False  # whether claimable actions may have been left waiting
        s = tx.s
        # (statements built once: building and keying them costs more than running them)
        busy = s.execute(_BUSY).one()
        room = Room.left(self._capacity, Requests(*(float(v or 0) for v in busy)))
        backlog = room.full  # (full: whatever waits, it waits for room)
        in_pools = {p: n for p, n in s.execute(_IN_POOLS) if p is not None}
        full: list[str] = []  # pools that run all they can: their actions wait here
        after = 0
        while not room.full:
            # plain rows, not ORM objects: this is the hot path of every action
            params = {"now": now, "after": after}
            if full:
                rows = s.execute(_CLAIMABLE_OUTSIDE, {**params, "full": full}).all()
            else:
                rows = s.execute(_CLAIMABLE, params).all()
            taken = []
            for row in rows:
                if row.pool is not None:
                    if row.pool in full:
                        backlog = True
                        continue
                    if in_pools.get(row.pool, 0) >= pool_size(task_spec(row.spec)):
                        full.append(row.pool)  # (holds nothing of the machine's)
                        backlog = True
                        continue
                need = Requests.of_row(row)
                if room.fits(need):
                    taken.append(row)
                    if row.pool is not None:
                        in_pools[row.pool] = in_pools.get(row.pool, 0) + 1
                else:
                    backlog = True
                # one that does not fit keeps its place: what it needs is held for it
                room = room.minus(need)
                if room.full:
                    backlog = True  # (more may wait behind)
                    break
            launches.extend(self._runs.start_attempts(tx, taken, now))
            claimed.extend(taken)
            if len(rows) < _CLAIM_BATCH:
                break
            after = rows[-1].id
        next_due = s.scalar(_NEXT_DUE, {"now": now})
        return Claimed(launches, claimed, next_due, backlog)

    def loaded(self, claimed: Claimed) -> Pass:
        """The pass of a committed claim: every attempt gets its spec with the job (a warm
        worker in its message, a process in a file), read here rather than asked for by each
        runtime."""
        return Pass(
            self._with_specs(claimed.launches, claimed.rows), claimed.next_due, claimed.backlog
        )

    def _with_specs(self, launches: list[Launch], rows: list[Any]) -> list[Launch]:
        """``launches`` with their specs, from their claimed ``rows`` (and stored inputs)."""
        for i, row in enumerate(rows):
            launch = launches[i]
            try:
                inputs = json.loads(self._read(row.inputs_key))
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
                    custom_context=row.custom_context or {},
                    run_started_at=row.run_created_at,
                ),
            )
        return launches


class Scheduler:
    """One loop on the server's event loop; :meth:`wake` makes it look at the queue now, and
    :meth:`adopt` launches what a transaction that queued actions claimed itself.

    Room freed (an action ended) only matters to actions left waiting: when the last pass
    left none, and nothing was queued since, :meth:`wake` with ``freed`` alone is ignored.

    ``launch`` starts one claimed attempt and returns the executor's handle for it (``None``
    if it could not start); the handles are recorded by the next pass's transaction, or on
    their own after a while (see :meth:`Claims.add_handles`).
    """

    def __init__(self, claims: Claims, launch: Callable[[Launch], Awaitable[str | None]]) -> None:
        self.claims = claims
        self._launch = launch
        self._wake = asyncio.Event()
        self._handles_added = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._launching: set[asyncio.Task[None]] = set()
        self._backlog = True  # (unknown until the first pass)
        self._passing = False

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._handles_added = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="loom scheduler")

    def wake(self, *, freed: bool = False) -> None:
        """Look at the queue now: something was queued, or (``freed``, only) room was freed.
        Call on the event loop."""
        if freed and not self._backlog and not self._passing:
            return  # nothing waits for room (a pass under way might leave some: it looks)
        self._wake.set()

    def adopt(self, claimed: Pass) -> None:
        """Launch the attempts another transaction claimed (:meth:`Claims.claim_in`), on the
        event loop. If it left actions waiting, a pass follows: room freed before this was
        called was not waited for by anyone."""
        if claimed.backlog or claimed.next_due is not None:
            self._backlog = True
            self._wake.set()
        if claimed.launches and self._task is not None:
            self._spawn_launches(claimed.launches)

    def _spawn_launches(self, launches: Sequence[Launch]) -> None:
        if launches:
            task = asyncio.ensure_future(self._launch_all(launches))
            self._launching.add(task)
            task.add_done_callback(self._launching.discard)

    async def _launch_all(self, launches: Sequence[Launch]) -> None:
        handles = []
        for launch in launches:
            try:
                handle = await self._launch(launch)
            except Exception:  # (launch records its own failures) keep launching the others
                log.exception("cannot launch %s/%s", launch.run, launch.action)
                continue
            if handle is not None and launch.attempt_id:
                handles.append((launch.attempt_id, handle))
        self.claims.add_handles(handles)
        self._handles_added.set()

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._launching) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            try:
                self._passing = True
                try:
                    done = await to_thread.run_sync(self.claims.claim)
                finally:
                    self._passing = False
                next_due, self._backlog = done.next_due, done.backlog
                # launched beside the loop: one waiting for its image's environment to be
                # built must not hold up the next pass
                self._spawn_launches(done.launches)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep scheduling; the next pass may well succeed
                log.exception("scheduling pass failed")
                next_due = None
                self._backlog = True
                await asyncio.sleep(1.0)
            # what frees a slot or queues an action wakes us (also while a pass runs): a pass
            # that used every slot, or found nothing more, has nothing to follow up; handles
            # waiting to be recorded get a transaction of their own when no pass comes soon
            look_at = loop.time() + _sleep_s(next_due)
            while True:
                self._handles_added.clear()
                timeout = look_at - loop.time()
                due = self.claims.handles_due()
                if due is not None:
                    timeout = min(timeout, due - time.monotonic())
                wake = asyncio.ensure_future(self._wake.wait())
                added = asyncio.ensure_future(self._handles_added.wait())
                try:
                    await asyncio.wait(
                        {wake, added},
                        timeout=max(0.0, timeout),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    wake.cancel()
                    added.cancel()
                if self._wake.is_set():
                    break
                if self._handles_added.is_set():
                    continue  # (when they are due may be sooner now)
                due = self.claims.handles_due()
                if due is not None and due <= time.monotonic():
                    try:
                        await to_thread.run_sync(self.claims.record_handles)
                    except Exception:  # the next pass records them
                        log.exception("cannot record the executor's handles")
                        break
                if loop.time() >= look_at:
                    break


def _sleep_s(next_due: datetime | None) -> float:
    if next_due is None:
        return _MAX_SLEEP_S
    return max(0.0, min(_MAX_SLEEP_S, (next_due - utcnow()).total_seconds()))
