"""Where a resource belongs: the project (and domain) that authorisation decides by.

A run's project, domain and bundle never change, so they are cached by run name. An attempt is
live from its start until it ends, and only the run service's transitions end it: they tell
:meth:`ScopeService.attempts_ended` once that has committed, so a live attempt is cached too,
and every request of a runtime does not cost a query.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select

from ._db import Database
from ._errors import NotFoundError
from ._keys import AttemptScope
from ._models import Action, Attempt, Project, Run
from ._state import TERMINAL

_CACHED_RUNS = 10_000
_CACHED_ATTEMPTS = 10_000

#: (run, action, attempt number)
AttemptKey = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class RunScope:
    name: str
    project: str
    domain: str
    bundle: str


class ScopeService:
    """Looks up the project of runs and attempts."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._runs: OrderedDict[str, RunScope] = OrderedDict()
        self._live: OrderedDict[AttemptKey, AttemptScope] = OrderedDict()
        # bumped as attempts end: a lookup that read the database before an end committed
        # must not cache what it read after the end was forgotten
        self._ends = 0
        self._lock = threading.Lock()

    def run(self, name: str) -> RunScope:
        """The scope of run ``name``; :class:`NotFoundError` if there is no such run."""
        with self._lock:
            found = self._runs.get(name)
        if found is not None:
            return found
        with self._db.read() as s:
            row = s.execute(
                select(Project.name, Run.domain, Run.bundle)
                .join(Project, Project.id == Run.project_id)
                .where(Run.name == name)
            ).first()
        if row is None:
            raise NotFoundError(f"run {name!r} not found")
        scope = RunScope(name, row[0], row[1], row[2])
        with self._lock:
            self._runs[name] = scope
            if len(self._runs) > _CACHED_RUNS:
                self._runs.popitem(last=False)
        return scope

    def live_attempt(self, run: str, action: str, number: int) -> AttemptScope | None:
        """Attempt ``number`` of the action, if it is the action's current attempt and has not
        ended; ``None`` otherwise (a runtime credential is valid exactly that long)."""
        key = (run, action, number)
        with self._lock:
            cached = self._live.get(key)
            ends = self._ends
        if cached is not None:
            return cached
        with self._db.read() as s:
            row = s.execute(
                select(Attempt.phase, Action.attempts, Project.name, Run.domain, Run.bundle)
                .join(Action, Action.id == Attempt.action_id)
                .join(Run, Run.id == Action.run_id)
                .join(Project, Project.id == Run.project_id)
                .where(Run.name == run, Action.name == action, Attempt.number == number)
            ).first()
        if row is None or row[0] in TERMINAL or row[1] != number:
            return None
        scope = AttemptScope(run, action, number, row[2], row[3], row[4])
        with self._lock:
            if self._ends == ends:  # (else it may have ended since it was read)
                self._live[key] = scope
                if len(self._live) > _CACHED_ATTEMPTS:
                    self._live.popitem(last=False)
        return scope

    def attempts_ended(self, attempts: Iterable[AttemptKey]) -> None:
        """These attempts ended (committed): their credentials are no longer valid."""
        with self._lock:
            self._ends += 1
            for key in attempts:
                self._live.pop(key, None)

    def bundle_used_in(self, digest: str, projects: frozenset[str]) -> bool:
        """Whether a run of one of ``projects`` uses the code bundle ``digest`` (who may see
        such a run may read its code)."""
        if not projects:
            return False
        with self._db.read() as s:
            found = s.scalar(
                select(Run.id)
                .join(Project, Project.id == Run.project_id)
                .where(Run.bundle == digest, Project.name.in_(projects))
                .limit(1)
            )
        return found is not None
