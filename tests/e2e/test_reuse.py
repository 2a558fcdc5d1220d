"""Reusable environments end to end: warm workers on a real server run many actions each."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import remote_run, run_actions, run_cli, write_module

pytestmark = pytest.mark.e2e

FLOW = """
import asyncio
import os
import time

import loom

warm = loom.TaskEnvironment(
    "warm", reusable=loom.ReusePolicy(replicas=(1, 2), concurrency=3, idle_ttl=2)
)
solo = loom.TaskEnvironment(
    "solo", reusable=loom.ReusePolicy(replicas=1, concurrency=3, idle_ttl=60)
)
plain = loom.TaskEnvironment("plain")

_active = 0
_peak = 0


@warm.task
async def whoami(i: int) -> list[int]:
    print(f"action {i} speaking")
    await asyncio.sleep(0.05)
    return [i, os.getpid()]


@plain.task
async def fan_out(n: int) -> list[list[int]]:
    return list(await asyncio.gather(*(whoami(i) for i in range(n))))


@solo.task
async def crowded(i: int) -> int:
    global _active, _peak
    _active += 1
    _peak = max(_peak, _active)
    await asyncio.sleep(0.3)
    _active -= 1
    return _peak


@plain.task
async def crowd(n: int) -> int:
    return max(await asyncio.gather(*(crowded(i) for i in range(n))))


@solo.task(timeout=1)
async def stuck(seconds: float) -> int:
    await asyncio.sleep(seconds)
    return os.getpid()


@solo.task
async def pid() -> int:
    return os.getpid()


@plain.task
async def timeout_then_more() -> list[int]:
    try:
        await stuck(30)
    except Exception as e:
        first = type(e).__name__
    else:
        first = "no error"
    print(f"first: {first}")
    return [await pid(), await pid()]


@solo.task(retries=1)
async def dies_once(marker: str) -> int:
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(7)
    return os.getpid()


@plain.task
async def survive(marker: str) -> int:
    return await dies_once(marker)


@solo.task
def sync_in_worker(x: int) -> int:
    print(f"sync {x}")
    return x * 10


@plain.task
async def mixed(n: int) -> list[int]:
    return list(await asyncio.gather(*(asyncio.to_thread(sync_in_worker, i) for i in range(n))))


wide = loom.TaskEnvironment(
    "wide", reusable=loom.ReusePolicy(replicas=2, concurrency=50, idle_ttl=30)
)


@wide.task
async def tag(i: int) -> str:
    return f"{i}:{os.getpid()}"


@plain.task
async def big_fan_out(n: int) -> list[str]:
    return list(await asyncio.gather(*(tag(i) for i in range(n))))


@wide.task
async def nap(seconds: float) -> int:
    await asyncio.sleep(seconds)
    return os.getpid()


@plain.task
async def naps(n: int) -> list[int]:
    return list(await asyncio.gather(*(nap(60) for _ in range(n))))
