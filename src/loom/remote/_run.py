"""Runs on the server, as Flyte 2's ``flyte.remote.Run`` shows them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal

from .. import wire
from .._settings import Settings
from ..errors import NotFoundError
from ._action import Action, ActionDetails
from ._common import TimeFilter, client_for, current_settings, dump_json, phases, run_url
from ._outputs import ActionInputs
from ._syncify import syncclassmethod, synciter, synciterclassmethod, syncmethod

ROOT = "a0"  # the root action's name (loom.wire's runs always have it)
_PAGE = 500  # the most runs one page of the server's listing holds


class Run:
    """A run on the server: its name, phase and URL; its root task's inputs, outputs and
    logs; its actions (:meth:`Action.listall`).

    Methods block; each has an ``.aio`` form to await (``await run.wait.aio()``).
    ``loom.run`` in remote mode returns one of these too.
    """

    def __init__(self, info: wire.RunInfo, settings: Settings | None = None) -> None:
        self.info = info
        self._settings = settings or current_settings()
        self._details: RunDetails | None = None

    # -- finding runs --------------------------------------------------------------------

    @synciterclassmethod
    async def listall(
        cls: type[Run],
        in_phase: Iterable[str | wire.Phase] | None = None,
        task_name: str | None = None,
        created_by_subject: str | None = None,
        sort_by: tuple[str, Literal["asc", "desc"]] | None = None,
        limit: int = 100,
        project: str | None = None,
        domain: str | None = None,
        created_at: TimeFilter | None = None,
        updated_at: TimeFilter | None = None,
    ) -> AsyncIterator[Run]:
        """Up to ``limit`` runs of the project and domain (default: the configured ones),
        newest first, filtered by phase (names in any case: ``("running",)``), root task
        name, who started them (the API key's name) and creation or last-change time.

        ``sort_by`` may only be ``("created_at", "desc")``, the server's order."""
        if sort_by is not None and tuple(sort_by) != ("created_at", "desc"):
            raise ValueError(f"runs are listed newest first; cannot sort by {sort_by!r}")
        wanted = phases(in_phase)
        settings = current_settings()
        filters: dict[str, Any] = {
            "project": project or settings.project,
            "domain": domain or settings.domain,
            "task": task_name,
            # one phase the server filters by; several, this side
            "phase": next(iter(wanted)) if wanted is not None and len(wanted) == 1 else None,
        }
        found = 0
        offset = 0
        async with client_for(settings) as client:
            while found < limit:
                page = await client.run_page(offset=offset, limit=_PAGE, **filters)
                for info in page.runs:
                    if _admits(info, wanted, created_by_subject, created_at, updated_at):
                        yield cls(info, settings)
                        found += 1
                        if found >= limit:
                            return
                offset += len(page.runs)
                if not page.runs or offset >= page.total:
                    return

    @syncclassmethod
    async def get(cls: type[Run], name: str) -> Run:
        """Run ``name``; :class:`~loom.errors.NotFoundError` if there is none the caller may
        see."""
        settings = current_settings()
        async with client_for(settings) as client:
            return cls(await client.get_run(name), settings)

    # -- what it is ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def phase(self) -> wire.Phase:
        """The phase when last read (``wait`` and ``sync`` read it again)."""
        return self.info.phase

    @property
    def mode(self) -> str:
        return "remote"

    @property
    def url(self) -> str:
        """Where the server's UI shows the run."""
        return run_url(self._settings, self.name)

    @property
    def action(self) -> Action:
        """The run's root action (``a0``)."""
        return Action.get(run_name=self.name, name=ROOT)

    def done(self) -> bool:
        """Whether it had ended when last read."""
        return self.info.phase in wire.TERMINAL_PHASES

    # -- following and changing it -------------------------------------------------------------

    @syncmethod
    async def sync(self) -> Run:
        """Read its state again."""
        async with client_for(self._settings) as client:
            self.info = await client.get_run(self.name)
        return self

    @syncmethod
    async def wait(self, quiet: bool = True) -> Run:
        """Block until the run has ended, and return it (``quiet`` is accepted for Flyte;
        loom prints nothing)."""
        async with client_for(self._settings) as client:
            await client.wait_action(self.name, ROOT)
            self.info = await client.get_run(self.name)
        return self

    @syncmethod
    async def abort(self, reason: str = "aborted from the SDK") -> None:
        """Abort every action of the run that has not ended. The server records who did it;
        ``reason`` is accepted for Flyte, not stored."""
        async with client_for(self._settings) as client:
            try:
                self.info = await client.abort_run(self.name)
            except NotFoundError:
                if self.done():  # as Flyte: aborting what is gone is no error
                    return
                raise

    @syncmethod
    async def details(self) -> RunDetails:
        """The root action's details (task, resources, error, attempts, inputs, outputs) and
        the run's own (project, domain, who started it)."""
        if self._details is None or not self._details.done():
            async with client_for(self._settings) as client:
                detail = await client.action_detail(self.name, ROOT)
                self.info = await client.get_run(self.name)
            self._details = self._make_details(detail)
        return self._details

    @syncmethod
    async def inputs(self) -> ActionInputs:
        """The root task's inputs by name."""
        return await (await self.details.aio()).inputs.aio()

    @syncmethod
    async def outputs(self) -> Any:
        """The root task's return value, once the run has ended (waiting for that); if it
        failed, its error is raised. Integer indexing is Flyte's: ``run.outputs()[0]`` is
        the value of a single-output task (see :class:`~loom.remote.ActionOutputs`)."""
        if not self.done():
            await self.wait.aio()
        details = await self.details.aio()
        return await details.outputs.aio()

    @synciter
    async def get_logs(self, attempt: int | None = None) -> AsyncIterator[str]:
        """The root action's log lines (see :meth:`Action.get_logs`)."""
        root = Action(await self._root_info(), self._settings)
        async for line in root.get_logs.aio(attempt):
            yield line

    def to_dict(self) -> dict[str, Any]:
        return self.info.model_dump(mode="json")

    def to_json(self, indent: int | None = None) -> str:
        return dump_json({"run": self.info}, indent)

    async def _root_info(self) -> wire.ActionInfo:
        async with client_for(self._settings) as client:
            return await client.get_action(self.name, ROOT)

    def _make_details(self, detail: wire.ActionDetail) -> RunDetails:
        return RunDetails(self.info, detail, self._settings)

    def __repr__(self) -> str:
        return f"<Run {self.name} {self.phase}>"


class RunDetails(ActionDetails):
    """A run's details: its root action's (see :class:`ActionDetails`) and its own."""

    def __init__(
        self,
        run: wire.RunInfo,
        detail: wire.ActionDetail,
        settings: Settings | None = None,
        task: Any = None,
    ) -> None:
        super().__init__(detail, settings, task)
        self.run = run

    @property
    def action_details(self) -> ActionDetails:
        """The root action's details (this object: Flyte 2 keeps them apart)."""
        return self

    @property
    def project(self) -> str:
        return self.run.project

    @property
    def domain(self) -> str:
        return self.run.domain

    @property
    def created_by(self) -> str:
        return self.run.created_by

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run.model_dump(mode="json"), **super().to_dict()}


def _admits(
    info: wire.RunInfo,
    wanted: frozenset[wire.Phase] | None,
    created_by: str | None,
    created_at: TimeFilter | None,
    updated_at: TimeFilter | None,
) -> bool:
    if wanted is not None and info.phase not in wanted:
        return False
    if created_by is not None and info.created_by != created_by:
        return False
    if created_at is not None and not created_at.admits(info.created_at):
        return False
    updated = info.ended_at or info.started_at or info.created_at
    return updated_at is None or updated_at.admits(updated)
