"""A real ``python -m loom.server`` subprocess, running real action processes (a fake runtime
that speaks the runtime's protocol, until ``loom.runtime`` has its remote entry point)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import ServerProcess, _drop_schema, actions_of, start_server
from tests.server.conftest import make_bundle, task_spec

pytestmark = pytest.mark.e2e

FAKE_RUNTIME = Path(__file__).with_name("fake_runtime.py")
FAKE_ENV = {"LOOM_RUNTIME_COMMAND": f"{sys.executable} {FAKE_RUNTIME}"}
TERMINAL = {"SUCCEEDED", "FAILED", "ABORTED"}


class Client:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.http = httpx.Client(
            base_url=f"{server.endpoint}/api/v1", headers=server.headers, timeout=60
        )
        digest, data = make_bundle()
        self.http.put(f"/bundles/{digest}", content=data).raise_for_status()
        self.bundle = digest

    def run(self, attr: str, inputs: dict[str, Any] | None = None, **task: Any) -> str:
        body = {
            "bundle": self.bundle,
            "root": {"name": "x", "task": task_spec(f"env.{attr}", **task), "inputs": inputs or {}},
        }
        r = self.http.post("/runs", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["name"])

    def wait(self, run: str, action: str = "a0", timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            info: dict[str, Any] = self.http.get(
                f"/runs/{run}/actions/{action}/wait", params={"timeout": 5}
            ).json()
            if info["phase"] in TERMINAL:
                return info
            assert time.monotonic() < deadline, info

    def wait_phase(self, run: str, phase: str, action: str = "a0") -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while True:
            info: dict[str, Any] = self.http.get(f"/runs/{run}/actions/{action}").json()
            if info["phase"] == phase:
                return info
            assert time.monotonic() < deadline, info
            time.sleep(0.05)

    def outputs(self, run: str, action: str = "a0") -> Any:
        return self.http.get(f"/runs/{run}/actions/{action}/outputs").json()["value"]

    def logs(self, run: str, action: str = "a0", **params: Any) -> str:
        return self.http.get(f"/runs/{run}/actions/{action}/logs", params=params).text


@pytest.fixture
def fake_server(tmp_path: Path, loom_home: Path) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path / "data", home=loom_home, env=FAKE_ENV)
    yield proc
    proc.stop()


@pytest.fixture
def client(fake_server: ServerProcess) -> Client:
    return Client(fake_server)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _pid_from_log(text: str) -> int:
    for line in text.splitlines():
        if line.startswith("fake runtime:"):
            return int(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no pid in log: {text!r}")


# -- start, configuration, stop ---------------------------------------------------------------


def test_first_start_writes_the_client_config_and_restarts_reuse_it(
    tmp_path: Path, loom_home: Path
) -> None:
    data = tmp_path / "data"
    server = start_server(data, home=loom_home)
    ready = [line for line in server.output if line.startswith("loom server ready at")]
    assert ready == [f"loom server ready at {server.endpoint}"]
    config = yaml.safe_load(server.config_path.read_text())
    assert list(config) == ["endpoint", "api_key", "project", "domain"]
    assert config["endpoint"] == server.endpoint and config["project"] == "default"
    assert config["domain"] == "development"
    assert stat.S_IMODE(server.config_path.stat().st_mode) == 0o600
    assert httpx.get(f"{server.endpoint}/api/v1/whoami", headers=server.headers).status_code == 200
    assert server.stop(signal.SIGTERM) == 0
    before = server.config_path.read_text()

    port = int(server.endpoint.rsplit(":", 1)[1])
    again = start_server(data, home=loom_home, port=port)
    try:
        assert server.config_path.read_text() == before
        assert again.api_key == server.api_key
        r = httpx.get(f"{again.endpoint}/api/v1/whoami", headers=server.headers)
        assert r.json()["name"] == "admin"
    finally:
        assert again.stop(signal.SIGINT) == 0

    server.config_path.unlink()
    third = start_server_without_config(data, loom_home)
    try:
        assert any("loom create api-key" in line for line in third.output)
        assert not server.config_path.exists()
    finally:
        third.stop()


def start_server_without_config(data: Path, home: Path) -> ServerProcess:
    """start_server reads the key from the config file; here there is none to read."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "loom.server", "--data-dir", str(data), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("LOOM_")},
            "LOOM_CONFIG": str(data / "config.yaml"),
        },
    )
    assert proc.stdout is not None
    output = []
    for line in proc.stdout:
        output.append(line.strip())
        if line.startswith("loom server ready"):
            break
    return ServerProcess("", "", data, data / "config.yaml", {}, proc, output)