"""


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    return write_module(tmp_path / "warm_flow.py", FLOW)


def test_a_fan_out_runs_in_a_few_warm_processes(server: Any, flow: Path) -> None:
    doc = remote_run(server, str(flow), "fan_out", "--n", "12")
    assert doc["phase"] == "SUCCEEDED", doc
    results = doc["outputs"]
    assert [i for i, _ in results] == list(range(12))
    pids = {p for _, p in results}
    assert 1 <= len(pids) <= 2, pids  # replicas=(1, 2): never more than two workers
    # every attempt's output is in its own log, and only there
    children = [a for a in run_actions(server, doc["run"]) if a["task"] == "warm.whoami"]
    assert len(children) == 12
    for child in children[:4]:
        log = run_cli("get", "logs", doc["run"], child["name"], env=server.env).stdout
        spoken = [line for line in log.splitlines() if "speaking" in line]
        assert len(spoken) == 1, log


def test_concurrency_is_the_limit_per_worker(server: Any, flow: Path) -> None:
    doc = remote_run(server, str(flow), "crowd", "--n", "7")
    assert doc["phase"] == "SUCCEEDED", doc
    assert 2 <= doc["outputs"] <= 3  # one worker, three at a time


def test_a_timeout_ends_only_its_attempt(server: Any, flow: Path) -> None:
    started = time.monotonic()
    doc = remote_run(server, str(flow), "timeout_then_more")
    assert doc["phase"] == "SUCCEEDED", doc
    assert time.monotonic() - started < 25
    first, second = doc["outputs"]
    assert first == second  # the same warm worker went on serving
    stuck = next(a for a in run_actions(server, doc["run"]) if a["task"] == "solo.stuck")
    assert stuck["phase"] == "FAILED" and stuck["error"]["kind"] == "timeout"
    log = run_cli("get", "logs", doc["run"], "a0", env=server.env).stdout
    assert "first: MaxRuntimeExceededError" in log  # a TaskTimeoutError: its max_runtime


def test_a_dead_worker_loses_its_attempt_which_is_retried(
    server: Any, flow: Path, tmp_path: Path
) -> None:
    doc = remote_run(server, str(flow), "survive", "--marker", str(tmp_path / "died"))
    assert doc["phase"] == "SUCCEEDED", doc
    child = next(a for a in run_actions(server, doc["run"]) if a["task"] == "solo.dies_once")
    shown = run_cli("get", "action", doc["run"], child["name"], "-o", "json", env=server.env)
    attempts = json.loads(shown.stdout)["attempts"]
    assert [a["phase"] for a in attempts] == ["FAILED", "SUCCEEDED"]
    assert attempts[0]["error"]["kind"] == "worker_lost"
    assert "code 7" in attempts[0]["error"]["message"]
    log = run_cli("get", "logs", doc["run"], child["name"], "--attempt", "1", env=server.env)
    assert "exited with code 7" in log.stdout, log.stdout + log.stderr


def test_sync_tasks_run_in_the_worker(server: Any, flow: Path) -> None:
    doc = remote_run(server, str(flow), "mixed", "--n", "4")
    assert doc["phase"] == "SUCCEEDED", doc
    assert doc["outputs"] == [0, 10, 20, 30]


def test_idle_workers_stop(server: Any, flow: Path) -> None:
    doc = remote_run(server, str(flow), "fan_out", "--n", "3")
    assert doc["phase"] == "SUCCEEDED", doc
    pids = {p for _, p in doc["outputs"]}
    deadline = time.monotonic() + 20  # idle_ttl=2
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is as good as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_wide_warm_fan_out(server: Any, flow: Path) -> None:
    """Hundreds of actions in two warm workers: created, waited for and reported in batches."""
    n = 400
    started = time.monotonic()
    doc = remote_run(server, str(flow), "big_fan_out", "--n", str(n))
    took = time.monotonic() - started
    assert doc["phase"] == "SUCCEEDED", doc
    tags = doc["outputs"]
    assert [int(t.split(":")[0]) for t in tags] == list(range(n))
    assert 1 <= len({t.split(":")[1] for t in tags}) <= 2
    children = [a for a in run_actions(server, doc["run"]) if a["task"] == "wide.tag"]
    assert len(children) == n and all(a["phase"] == "SUCCEEDED" for a in children)
    assert all(len(a["attempts"]) == 1 for a in children)
    assert took < 60  # (about 2 s on two cores; a generous bound for a loaded machine)


def test_aborting_cancels_warm_attempts_that_got_their_spec_with_the_job(
    server: Any, flow: Path
) -> None:
    detached = run_cli("run", "--remote", "--detach", str(flow), "naps", "--n", "6", env=server.env)
    assert detached.returncode == 0, detached.stderr
    run = detached.stdout.strip()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = [a for a in run_actions(server, run) if a["task"] == "wide.nap"]
        if len(running) == 6 and all(a["phase"] == "RUNNING" for a in running):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the naps did not all start: {run_actions(server, run)}")
    aborted = run_cli("abort", "run", run, env=server.env)
    assert aborted.returncode == 0 and "ABORTED" in aborted.stdout, aborted.stderr
    naps = [a for a in run_actions(server, run) if a["task"] == "wide.nap"]
    assert all(a["phase"] == "ABORTED" for a in naps), naps
    # the workers let go of them: a new fan-out on the same pool runs at once
    started = time.monotonic()
    doc = remote_run(server, str(flow), "big_fan_out", "--n", "20")
    assert doc["phase"] == "SUCCEEDED", doc
    assert time.monotonic() - started < 30
