"""Memory requests are enforced on a real server: an attempt that holds more than its task's
``Resources(memory=...)`` is killed, and fails with an ``OOMError`` naming the limit and the
peak, which a parent can catch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loom.executors._memory import group_rss
from tests.conftest import remote_run, run_cli, write_module

pytestmark = pytest.mark.e2e

FLOW = """
import time

import loom

env = loom.TaskEnvironment("mem")
small = loom.TaskEnvironment("mem-small", resources=loom.Resources(memory="100Mi"))
roomy = loom.TaskEnvironment("mem-roomy", resources=loom.Resources(memory="400Mi"))


@small.task
def hog(mib: int) -> int:
    block = bytearray(mib << 20)  # zero-filled: every page is touched
    time.sleep(10)  # (killed long before)
    return len(block)


@env.task
async def careful(mib: int) -> str:
    try:
        return str(await hog.aio(mib))
    except loom.errors.OOMError as e:
        return f"caught: {e}"


@roomy.task
def modest() -> int:
    return len(bytearray(50 << 20))


# two attempts at once in one worker: it may hold 2 x 150 MiB
warm = loom.TaskEnvironment(
    "mem-warm",
    resources=loom.Resources(memory="150Mi"),
    reusable=loom.ReusePolicy(replicas=1, concurrency=2),
)


@warm.task
async def warm_hog(mib: int) -> int:
    import asyncio

    block = bytearray(mib << 20)
    await asyncio.sleep(10)  # (killed long before)
    return len(block)


@warm.task
async def warm_modest() -> int:
    return len(bytearray(50 << 20))
"""


def test_an_attempt_over_its_memory_limit_fails_naming_the_limit(
    server: Any, tmp_path: Path
) -> None:
    flow = write_module(tmp_path / "mem_flow.py", FLOW)
    doc = remote_run(server, str(flow), "hog", "--mib", "400")
    assert doc["phase"] == "FAILED", doc
    error = doc["error"]
    assert error["type"] == "OOMError" and error["kind"] == "oom"
    assert "100 MiB" in error["message"] and "held" in error["message"]
    # a parent catches it, as Flyte 2 users do
    caught = remote_run(server, str(flow), "careful", "--mib", "400")
    assert caught["phase"] == "SUCCEEDED", caught
    assert caught["outputs"].startswith("caught: ") and "100 MiB" in caught["outputs"]
    # within its request, a task is left alone
    assert remote_run(server, str(flow), "modest")["outputs"] == 50 << 20
    shown = run_cli("get", "action", doc["run"], "a0", "-o", "json", env=server.env)
    assert json.loads(shown.stdout)["error"]["type"] == "OOMError"


def test_a_warm_worker_over_its_attempts_limits_fails_them_naming_the_limit(
    server: Any, tmp_path: Path
) -> None:
    """A warm worker runs ``concurrency`` attempts in one process, so it may hold that many
    times the task's request; past that it is killed, and its attempts fail as over their
    limit."""
    flow = write_module(tmp_path / "mem_flow.py", FLOW)
    doc = remote_run(server, str(flow), "warm_hog", "--mib", "500")
    assert doc["phase"] == "FAILED", doc
    error = doc["error"]
    assert error["type"] == "OOMError" and error["kind"] == "oom", error
    assert "300 MiB" in error["message"] and "warm worker" in error["message"], error
    assert remote_run(server, str(flow), "warm_modest")["outputs"] == 50 << 20


def test_group_rss_sums_a_process_group() -> None:
    import os

    here = os.getpgid(0)
    totals = group_rss({here, 999_999_999})
    assert totals[here] > 10 << 20 and totals[999_999_999] == 0
