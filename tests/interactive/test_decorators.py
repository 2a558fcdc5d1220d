"""@vscode and @jupyter: options recorded on the task, inert locally, sent to the server."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

import loom
from loom._controller._remote import task_spec
from loom.errors import TaskDefinitionError
from loom.interactive import VscodeConfig, jupyter, vscode
from loom.interactive._decorators import interactive_of

env = loom.TaskEnvironment("interactive-tests")
calls: list[str] = []


def pre() -> None:
    calls.append("pre")


def post() -> None:
    calls.append("post")


@vscode
@env.task
async def bare_above(x: int) -> int:
    return x + 1


@env.task
@vscode(max_idle_seconds=None, pre_execute=pre, post_execute=post)
def args_below(x: int) -> int:
    return x * 2


@jupyter(notebook_dir="notebooks", run_task_first=True)
@env.task
async def notebook_task(x: int) -> int:
    return x - 1


@vscode(enable=False)
@env.task
async def disabled(x: int) -> int:
    return x


def test_options_are_recorded_whichever_order() -> None:
    above = interactive_of(bare_above)
    below = interactive_of(args_below)
    assert above is not None and above.kind == "vscode" and above.max_idle_seconds == 36000
    assert below is not None and below.max_idle_seconds is None and below.pre_execute is pre
    nb = interactive_of(notebook_task)
    assert nb is not None and nb.kind == "jupyter" and nb.notebook_dir == "notebooks"
    assert nb.run_task_first and nb.port == 8888
    assert interactive_of(disabled) is None


def test_override_keeps_the_options() -> None:
    assert interactive_of(bare_above.override(retries=2)) is interactive_of(bare_above)


def test_local_runs_ignore_them_no_hooks_no_files(tmp_path: Path) -> None:
    calls.clear()
    before = set(os.listdir(tmp_path))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert loom.run(bare_above, x=1).outputs() == 2
        assert loom.run(args_below, x=3).outputs() == 6
        assert loom.run(notebook_task, x=3).outputs() == 2
    finally:
        os.chdir(cwd)
    assert calls == []  # hooks are for sessions only
    assert set(os.listdir(tmp_path)) == before


def test_plain_calls_outside_a_run_are_plain() -> None:
    assert asyncio.run(bare_above(1)) == 2
    assert args_below(2) == 4


@pytest.mark.parametrize("bad", [0, -5])
def test_a_non_positive_idle_limit_is_refused(bad: Any) -> None:
    with pytest.raises(TaskDefinitionError, match="max_idle_seconds"):
        vscode(max_idle_seconds=bad)


def test_hooks_must_be_callable() -> None:
    with pytest.raises(TaskDefinitionError, match="pre_execute"):
        vscode(pre_execute="not callable")  # type: ignore[arg-type]


def test_the_wire_spec_carries_the_options() -> None:
    spec = task_spec(notebook_task, {"x": 1})
    assert spec.interactive is not None
    assert spec.interactive.kind == "jupyter"
    assert spec.interactive.notebook_dir == "notebooks" and spec.interactive.run_task_first
    assert task_spec(disabled, {"x": 1}).interactive is None
    never = task_spec(args_below, {"x": 1}).interactive
    assert never is not None and never.max_idle_seconds is None


def test_config_extensions_are_per_config() -> None:
    base = VscodeConfig()
    with_vim = VscodeConfig().add_extensions("vim")
    assert base.extension_remote_paths == [] and len(with_vim.extension_remote_paths) == 1
    task = vscode(config=with_vim)(env.task(lambda: None))  # type: ignore[arg-type]
    options = interactive_of(task)
    assert options is not None and options.config is with_vim
