"""Runs and actions on a loom server, as Flyte 2's ``flyte.remote`` shows them, and the API
client and code bundles underneath.

    import loom
    import loom.remote as remote

    loom.init_from_config()
    run = remote.Run.get("brisk-otter-4k7q2m")
    run.wait()
    print(run.phase, run.url, run.outputs())
    for action in remote.Action.listall(for_run_name=run.name):
        print(action.name, action.task_name, action.details().error_info)

Every method blocks; ``.aio`` gives the form to await: ``await remote.Run.get.aio(name)``,
``async for r in remote.Run.listall.aio(in_phase=("running",))``.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._action import Action, ActionDetails
    from ._bundle import Bundle, extract_bundle, make_bundle, task_location
    from ._client import Client, auth_metadata, warm_up
    from ._common import TimeFilter
    from ._outputs import ActionInputs, ActionOutputs
    from ._run import Run, RunDetails

# Imported on first use: the client pulls in httpx, and `loom.Run.outputs()` of a local run
# needs only the outputs view.
_LAZY = {
    "Action": "._action",
    "ActionDetails": "._action",
    "ActionInputs": "._outputs",
    "ActionOutputs": "._outputs",
    "Bundle": "._bundle",
    "Client": "._client",
    "Run": "._run",
    "RunDetails": "._run",
    "TimeFilter": "._common",
    "auth_metadata": "._client",
    "extract_bundle": "._bundle",
    "make_bundle": "._bundle",
    "task_location": "._bundle",
    "warm_up": "._client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'loom.remote' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Action",
    "ActionDetails",
    "ActionInputs",
    "ActionOutputs",
    "Bundle",
    "Client",
    "Run",
    "RunDetails",
    "TimeFilter",
    "auth_metadata",
    "extract_bundle",
    "make_bundle",
    "task_location",
    "warm_up",
]
