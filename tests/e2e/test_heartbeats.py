"""Heartbeats end to end: a silent action process is declared lost, a busy one is not."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    ServerProcess,
    remote_run,
    run_actions,
    run_cli,
    start_server,
    write_module,
)

pytestmark = pytest.mark.e2e

#: short enough for a test, long enough for a loaded 2-core machine to beat in time
TIMEOUT_S = 5

FLOW = """
import asyncio
import os
import signal
import time

import loom

plain = loom.TaskEnvironment("plain")
warm = loom.TaskEnvironment("warm", reusable=loom.ReusePolicy(replicas=1, concurrency=2))
narrow = loom.TaskEnvironment("narrow", reusable=loom.ReusePolicy(replicas=1, concurrency=1))


def _freeze_once(marker: str) -> None:
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGSTOP)  # silent from now on, but not dead


@plain.task(retries=1)
async def freezes_once(marker: str) -> int:
    _freeze_once(marker)
    return os.getpid()


@warm.task(retries=1)
async def freezes_worker_once(marker: str) -> int:
    _freeze_once(marker)
    return os.getpid()


@plain.task
async def calls_warm(marker: str) -> int:
    return await freezes_worker_once(marker)


@narrow.task
async def slow_turn(i: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return i


@plain.task
async def queue_behind(seconds: float) -> list[int]:
    # two slots claim both, the pool's one worker runs one: the other waits in the pool
    return list(await asyncio.gather(slow_turn(0, seconds), slow_turn(1, seconds)))


@plain.task
async def blocks_its_loop(seconds: float) -> str:
    time.sleep(seconds)  # blocks the attempt's event loop: busy, not hung
    return "done"
"""


@pytest.fixture
def server(tmp_path: Path, loom_home: Path) -> Iterator[ServerProcess]:
    proc = start_server(
        tmp_path / "server-data",
        home=loom_home,
        env={"LOOM_HEARTBEAT_TIMEOUT": str(TIMEOUT_S), "LOOM_EXECUTOR_SLOTS": "2"},
    )
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    return write_module(tmp_path / "beating.py", FLOW)


def action(server: Any, run: str, name: str) -> dict[str, Any]:
    shown = run_cli("get", "action", run, name, "-o", "json", env=server.env)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_a_stopped_process_is_declared_lost_and_retried(
    server: Any, flow: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    doc = remote_run(server, str(flow), "freezes_once", "--marker", str(tmp_path / "froze"))
    assert doc["phase"] == "SUCCEEDED", doc
    assert time.monotonic() - started < 60
    first, second = action(server, doc["run"], "a0")["attempts"]
    assert first["phase"] == "FAILED" and first["error"]["kind"] == "worker_lost"
    assert "no heartbeat from attempt 1" in first["error"]["message"]
    assert f"the limit is {TIMEOUT_S} s" in first["error"]["message"]
    assert second["phase"] == "SUCCEEDED"


def test_a_stopped_warm_worker_loses_its_attempt_which_is_retried(
    server: Any, flow: Path, tmp_path: Path
) -> None:
    doc = remote_run(server, str(flow), "calls_warm", "--marker", str(tmp_path / "froze"))
    assert doc["phase"] == "SUCCEEDED", doc
    children = [a for a in run_actions(server, doc["run"]) if a["parent"] == "a0"]
    (child,) = children
    first, second = child["attempts"]
    assert first["error"]["kind"] == "worker_lost"
    assert "no heartbeat" in first["error"]["message"]
    assert second["phase"] == "SUCCEEDED"


def test_a_task_that_blocks_its_event_loop_keeps_beating(server: Any, flow: Path) -> None:
    doc = remote_run(server, str(flow), "blocks_its_loop", "--seconds", str(2 * TIMEOUT_S))
    assert doc["phase"] == "SUCCEEDED" and doc["outputs"] == "done"
    assert len(action(server, doc["run"], "a0")["attempts"]) == 1


def test_an_attempt_waiting_for_a_warm_worker_is_not_silent(server: Any, flow: Path) -> None:
    doc = remote_run(server, str(flow), "queue_behind", "--seconds", str(1.5 * TIMEOUT_S))
    assert doc["phase"] == "SUCCEEDED" and doc["outputs"] == [0, 1], doc
    children = [a for a in run_actions(server, doc["run"]) if a["parent"] == "a0"]
    assert [len(c["attempts"]) for c in children] == [1, 1]