def test_new_admin_key_flag_rewrites_the_config(tmp_path: Path, loom_home: Path) -> None:
    first = start_server(tmp_path / "d", home=loom_home)
    first.stop()
    second = start_server(tmp_path / "d", home=loom_home, args=("--new-admin-key",))
    try:
        assert second.api_key != first.api_key
        r = httpx.get(f"{second.endpoint}/api/v1/whoami", headers=second.headers)
        assert r.json() == {**r.json(), "name": "admin-2", "admin": True}
        assert httpx.get(f"{second.endpoint}/api/v1/whoami", headers=first.headers).is_success
    finally:
        second.stop()


def test_non_loopback_hosts_are_refused(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "loom.server", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "--allow-remote" in r.stderr
    assert not (tmp_path / "server.db").exists()


def test_the_server_fixture(server: ServerProcess, loom_home: Path) -> None:
    assert server.env == {"LOOM_CONFIG": str(server.config_path), "LOOM_HOME": str(loom_home)}
    assert server.config_path.parent == server.data_dir
    r = httpx.get(f"{server.endpoint}/api/v1/projects", headers=server.headers)
    assert [p["name"] for p in r.json()] == ["default"]


# -- running actions --------------------------------------------------------------------------


def test_a_run_fans_out_through_real_processes(client: Client) -> None:
    run = client.run("fanout", {"n": 3}, env_vars={"GREETING": "hi"})
    info = client.wait(run)
    assert info["phase"] == "SUCCEEDED", (info, client.logs(run))
    assert client.outputs(run) == [0, 1, 2]
    actions = client.http.get(f"/runs/{run}/actions").json()
    assert [a["name"] for a in actions] == ["a0", "a0-0", "a0-1", "a0-2"]
    assert client.outputs(run, "a0-1") == {"inputs": {"i": 1}, "env": "hi"}
    assert "fake runtime: fanout attempt 1" in client.logs(run)
    assert client.http.get(f"/runs/{run}").json()["phase"] == "SUCCEEDED"


def test_parents_waiting_on_children_do_not_block_a_single_slot(
    tmp_path: Path, loom_home: Path
) -> None:
    proc = start_server(
        tmp_path / "d", home=loom_home, env={**FAKE_ENV, "LOOM_EXECUTOR_SLOTS": "1"}
    )
    try:
        client = Client(proc)
        run = client.run("fanout", {"n": 2, "child": "fanout", "child_inputs": {"n": 1}})
        info = client.wait(run, timeout=90)
        assert info["phase"] == "SUCCEEDED", info
        assert client.outputs(run) == [[0], [0]]
        # three levels deep on one slot: every waiting parent gave its slot to its children
        names = {a["name"]: a["phase"] for a in client.http.get(f"/runs/{run}/actions").json()}
        assert names["a0-0-0"] == "SUCCEEDED" and names["a0-1-0"] == "SUCCEEDED"
    finally:
        proc.stop()


def test_retries_start_new_processes(client: Client) -> None:
    run = client.run("flaky", {"succeed_on": 3}, retries={"count": 3, "backoff_s": 0.05})
    info = client.wait(run)
    assert info["phase"] == "SUCCEEDED" and client.outputs(run) == 3
    assert [a["phase"] for a in info["attempts"]] == ["FAILED", "FAILED", "SUCCEEDED"]
    assert "attempt 2" in client.logs(run, attempt=2)


def test_a_timeout_kills_the_process_group(client: Client) -> None:
    started = time.monotonic()
    run = client.run("sleep", {"s": 60}, timeout_s=1.5)
    info = client.wait(run)
    assert time.monotonic() - started < 20
    error = info["error"]
    assert info["phase"] == "FAILED" and error["kind"] == "timeout"
    assert error["type"] == "MaxRuntimeExceededError"
    pid = _pid_from_log(client.logs(run))
    assert not _alive(pid)


def test_a_process_exiting_without_a_report_is_worker_lost(client: Client) -> None:
    run = client.run("exit", {"code": 3})
    info = client.wait(run)
    assert info["error"]["kind"] == "worker_lost"
    assert info["error"]["message"] == "worker lost: process exited with code 3"
    assert "exiting without a report" in client.logs(run)


def test_leftover_processes_are_killed_when_an_attempt_ends(client: Client, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    run = client.run("grandchild", {"pidfile": str(pidfile)})
    assert client.wait(run)["phase"] == "SUCCEEDED"
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, "the task's leftover process survived"
        time.sleep(0.05)


def test_abort_kills_running_processes(client: Client) -> None:
    run = client.run("sleep", {"s": 60})
    client.wait_phase(run, "RUNNING")
    deadline = time.monotonic() + 20
    while "fake runtime" not in (text := client.logs(run)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = _pid_from_log(text)
    r = client.http.post(f"/runs/{run}/abort")
    assert r.json()["phase"] == "ABORTED"
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, "aborted process still alive"
        time.sleep(0.05)
    info = client.http.get(f"/runs/{run}/actions/a0").json()
    assert info["phase"] == "ABORTED" and info["error"]["kind"] == "aborted"


def test_logs_follow_streams_until_the_attempt_ends(client: Client) -> None:
    run = client.run("sleep", {"s": 1.0})
    lines = []
    with client.http.stream("GET", f"/runs/{run}/actions/a0/logs", params={"follow": "true"}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(line)
    assert lines[0].startswith("fake runtime: sleep")
    assert [line for line in lines if line.startswith("tick")] == [f"tick {i}" for i in range(10)]
    assert client.wait(run)["phase"] == "SUCCEEDED"


def test_events_stream_as_server_sent_events(client: Client) -> None:
    run = client.run("ok")
    received: list[dict[str, Any]] = []
    ids: list[int] = []

    def listen() -> None:
        with client.http.stream("GET", "/events", params={"run": run}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("id: "):
                    ids.append(int(line[4:]))
                if line.startswith("data: "):
                    received.append(json.loads(line[6:]))
                    if received[-1]["kind"] == "run" and received[-1]["phase"] in TERMINAL:
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    listener.join(60)
    assert not listener.is_alive()
    phases = [(e["kind"], e["action"], e["phase"]) for e in received]
    assert phases[0] == ("run", None, "QUEUED")
    assert ("action", "a0", "RUNNING") in phases
    assert phases[-1] == ("run", None, "SUCCEEDED")
    assert ids == [e["seq"] for e in received] == sorted(ids)
    assert all(e["run"] == run for e in received)
    # resuming after an event replays only what came later
    with client.http.stream(
        "GET", "/events", params={"run": run}, headers={"Last-Event-ID": str(ids[-2])}
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                assert json.loads(line[6:])["seq"] == ids[-1]
                break


def test_sigterm_stops_the_server_promptly_and_leaves_its_actions_running(
    fake_server: ServerProcess, client: Client
) -> None:
    run = client.run("sleep", {"s": 60})
    deadline = time.monotonic() + 20
    while "fake runtime" not in (text := client.logs(run)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = _pid_from_log(text)
    started = time.monotonic()
    assert fake_server.stop(signal.SIGTERM, restart=True) == 0
    assert time.monotonic() - started < 10
    # a graceful stop fails nothing: the attempt goes on, for the next server to adopt
    assert _alive(pid)
    assert pid in actions_of(fake_server.data_dir)


def test_kill_9_and_restart_adopts_running_actions_and_starts_queued_ones(
    tmp_path: Path, loom_home: Path
) -> None:
    data = tmp_path / "d"
    env = {**FAKE_ENV, "LOOM_EXECUTOR_SLOTS": "1"}
    first = start_server(data, home=loom_home, env=env)
    client = Client(first)
    running = client.run("sleep", {"s": 8})  # no retries: it must not need one
    queued = client.run("ok")
    deadline = time.monotonic() + 20
    while "fake runtime" not in (text := client.logs(running)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    orphan = _pid_from_log(text)
    assert client.http.get(f"/runs/{queued}").json()["phase"] == "QUEUED"
    first.stop(signal.SIGKILL, restart=True)
    assert _alive(orphan)  # its own session: it survives the server's death...

    port = int(first.endpoint.rsplit(":", 1)[1])
    second = start_server(data, home=loom_home, env=env, port=port)
    try:
        client = Client(second)
        info = client.wait(running)
        # ...and the restarted server adopts it: the same attempt reports, nothing is lost
        assert info["phase"] == "SUCCEEDED", info
        (attempt,) = info["attempts"]
        assert attempt["phase"] == "SUCCEEDED"
        assert "tick 0" in client.logs(running, attempt=1)  # its log, from before and after
        assert client.wait(queued)["phase"] == "SUCCEEDED"
        deadline = time.monotonic() + 10
        while _alive(orphan) or any((data / "work").iterdir()):
            # its work dir goes with it, nothing is left behind
            assert time.monotonic() < deadline, list((data / "work").rglob("*"))
            time.sleep(0.05)
    finally:
        second.stop()


# -- other storage ----------------------------------------------------------------------------


def test_on_postgresql(tmp_path: Path, loom_home: Path, postgres_url: str) -> None:
    import psycopg

    schema = "e2e_" + os.urandom(4).hex()
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{postgres_url}?options=-csearch_path%3D{schema}"
    proc = start_server(tmp_path / "d", home=loom_home, env={**FAKE_ENV, "LOOM_DATABASE_URL": url})
    try:
        client = Client(proc)
        run = client.run("fanout", {"n": 2})
        assert client.wait(run)["phase"] == "SUCCEEDED"
        assert client.outputs(run) == [0, 1]
        assert not (tmp_path / "d" / "server.db").exists()
    finally:
        proc.stop()
        _drop_schema(plain, schema)


def test_on_s3(tmp_path: Path, loom_home: Path, moto_endpoint: str, s3_bucket: str) -> None:
    import boto3

    env = {
        **FAKE_ENV,
        "LOOM_OBJECT_STORE": f"s3://{s3_bucket}/loom",
        "LOOM_S3_ENDPOINT_URL": moto_endpoint,
    }
    proc = start_server(tmp_path / "d", home=loom_home, env=env)
    try:
        client = Client(proc)
        run = client.run("ok", {"x": 1})
        assert client.wait(run)["phase"] == "SUCCEEDED"
        assert client.outputs(run)["inputs"] == {"x": 1}
        assert "fake runtime: ok" in client.logs(run)
        digest = client.bundle
        assert client.http.get(f"/bundles/{digest}").content == make_bundle()[1]
        s3 = boto3.client("s3", endpoint_url=moto_endpoint)
        log_key = f"loom/logs/{run}/a0/1.log"
        deadline = time.monotonic() + 15
        while True:  # the log moves to the store once the executor has seen the process exit
            keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]}
            if log_key in keys or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert f"loom/bundles/{digest.removeprefix('sha256:')}.tar.gz" in keys
        assert log_key in keys
        assert not (tmp_path / "d" / "objects").exists()
    finally:
        proc.stop()
