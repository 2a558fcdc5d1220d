"""env_vars reach the task's code through os.environ, per task, even concurrently."""

from __future__ import annotations

import asyncio
import os

import loom

red = loom.TaskEnvironment("red", env_vars={"COLOUR": "red", "ONLY_RED": "1"})
blue = loom.TaskEnvironment("blue", env_vars={"COLOUR": "blue"})
plain = loom.TaskEnvironment("plain")


@red.task
async def red_colour() -> str:
    await asyncio.sleep(0.01)  # interleave with the blue task
    return f"{os.environ['COLOUR']}/{os.getenv('ONLY_RED')}"


@blue.task
def blue_colour() -> str:
    return f"{os.environ['COLOUR']}/{os.getenv('ONLY_RED')}"


@plain.task
async def no_colour() -> str | None:
    return os.environ.get("COLOUR")


@plain.task
async def everything() -> list[str]:
    results = await asyncio.gather(
        *(red_colour() for _ in range(5)), *(blue_colour.aio() for _ in range(5))
    )
    return [*results, str(await no_colour())]


def test_env_vars_are_visible_through_os_environ() -> None:
    assert loom.run(red_colour).outputs() == "red/1"
    assert loom.run(blue_colour).outputs() == "blue/None"


def test_concurrent_tasks_of_disagreeing_environments_each_see_their_own() -> None:
    out = loom.run(everything).outputs()
    assert out == ["red/1"] * 5 + ["blue/None"] * 5 + ["None"]
    assert "COLOUR" not in os.environ  # nothing leaks into the process afterwards


def test_run_level_env_vars_win_and_reach_every_task() -> None:
    run = loom.with_runcontext(env_vars={"COLOUR": "green"}).run(everything)
    assert run.outputs() == ["green/1"] * 5 + ["green/None"] * 5 + ["green"]


def test_override_env_vars() -> None:
    assert loom.run(red_colour.override(env_vars={"COLOUR": "pink"})).outputs() == "pink/None"


def test_subprocess_can_receive_the_task_environment() -> None:
    import subprocess
    import sys

    @red.task
    def child_process() -> str:
        return subprocess.run(
            [sys.executable, "-c", "import os; print(os.environ['COLOUR'])"],
            env=dict(os.environ),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    assert loom.run(child_process).outputs() == "red"
