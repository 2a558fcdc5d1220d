"""Remote runs: package the code, create the run on the control plane, follow it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import wire
from ._controller import ROOT_ACTION
from ._controller._remote import rebuild_error, task_spec
from ._settings import Settings
from ._sync import run_sync
from .errors import ConfigError, LoomError
from .io._remote import remote_store
from .remote import Client, make_bundle, task_location
from .wire import Phase

if TYPE_CHECKING:
    from ._task import TaskTemplate


def client_for(settings: Settings) -> Client:
    """A client for the configured endpoint, or a clear error saying how to configure one."""
    if not settings.endpoint:
        raise ConfigError(
            "no loom server is configured: start one with `loom server start` (it writes "
            f"{settings.config_path}), or set LOOM_ENDPOINT and LOOM_API_KEY"
        )
    return Client(settings.endpoint, settings.api_key)


class RemoteRun:
    """A run on the control plane. ``wait()`` follows it; ``outputs()`` is the root's result."""

    def __init__(self, info: wire.RunInfo, settings: Settings, task: TaskTemplate[Any, Any]):
        self.info = info
        self._settings = settings
        self._task = task

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def phase(self) -> str:
        return self.info.phase

    @property
    def mode(self) -> str:
        return "remote"

    @property
    def url(self) -> str:
        """Where the run is shown (the server's UI)."""
        assert self._settings.endpoint is not None
        return f"{self._settings.endpoint.rstrip('/')}/runs/{self.name}"

    async def wait_aio(self) -> RemoteRun:
        async with client_for(self._settings) as client:
            await client.wait_action(self.name, ROOT_ACTION)
            self.info = await client.get_run(self.name)
        return self

    def wait(self) -> RemoteRun:
        """Block until the run reaches a terminal phase."""
        return run_sync(self.wait_aio())

    async def outputs_aio(self) -> Any:
        async with client_for(self._settings) as client:
            root = await client.wait_action(self.name, ROOT_ACTION)
            if root.phase != Phase.SUCCEEDED:
                raise rebuild_error(root.error, ROOT_ACTION)
            outputs = await client.get_outputs(self.name, ROOT_ACTION)
            # File/Dir outputs download through this client's server, when they are read
            data = remote_store(client.endpoint, self._settings.api_key, self._settings.home)
        return self._task.interface.output.decode(outputs.value, data)

    def outputs(self) -> Any:
        """The root task's return value (waits for the run); raises the task's exception."""
        return run_sync(self.outputs_aio())

    def __repr__(self) -> str:
        return f"<RemoteRun {self.name} {self.phase}>"


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
) -> RemoteRun:
    """Bundle the task's source tree (uploaded once per content) and create the run.

    ``debug`` makes the root action interactive (a VS Code session) even if the task is not
    decorated with ``@vscode``/``@jupyter``."""
    client = client_for(settings)  # fail fast, before packaging anything
    # File/Dir inputs are uploaded to the server's object store (below, once per content)
    data = remote_store(client.endpoint, settings.api_key, settings.home, settings.project)
    encoded = task.interface.encode_inputs(task.interface.bind(args, inputs), data)
    root_dir, _, _ = task_location(task)
    bundle = make_bundle(root_dir)
    async with client:
        if not await client.has_bundle(bundle.digest):
            await client.upload_bundle(bundle.digest, bundle.data)
        await data.flush(client)
        spec = task_spec(task, encoded)
        if debug and spec.interactive is None:
            spec = spec.model_copy(update={"interactive": wire.InteractiveSpec()})
        try:
            body = wire.RunCreate(
                project=settings.project,
                domain=settings.domain,
                name=name or wire.new_run_name(),
                bundle=bundle.digest,
                root=wire.ActionCreate(name=ROOT_ACTION, task=spec, inputs=encoded),
                env_vars=dict(env_vars or {}),
                overwrite_cache=overwrite_cache,
            )
        except ValueError as e:  # pydantic's validation of names and sizes
            raise LoomError(f"invalid run request: {e}") from e
        info = await client.create_run(body)
    return RemoteRun(info, settings, task)
