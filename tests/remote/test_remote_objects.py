"""``loom.remote`` as Flyte 2 users know it (``Run.get``, ``Run.listall``, ``Action.listall``,
``Action.get(...).details()``, outputs, inputs, logs, abort), against a real server."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import loom
import loom.remote as remote
from loom.errors import NotFoundError, RemoteTaskError
from loom.wire import Phase
from tests.conftest import ServerProcess, start_server

pytestmark = pytest.mark.e2e

FLOW = """
import asyncio
import time

import loom

env = loom.TaskEnvironment("remote-objects", resources=loom.Resources(cpu="500m"))


class Declined(Exception):
    pass


@env.task
async def square(x: int) -> int:
    print(f"squaring {x}")
    return x * x


@env.task
async def squares(n: int) -> list[int]:
    return list(await asyncio.gather(*(square(i) for i in range(n))))


@env.task
async def greet(name: str) -> str:
    return f"hello {name}"


@env.task
async def refuse(amount: int) -> int:
    raise Declined(f"cannot pay {amount}")


@env.task
async def total(items: list[str]) -> int:
    return len(items)


@env.task
async def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"
"""


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server for the module (starting one per test would dominate its time)."""
    root = tmp_path_factory.mktemp("remote-objects")
    proc = start_server(root / "server-data", home=root / "home")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The task module, imported here as a user's script imports its own tasks."""
    folder = tmp_path_factory.mktemp("flow")
    (folder / "objects_flow.py").write_text(textwrap.dedent(FLOW))
    sys.path.insert(0, str(folder))
    import objects_flow

    yield objects_flow
    sys.path.remove(str(folder))
    sys.modules.pop("objects_flow", None)


