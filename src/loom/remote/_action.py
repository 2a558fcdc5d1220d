"""Actions of runs on the server, as Flyte 2's ``flyte.remote.Action`` shows them."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Generator, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .. import wire
from .._settings import Settings
from ..errors import NotFoundError, RemoteTaskError
from ._common import TimeFilter, client_for, current_settings, dump_json, phases, utc
from ._outputs import ActionInputs, outputs_view
from ._syncify import syncclassmethod, synciter, synciterclassmethod, syncmethod

if TYPE_CHECKING:
    from .._task import TaskTemplate
    from ._client import Client


class _HasInfo(Protocol):
    @property
    def info(self) -> wire.ActionInfo: ...


class _ActionFields:
    """What an action is, read from its ``info`` (shared by :class:`Action` and
    :class:`ActionDetails`)."""

    @property
    def name(self: _HasInfo) -> str:
        return self.info.name

    @property
    def run_name(self: _HasInfo) -> str:
        return self.info.run

    @property
    def task_name(self: _HasInfo) -> str:
        """The task's full name, ``<environment>.<function>``."""
        return self.info.task

    @property
    def parent_name(self: _HasInfo) -> str | None:
        """The action that called this one (``None`` for the run's root, ``a0``)."""
        return self.info.parent

    @property
    def phase(self: _HasInfo) -> wire.Phase:
        """The phase when last read."""
        return self.info.phase


class Action(_ActionFields):
    """One action (task call) of a run on the server: its name, task, phase and attempts.

    Get one with :meth:`get` or :meth:`listall`; :meth:`details` adds its task, inputs and
    outputs. Methods block; each has an ``.aio`` form to await (``await a.wait.aio()``).
    """

    def __init__(
        self,
        info: wire.ActionInfo,
        settings: Settings | None = None,
        *,
        details: ActionDetails | None = None,
    ) -> None:
        self.info = info
        self._settings = settings or current_settings()
        self._details = details

    # -- finding actions -----------------------------------------------------------------

    @synciterclassmethod
    async def listall(
        cls: type[Action],
        for_run_name: str,
        in_phase: Iterable[str | wire.Phase] | None = None,
        parent_name: str | None = None,
        sort_by: tuple[str, Literal["asc", "desc"]] | None = None,
        created_at: TimeFilter | None = None,
        updated_at: TimeFilter | None = None,
    ) -> AsyncIterator[Action]:
        """The actions of run ``for_run_name``, oldest first (``sort_by=("created_at",
        "desc")``: newest first), filtered by phase (names in any case), parent action and
        creation or last-change time."""
        wanted = phases(in_phase)
        settings = current_settings()
        async with client_for(settings) as client:
            infos = await client.list_actions(for_run_name)
        order = _sort_key(sort_by)
        infos.sort(key=lambda i: getattr(i, order[0]) or i.created_at, reverse=order[1])
        for info in infos:
            if wanted is not None and info.phase not in wanted:
                continue
            if parent_name is not None and info.parent != parent_name:
                continue
            if created_at is not None and not created_at.admits(info.created_at):
                continue
            if updated_at is not None and not updated_at.admits(_updated(info)):
                continue
            yield cls(info, settings)

    @syncclassmethod
    async def get(
        cls: type[Action],
        uri: str | None = None,
        /,
        run_name: str | None = None,
        name: str | None = None,
    ) -> Action:
        """Action ``name`` of run ``run_name`` (or ``uri``: ``"<run>/<action>"``), with its
        details; :class:`~loom.errors.NotFoundError` if there is none the caller may see."""
        if uri is not None:
            run_name, _, name = uri.rpartition("/")
        if not run_name or not name:
            raise ValueError("Action.get needs run_name= and name= (or 'run/action')")
        settings = current_settings()
        async with client_for(settings) as client:
            details = ActionDetails(await client.action_detail(run_name, name), settings)
        return cls(details.info, settings, details=details)

    # -- what it is ------------------------------------------------------------------------

    @property
    def start_time(self) -> datetime:
        """When it started running (when it was created, if it has not started)."""
        return utc(self.info.started_at or self.info.created_at)

    @property
    def attempts(self) -> int:
        return len(self.info.attempts)

    def done(self) -> bool:
        """Whether it had ended (SUCCEEDED, FAILED or ABORTED) when last read."""
        return self.info.phase in wire.TERMINAL_PHASES

    # -- following and changing it -----------------------------------------------------------

    @syncmethod
    async def sync(self) -> Action:
        """Read its state again."""
        async with self._client() as client:
            self.info = await client.get_action(self.run_name, self.name)
        return self

    @syncmethod
    async def wait(self, quiet: bool = True) -> Action:
        """Block until it has ended (``quiet`` is accepted for Flyte; loom prints nothing)."""
        async with self._client() as client:
            self.info = await client.wait_action(self.run_name, self.name)
        return self

    @syncmethod
    async def abort(self, reason: str = "aborted from the SDK") -> None:
        """Abort it and what it called (an action that has ended stays as it is). The server
        records who aborted it; ``reason`` is accepted for Flyte, not stored."""
        async with self._client() as client:
            try:
                self.info = await client.abort_action(self.run_name, self.name)
            except NotFoundError:
                if self.done():  # as Flyte: aborting what is gone is no error
                    return
                raise

    @syncmethod
    async def details(self) -> ActionDetails:
        """Its task (resources, retries, ...), error, attempts, inputs and outputs.

        Awaitable as it is in Flyte 2 too: ``await action.details()``."""
        if self._details is None or not self._details.done():
            async with self._client() as client:
                self._details = ActionDetails(
                    await client.action_detail(self.run_name, self.name), self._settings
                )
            self.info = self._details.info
        return self._details

    @synciter
    async def get_logs(self, attempt: int | None = None) -> AsyncIterator[str]:
        """Its log lines (of ``attempt``, default the latest); for an action still running,
        until the attempt ends. The sync form gathers every line first."""
        async with self._client() as client:
            async for line in _log_lines(client, self.run_name, self.name, attempt, self.done()):
                yield line

    @syncmethod
    async def inputs(self) -> ActionInputs:
        """Its inputs by name (see :meth:`ActionDetails.inputs`)."""
        return await (await self.details.aio()).inputs.aio()

    @syncmethod
    async def outputs(self) -> Any:
        """Its result, once it has ended (see :meth:`ActionDetails.outputs`)."""
        details = await self.details.aio()
        return await details.outputs.aio()

    def to_dict(self) -> dict[str, Any]:
        return self.info.model_dump(mode="json")

    def to_json(self, indent: int | None = None) -> str:
        return dump_json({"action": self.info}, indent)

    def _client(self) -> Client:
        return client_for(self._settings)

    def __repr__(self) -> str:
        return f"<Action {self.run_name}/{self.name} {self.task_name} {self.phase}>"


