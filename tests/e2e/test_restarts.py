"""Work survives the server: kill -9 it (three times) or stop it gracefully in the middle of
a fan-out whose tasks have no retries, and the run still succeeds, no leaf's body running
twice, and nothing left behind in the server's work and temporary directories."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loom.server import ServerSettings
from tests.conftest import (
    ServerProcess,
    _drop_schema,
    actions_of,
    remote_run,
    run_cli,
    start_server,
    write_module,
)

pytestmark = pytest.mark.e2e

FLOW = """
import asyncio
import os
import time

import loom

env = loom.TaskEnvironment("restarts")
warm = loom.TaskEnvironment(
    "restarts-warm", reusable=loom.ReusePolicy(replicas=4, concurrency=10, idle_ttl=3)
)


def _mark(log: str, i: int) -> None:
    # one line per execution of a body: a body that runs twice shows up twice
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    # (with who ran it, when, as which attempt: to tell what happened when one runs twice)
    os.write(fd, f"{i} {os.getpid()} {time.time():.3f} {loom.ctx().attempt}\\n".encode())
    os.close(fd)


@env.task
async def leaf(i: int, log: str, seconds: float) -> int:
    _mark(log, i)
    await asyncio.sleep(seconds)
    return i


@warm.task
async def warm_leaf(i: int, log: str, seconds: float) -> int:
    _mark(log, i)
    await asyncio.sleep(seconds)
    return i


@env.task(retries=1)
async def dies_then_fails_then_counts(marker: str) -> int:
    # attempt 1: the process dies (lost: the server's allowance retries it); attempt 2: a
    # failure of the task's own (its one retry); attempt 3: done
    attempt = loom.ctx().attempt
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), 9)
    if attempt == 2:
        raise ValueError("once more")
    return attempt


@env.task
async def fan_out(n: int, log: str, seconds: float, reuse: bool) -> int:
    task = warm_leaf if reuse else leaf
    return sum(await asyncio.gather(*(task(i, log, seconds) for i in range(n))))
"""

LEAVES = 300
#: 0.05 CPU each: 40 leaves at once on 2 CPUs, so that the fan-out lasts through the restarts
ENV = {"LOOM_DEFAULT_CPU": "0.05"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {}
        return
    import psycopg

    postgres_url = request.getfixturevalue("postgres_url")
    schema = "restarts_" + os.urandom(4).hex()
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield {"LOOM_DATABASE_URL": f"{postgres_url}?options=-csearch_path%3D{schema}"}
    _drop_schema(plain, schema)


def _marks(log: Path) -> list[int]:
    return [int(line.split()[0]) for line in log.read_text().splitlines()] if log.exists() else []


def _api(server: ServerProcess, path: str) -> Any:
    r = httpx.get(f"{server.endpoint}/api/v1{path}", headers=server.headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _restarted(
    server: ServerProcess, sig: int, loom_home: Path, env: dict[str, str]
) -> ServerProcess:
    port = int(server.endpoint.rsplit(":", 1)[1])
    print(f"stopping the server at {time.time():.3f}")
    server.stop(sig, restart=True)
    again = start_server(server.data_dir, home=loom_home, env=env, port=port)
    print(f"started again at {time.time():.3f}")
    return again


@pytest.mark.parametrize("reuse", [False, True], ids=["plain", "reuse"])
def test_kill_9_three_times_during_a_fan_out_loses_and_repeats_nothing(
    tmp_path: Path, loom_home: Path, database_env: dict[str, str], reuse: bool
) -> None:
    _survives_restarts(tmp_path, loom_home, database_env, reuse, [signal.SIGKILL] * 3)


def test_a_graceful_restart_during_a_fan_out_fails_nothing(tmp_path: Path, loom_home: Path) -> None:
    _survives_restarts(tmp_path, loom_home, {}, False, [signal.SIGTERM])


def _survives_restarts(
    tmp_path: Path, loom_home: Path, database_env: dict[str, str], reuse: bool, signals: list[int]
) -> None:
    env = {**ENV, **database_env}
    flow = write_module(tmp_path / "restart_flow.py", FLOW)
    log = tmp_path / "executions.log"
    server = start_server(tmp_path / "server-data", home=loom_home, env=env)
    # where the server keeps its warm workers' sockets and work dirs
    scratch = ServerSettings.load({}, data_dir=server.data_dir).session_sockets_dir()
    try:
        submitted = run_cli(
            "run", "--remote", "--detach", "-o", "json", str(flow), "fan_out",
            "--n", str(LEAVES), "--log", str(log), "--seconds", "1.5",
            "--reuse" if reuse else "--no-reuse",
            env=server.env,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        name = json.loads(submitted.stdout)["run"]
        for k, sig in enumerate(signals, start=1):
            deadline = time.monotonic() + 120
            while len(_marks(log)) < k * LEAVES // (len(signals) + 1):
                assert time.monotonic() < deadline, f"only {len(_marks(log))} leaves ran"
                time.sleep(0.1)
            server = _restarted(server, sig, loom_home, env)
        deadline = time.monotonic() + 240
        while (doc := _api(server, f"/runs/{name}"))["phase"] not in (
            "SUCCEEDED",
            "FAILED",
            "ABORTED",
        ):
            assert time.monotonic() < deadline, doc["phase"]
            time.sleep(0.5)
        assert doc["phase"] == "SUCCEEDED", doc.get("error")
        assert _api(server, f"/runs/{name}/actions/a0/outputs")["value"] == sum(range(LEAVES))
        marks = _marks(log)
        twice = sorted({i for i in marks if marks.count(i) > 1})
        if twice:  # what happened to them
            from collections import Counter

            actions = _api(server, f"/runs/{name}/actions")
            errors = Counter(
                (a["number"], a["error"]["message"])
                for action in actions
                for a in action["attempts"]
                if a["error"]
            )
            print("\n".join(f"{n} x attempt {k}: {m}" for (k, m), n in sorted(errors.items())))
            print("\n".join(x for x in log.read_text().splitlines() if int(x.split()[0]) in twice))
        assert not twice, f"leaves whose body ran more than once: {twice}"
        assert sorted(marks) == list(range(LEAVES))
        # once the processes are gone, nothing is left of them in the work dirs
        deadline = time.monotonic() + 30
        while actions_of(server.data_dir) or any((server.data_dir / "work").iterdir()):
            assert time.monotonic() < deadline, list((server.data_dir / "work").rglob("*"))
            time.sleep(0.2)
        # the pools of the killed servers went with their last workers: only the live
        # server's may remain
        while len(list(scratch.glob("loom-workers-*"))) > (1 if reuse else 0):
            assert time.monotonic() < deadline, list(scratch.glob("loom-workers-*"))
            time.sleep(0.2)
    finally:
        server.stop()


def test_attempt_numbers_are_the_servers_across_lost_and_failed_attempts(
    tmp_path: Path, loom_home: Path
) -> None:
    flow = write_module(tmp_path / "restart_flow.py", FLOW)
    server = start_server(tmp_path / "server-data", home=loom_home, env=ENV)
    try:
        doc = remote_run(
            server, str(flow), "dies_then_fails_then_counts", "--marker", str(tmp_path / "m")
        )
        assert doc["phase"] == "SUCCEEDED" and doc["outputs"] == 3, doc
        attempts = _api(server, f"/runs/{doc['run']}/actions/a0")["attempts"]
        assert [a["error"]["kind"] if a["error"] else a["phase"] for a in attempts] == [
            "worker_lost",
            "user",
            "SUCCEEDED",
        ]
    finally:
        server.stop()