@pytest.fixture
def server(shared_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> ServerProcess:
    monkeypatch.setenv("LOOM_CONFIG", str(shared_server.config_path))
    loom.init_from_config()
    return shared_server


def start(task: Any, **inputs: Any) -> Any:
    return loom.with_runcontext(mode="remote").run(task, **inputs)


def test_flyte_indexing_of_remote_outputs_is_the_output(server: Any, flow: ModuleType) -> None:
    run = start(flow.greet, name="Ada")
    out = run.outputs()  # waits
    assert out[0] == "hello Ada"  # Flyte 2's answer, not the value's first letter
    assert out == "hello Ada" and out.startswith("hello") and out.value[0] == "h"
    assert run.phase == Phase.SUCCEEDED
    listed = start(flow.squares, n=3).outputs()
    assert listed == [0, 1, 4] and listed[1] == 1 and listed.o0 == [0, 1, 4]


def test_run_get_wait_outputs_inputs_url(server: Any, flow: ModuleType) -> None:
    name = start(flow.squares, n=4).name
    run = remote.Run.get(name)
    assert run.name == name and run.url == f"{server.endpoint}/runs/{name}"
    assert run.wait() is run and run.phase == Phase.SUCCEEDED and run.done()
    assert run.outputs() == [0, 1, 4, 9] and run.outputs().o0 == [0, 1, 4, 9]
    assert run.inputs() == {"n": 4}
    with pytest.raises(NotFoundError):
        remote.Run.get("no-such-run")


def test_run_listall_filters(server: Any, flow: ModuleType) -> None:
    done = start(flow.square, x=5).wait()
    failed = start(flow.refuse, amount=3).wait()
    names = [r.name for r in remote.Run.listall()]
    assert done.name in names and failed.name in names
    assert names.index(failed.name) < names.index(done.name)  # newest first
    succeeded = [r.name for r in remote.Run.listall(in_phase=("succeeded",))]
    assert done.name in succeeded and failed.name not in succeeded
    both = [r.name for r in remote.Run.listall(in_phase=("succeeded", "FAILED"))]
    assert {done.name, failed.name} <= set(both)
    by_task = [r.name for r in remote.Run.listall(task_name="remote-objects.refuse")]
    assert failed.name in by_task and done.name not in by_task
    assert len(list(remote.Run.listall(limit=1))) == 1
    assert list(remote.Run.listall(project="default", domain="production")) == []
    assert list(remote.Run.listall(created_by_subject="somebody-else")) == []


def test_actions_of_a_run_and_their_details(server: Any, flow: ModuleType) -> None:
    run = start(flow.squares, n=3).wait()
    actions = list(remote.Action.listall(for_run_name=run.name))
    assert actions[0].name == "a0" and len(actions) == 4
    children = list(remote.Action.listall(for_run_name=run.name, parent_name="a0"))
    assert {a.task_name for a in children} == {"remote-objects.square"}
    newest = list(remote.Action.listall(for_run_name=run.name, sort_by=("created_at", "desc")))
    assert newest[-1].name == "a0"
    child = remote.Action.get(run_name=run.name, name=children[0].name)
    details = child.details()
    assert details.phase == Phase.SUCCEEDED and details.attempts == 1
    assert details.resources.cpu == 0.5 and details.error_info is None
    assert details.inputs()["x"] in {0, 1, 2} and details.parent_name == "a0"
    assert details.outputs()[0] == details.inputs()["x"] ** 2
    doc = json.loads(details.to_json(indent=2))
    assert doc["action"]["name"] == child.name and doc["task"]["resources"]["cpu"] == 0.5
    logs = list(child.get_logs())
    assert f"squaring {details.inputs()['x']}" in logs


def test_a_failed_run_shows_its_error(server: Any, flow: ModuleType) -> None:
    name = start(flow.refuse, amount=3).wait().name
    run = remote.Run.get(name)
    details = run.details()
    assert run.phase == Phase.FAILED and details.error_info is not None
    assert details.error_info.type.endswith("Declined")
    assert details.error_info.message == "cannot pay 3"
    assert details.attempt_details[0].error is not None
    with pytest.raises(RemoteTaskError, match="cannot pay 3"):
        run.outputs()  # a run read by name: its error is described, never unpickled


def test_large_inputs_come_whole(server: Any, flow: ModuleType) -> None:
    items = ["x" * 1000] * 400  # over the 256 KiB the action view shows
    run = start(flow.total, items=items).wait()
    assert remote.Run.get(run.name).inputs()["items"] == items


def test_without_the_task_values_are_as_encoded(
    server: Any, flow: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = start(flow.squares, n=2).wait().name
    monkeypatch.delitem(sys.modules, "objects_flow")
    run = remote.Run.get(name)
    assert run.outputs() == [0, 1] and run.inputs() == {"n": 2}


def test_abort(server: Any, flow: ModuleType) -> None:
    run = remote.Run.get(start(flow.sleepy, seconds=60).name)
    run.abort()
    assert run.wait().phase == Phase.ABORTED
    with pytest.raises(RemoteTaskError):
        run.outputs()


def test_every_method_can_be_awaited(server: Any, flow: ModuleType) -> None:
    name = start(flow.square, x=3).name

    async def inspect() -> tuple[Any, ...]:
        run = await remote.Run.get.aio(name)
        await run.wait.aio()
        runs = [r.name async for r in remote.Run.listall.aio(in_phase=("succeeded",))]
        actions = [a async for a in remote.Action.listall.aio(for_run_name=name)]
        details = await actions[0].details()  # Flyte 2: details() is awaited
        lines = [line async for line in run.get_logs.aio()]
        return run, runs, details, await run.outputs.aio(), lines

    run, runs, details, outputs, lines = asyncio.run(inspect())
    assert run.phase == Phase.SUCCEEDED and name in runs
    assert details.name == "a0" and outputs[0] == 9 and "squaring 3" in lines


def test_loom_run_in_remote_mode_is_a_remote_run(server: Any, flow: ModuleType) -> None:
    run = start(flow.square, x=2)
    assert isinstance(run, remote.Run) and run.wait().outputs() == 4
    assert run.details().created_by and run.details().project == "default"


def test_flyte_program_reading_runs_by_name(server: Any, flow: ModuleType, tmp_path: Path) -> None:
    """A separate process, as a Flyte 2 script would be written (only the import changed)."""
    import subprocess

    name = start(flow.squares, n=2).wait().name
    script = tmp_path / "read_runs.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import loom as flyte
            import loom.remote as remote

            flyte.init_from_config()
            run = remote.Run.get(name={name!r})
            run.wait()
            print(run.phase, run.outputs().o0)
            for action in remote.Action.listall(for_run_name=run.name):
                print(action.name, action.details().phase)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env={**server.env},
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "SUCCEEDED [0, 1]" and "a0 SUCCEEDED" in lines


def test_remote_objects_use_the_config_file_init_was_given(
    shared_server: ServerProcess, flow: ModuleType, tmp_path: Path
) -> None:
    # a fresh process that names its config file and starts no run: Run.listall went to the
    # environment's (here: no) server instead
    script = tmp_path / "look.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import loom, loom.remote as remote
            loom.init_from_config({str(shared_server.config_path)!r})
            print("RUNS", len(list(remote.Run.listall(limit=5))) >= 0)
            """
        )
    )
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")}
    env["LOOM_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0 and "RUNS True" in done.stdout, done.stderr