class ActionDetails(_ActionFields):
    """Everything the server records about one action: its state and attempts (each with its
    phase, times and error), its error, its task (resources, retries, timeout, cache, image
    environment) and its inputs and outputs.

    ``await action.details()`` works as in Flyte 2 (these details are awaitable: they give
    themselves)."""

    def __init__(
        self,
        detail: wire.ActionDetail,
        settings: Settings | None = None,
        task: TaskTemplate[Any, Any] | None = None,
    ) -> None:
        self.detail = detail
        self._settings = settings or current_settings()
        self._task = task

    @property
    def info(self) -> wire.ActionInfo:
        return self.detail.action

    @property
    def is_running(self) -> bool:
        return self.info.phase == wire.Phase.RUNNING

    def done(self) -> bool:
        return self.info.phase in wire.TERMINAL_PHASES

    @property
    def task(self) -> wire.TaskSpec:
        """The task as the server runs it: module and attribute, resources, env vars, secret
        names, retries, timeout, cache, reuse and interactive settings."""
        return self.detail.task

    @property
    def resources(self) -> wire.ResourceSpec:
        return self.detail.task.resources

    @property
    def group(self) -> list[str]:
        return self.info.group

    @property
    def cache_status(self) -> str:
        """``disabled``, ``miss``, ``hit``, ``overwritten`` or ``waiting``."""
        return self.info.cache

    @property
    def error_info(self) -> wire.ErrorInfo | None:
        """Why it failed (type, message, traceback, kind), or ``None``."""
        return self.info.error

    @property
    def abort_info(self) -> wire.ErrorInfo | None:
        """Why it was aborted, if it was."""
        return self.info.error if self.info.phase == wire.Phase.ABORTED else None

    @property
    def attempts(self) -> int:
        """How many attempts it has had (Flyte's count; see :attr:`attempt_details`)."""
        return len(self.info.attempts)

    @property
    def attempt_details(self) -> list[wire.AttemptInfo]:
        """Each attempt: its number, phase, start and end, and error."""
        return list(self.info.attempts)

    @property
    def created_at(self) -> datetime:
        return utc(self.info.created_at)

    @property
    def start_time(self) -> datetime | None:
        return None if self.info.started_at is None else utc(self.info.started_at)

    @property
    def end_time(self) -> datetime | None:
        return None if self.info.ended_at is None else utc(self.info.ended_at)

    @property
    def runtime(self) -> timedelta:
        """How long it ran (so far, if it still runs)."""
        start = self.start_time
        if start is None:
            return timedelta(0)
        return (self.end_time or datetime.now(UTC)) - start

    @syncmethod
    async def inputs(self) -> ActionInputs:
        """Its inputs by parameter name: as the task's types where this process has the
        task (imported), else as encoded (the JSON the server stores)."""
        value = self.detail.inputs
        async with client_for(self._settings) as client:
            if value.truncated:  # large: the view left it out
                value = await client.get_inputs(self.run_name, self.name)
            encoded = dict(value.value or {})
            task = self._local_task()
            if task is None:
                return ActionInputs(encoded)
            return ActionInputs(task.interface.decode_inputs(encoded, self._store(client)))

    @syncmethod
    async def outputs(self) -> Any:
        """Its result once it has ended (waiting for that): the task's return value, which
        ``[0]`` indexes the Flyte 2 way (see :class:`ActionOutputs`); if it failed or was
        aborted, the error is raised."""
        async with client_for(self._settings) as client:
            if not self.done():
                await client.wait_action(self.run_name, self.name)
                self.detail = await client.action_detail(self.run_name, self.name)
            if self.phase != wire.Phase.SUCCEEDED:
                raise self._failure()
            shown = self.detail.outputs
            if shown is not None and not shown.truncated:
                encoded = shown.value
            else:
                encoded = (await client.get_outputs(self.run_name, self.name)).value
            task = self._local_task()
            if task is None:
                return outputs_view(encoded)
            return outputs_view(task.interface.output.decode(encoded, self._store(client)))

    def _failure(self) -> BaseException:
        """The error to raise for an action that did not succeed. Only type name, message
        and traceback: a run read by name may be anybody's, so nothing is unpickled."""
        info = self.info.error
        if info is None:
            what = f"action {self.name} of run {self.run_name} ended {self.phase}"
            return RemoteTaskError(str(self.phase).capitalize(), what)
        return RemoteTaskError(info.type, info.message, info.traceback)

    def _local_task(self) -> TaskTemplate[Any, Any] | None:
        """The task, if this process has imported it (never imports: that would run code)."""
        if self._task is not None:
            return self._task
        spec = self.detail.task
        for module_name in (spec.module, "__main__"):  # a script's tasks live in __main__
            candidate = getattr(sys.modules.get(module_name), spec.attr, None)
            if getattr(candidate, "name", None) == spec.name and hasattr(candidate, "interface"):
                return candidate
        return None

    def _store(self, client: Client) -> Any:
        # File/Dir values download through the server they came from, when they are read
        from ..io._remote import remote_store

        return remote_store(client.endpoint, self._settings.api_key, self._settings.home)

    def to_dict(self) -> dict[str, Any]:
        return self.detail.model_dump(mode="json", exclude={"rerun", "rerun_note", "debug"})

    def to_json(self, indent: int | None = None) -> str:
        """The details as JSON: the action, its task, and its inputs and outputs as encoded
        (left out where too large to show, with their size)."""
        return dump_json(self.to_dict(), indent)

    def __await__(self) -> Generator[Any, None, ActionDetails]:
        # Flyte 2's Action.details() is a coroutine: ``await action.details()`` must work
        async def itself() -> ActionDetails:
            return self

        return itself().__await__()

    def __repr__(self) -> str:
        return f"<ActionDetails {self.run_name}/{self.name} {self.task_name} {self.phase}>"


async def _log_lines(
    client: Client, run: str, action: str, attempt: int | None, ended: bool
) -> AsyncIterator[str]:
    pending = ""
    async for chunk in client.logs(run, action, attempt, follow=not ended):
        pending += chunk
        *lines, pending = pending.split("\n")
        for line in lines:
            yield line
    if pending:
        yield pending


def _sort_key(sort_by: tuple[str, Literal["asc", "desc"]] | None) -> tuple[str, bool]:
    field, direction = sort_by or ("created_at", "asc")
    attr = {"created_at": "created_at", "started_at": "started_at", "updated_at": "ended_at"}
    if field not in attr:
        raise ValueError(f"cannot sort actions by {field!r}: by one of {sorted(attr)}")
    return attr[field], direction == "desc"


def _updated(info: wire.ActionInfo) -> datetime:
    return info.ended_at or info.started_at or info.created_at
