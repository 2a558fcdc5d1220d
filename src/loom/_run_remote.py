"""Remote runs: package the code, create the run on the control plane, follow it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import remote, wire
from ._controller import ROOT_ACTION
from ._controller._remote import rebuild_error, task_spec
from ._run import current_settings
from ._settings import Settings
from .errors import LoomError
from .io._remote import remote_store
from .remote import make_bundle, task_location
from .remote._common import client_for, use_settings

__all__ = ["RemoteRun", "client_for", "submit"]

# loom.remote's objects (Run.get, Action.listall, ...) use loom.init's settings from here on
use_settings(current_settings)

if TYPE_CHECKING:
    from ._task import TaskTemplate


class RemoteRun(remote.Run):
    """A run this process started on the control plane (what ``loom.run`` returns in remote
    mode): a :class:`loom.remote.Run` that knows its root task, so its inputs and outputs
    decode to the task's types and a failure raises the task's own exception."""

    def __init__(self, info: wire.RunInfo, settings: Settings, task: TaskTemplate[Any, Any]):
        super().__init__(info, settings)
        self._task = task

    def _make_details(self, detail: wire.ActionDetail) -> remote.RunDetails:
        return _OwnRunDetails(self.info, detail, self._settings, self._task)

    def __repr__(self) -> str:
        return f"<RemoteRun {self.name} {self.phase}>"


class _OwnRunDetails(remote.RunDetails):
    def _failure(self) -> BaseException:
        # this process started the run: its error may be rebuilt as the task's own type
        return rebuild_error(self.info.error, ROOT_ACTION)


async def submit(
    task: TaskTemplate[Any, Any],
    args: tuple[Any, ...],
    inputs: Mapping[str, Any],
    settings: Settings,
    *,
    name: str | None = None,
    env_vars: Mapping[str, str] | None = None,
    overwrite_cache: bool = False,
    debug: bool = False,
    custom_context: Mapping[str, str] | None = None,
) -> RemoteRun:
    """Bundle the task's source tree (uploaded once per content) and create the run.

    ``debug`` makes the root action interactive (a VS Code session) even if the task is not
    decorated with ``@vscode``/``@jupyter``."""
    client = client_for(settings)  # fail fast, before packaging anything
    # File/Dir inputs are uploaded to the server's object store (below, once per content)
    data = remote_store(client.endpoint, settings.api_key, settings.home, settings.project)
    encoded = task.interface.encode_inputs(task.interface.bind(args, inputs), data)
    root_dir, _, _ = task_location(task, settings.root_dir)
    bundle = make_bundle(root_dir)
    async with client:
        if not await client.has_bundle(bundle.digest):
            await client.upload_bundle(bundle.digest, bundle.data)
        await data.flush(client)
        spec = task_spec(task, encoded, root_dir)
        if debug and spec.interactive is None:
            spec = spec.model_copy(update={"interactive": wire.InteractiveSpec()})
        try:
            body = wire.RunCreate(
                project=settings.project,
                domain=settings.domain,
                name=name or wire.new_run_name(),
                bundle=bundle.digest,
                root=wire.ActionCreate(
                    name=ROOT_ACTION,
                    task=spec,
                    inputs=encoded,
                    custom_context=dict(custom_context or {}),
                ),
                env_vars=dict(env_vars or {}),
                overwrite_cache=overwrite_cache,
            )
        except ValueError as e:  # pydantic's validation of names and sizes
            raise LoomError(f"invalid run request: {e}") from e
        info = await client.create_run(body)
    return RemoteRun(info, settings, task)
