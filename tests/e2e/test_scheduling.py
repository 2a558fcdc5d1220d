"""Resource-aware scheduling on a real server with real processes: I/O-bound fan-outs run
wide on a small machine, and each attempt sees only the GPUs it was given."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess, remote_run, start_server, write_module

pytestmark = pytest.mark.e2e

FLOW = """
import asyncio
import os

import loom

env = loom.TaskEnvironment("sched")
gpu_env = loom.TaskEnvironment("sched-gpu", resources=loom.Resources(gpu=1))
warm = loom.TaskEnvironment("sched-warm", reusable=loom.ReusePolicy(replicas=20, concurrency=1))


@env.task
async def nap(seconds: float) -> int:
    await asyncio.sleep(seconds)
    return 1


@env.task
async def fan_out(n: int, seconds: float) -> int:
    return sum(await asyncio.gather(*(nap(seconds) for _ in range(n))))


@warm.task
async def warm_nap(seconds: float) -> int:
    await asyncio.sleep(seconds)
    return 1


@env.task
async def warm_fan_out(n: int, seconds: float) -> int:
    return sum(await asyncio.gather(*(warm_nap(seconds) for _ in range(n))))


@gpu_env.task
async def devices(seconds: float) -> str:
    await asyncio.sleep(seconds)  # both hold their GPU at once
    return os.environ.get("CUDA_VISIBLE_DEVICES", "unset")


@env.task
async def no_devices() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "unset")


@env.task
async def gpus(seconds: float) -> list[str]:
    return list(await asyncio.gather(devices(seconds), devices(seconds), no_devices()))
"""

SLEEP_S = 5.0


@pytest.fixture
def server(tmp_path: Path, loom_home: Path) -> Iterator[ServerProcess]:
    # two GPUs declared: this machine has none, the executor hands out their numbers all the same
    proc = start_server(tmp_path / "server-data", home=loom_home, env={"LOOM_EXECUTOR_GPUS": "2"})
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    return write_module(tmp_path / "sched_flow.py", FLOW)


def test_a_hundred_sleeping_tasks_take_about_one_sleep(server: Any, flow: Path) -> None:
    started = time.monotonic()
    doc = remote_run(server, str(flow), "fan_out", "--n", "100", "--seconds", str(SLEEP_S))
    took = time.monotonic() - started
    assert doc["phase"] == "SUCCEEDED" and doc["outputs"] == 100, doc
    # two at a time (one per CPU) would take 50 sleeps; all at once, one and start-up (about
    # 9 s on an idle 2-core machine: the bound leaves room for a loaded one, as in CI)
    assert took < 5 * SLEEP_S, f"100 sleeps of {SLEEP_S} s took {took:.1f} s"


def test_warm_replicas_are_honoured_up_to_capacity(server: Any, flow: Path) -> None:
    started = time.monotonic()
    doc = remote_run(server, str(flow), "warm_fan_out", "--n", "20", "--seconds", str(SLEEP_S))
    took = time.monotonic() - started
    assert doc["phase"] == "SUCCEEDED" and doc["outputs"] == 20, doc
    assert took < 5 * SLEEP_S, f"20 warm sleeps of {SLEEP_S} s took {took:.1f} s"  # not 20


def test_each_attempt_sees_only_its_own_gpus(server: Any, flow: Path) -> None:
    doc = remote_run(server, str(flow), "gpus", "--seconds", "1")
    assert doc["phase"] == "SUCCEEDED", doc
    first, second, none = doc["outputs"]
    assert sorted([first, second]) == ["0", "1"]
    assert none == ""  # asked for none: sees none
