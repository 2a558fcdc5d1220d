"""Remote runs end to end: the real `loom` CLI against a real server subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from loom.executors import machine_capacity
from tests.conftest import REPO, remote_run, run_cli, write_module

pytestmark = pytest.mark.e2e

EXAMPLES = REPO / "examples"

FLOW = """
import asyncio
import os
import time

import loom

env = loom.TaskEnvironment("remote-flow", env_vars={"FLAVOUR": "remote"})


class Declined(Exception):
    pass


@env.task
async def square(x: int) -> int:
    print(f"squaring {x}")
    return x * x


@env.task
def sync_double(x: int) -> int:
    return 2 * x


@env.task
async def fan_out(n: int) -> int:
    with loom.group("squares"):
        squares = await asyncio.gather(*(square(i) for i in range(n)))
    return sum(squares) + sync_double(1)


@env.task
async def refuse(amount: int) -> int:
    raise Declined(f"cannot pay {amount}")


@env.task
async def catches(amount: int) -> str:
    try:
        await refuse(amount)
    except Declined as e:
        return f"caught {type(e).__name__}: {e}"
    return "nothing"


@env.task
async def not_a_number() -> list[float]:
    return [float("nan"), float("inf"), 1.5]


@env.task(retries=loom.RetryStrategy(2, backoff=0.1))
async def flaky(marker: str) -> int:
    with open(marker, "a") as f:
        f.write("x")
    with open(marker) as f:
        count = len(f.read())
    if count < 3:
        raise ConnectionError(f"attempt {count} failed")
    return count


@env.task(retries=loom.RetryStrategy(2, backoff=1.5))
async def slow_flaky(marker: str) -> int:
    return _count(marker)


def _count(marker: str) -> int:
    with open(marker, "a") as f:
        f.write("x")
    with open(marker) as f:
        count = len(f.read())
    if count < 3:
        raise ConnectionError(f"attempt {count} failed")
    return count


@env.task(timeout=1)
async def sleepy(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke"


@env.task
async def long_sleep(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke"


@env.task
async def flavour() -> str:
    return os.environ["FLAVOUR"]


@env.task(cache="auto")
async def cached(x: int) -> float:
    return time.time()


@env.task(cache=loom.Cache(serialize=True))
async def expensive(marker: str) -> int:
    with open(marker, "a") as f:
        f.write("x")
    await asyncio.sleep(1.0)  # the identical calls arrive meanwhile
    return 42


secret_env = loom.TaskEnvironment(
    "secret-env", secrets=[loom.Secret("api-token"), loom.Secret("cert", mount="/etc/cert")]
)


@secret_env.task
async def uses_secrets() -> list[str]:
    path = loom.ctx().secrets.path("cert")
    mode = oct(os.stat(path).st_mode & 0o777)
    return [os.environ["API_TOKEN"], path.read_text(), mode, str(path)]


@loom.TaskEnvironment("needs", secrets="never-set").task
async def needs_a_missing_secret() -> str:
    return "unreachable"


gpu_env = loom.TaskEnvironment("gpu-env", resources=loom.Resources(gpu="A100:1"))


@gpu_env.task
async def on_a_gpu() -> str:
    return "ran"


@env.task
async def many_expensive(marker: str, n: int) -> list[int]:
    return list(await asyncio.gather(*(expensive(marker) for _ in range(n))))
"""


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    return write_module(tmp_path / "remote_flow.py", FLOW)


def loom_cli(server: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=server.env)


def test_hello_example_runs_remotely(server: Any) -> None:
    result = loom_cli(server, "run", "--remote", str(EXAMPLES / "hello.py"), "main")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['Hello, Ada!', 'Hello, Grace!', 'Hello, Linus!']"
    assert "created run" in result.stderr


def test_fan_out_children_become_actions(server: Any, flow: Path) -> None:
    doc = remote_run(server, str(flow), "fan_out", "--n", "5")
    assert doc["phase"] == "SUCCEEDED" and doc["outputs"] == 30 + 2
    shown = loom_cli(server, "get", "run", doc["run"], "-o", "json")
    actions = json.loads(shown.stdout)["actions"]
    squares = [a for a in actions if a["task"] == "remote-flow.square"]
    assert len(squares) == 5 and {a["group"][0] for a in squares} == {"squares"}
    assert all(a["parent"] == "a0" and a["phase"] == "SUCCEEDED" for a in squares)
    logs = loom_cli(server, "get", "logs", doc["run"], squares[0]["name"])
    assert "squaring" in logs.stdout


def test_child_exception_types_survive(server: Any, flow: Path) -> None:
    doc = remote_run(server, str(flow), "catches", "--amount", "7")
    assert doc["outputs"] == "caught Declined: cannot pay 7"


def test_failed_run_reports_the_error_and_exits_non_zero(server: Any, flow: Path) -> None:
    result = loom_cli(server, "run", "--remote", str(flow), "refuse", "--amount", "3")
    assert result.returncode == 1
    assert "Declined: cannot pay 3" in result.stderr


def test_retries_are_recorded(server: Any, flow: Path, tmp_path: Path) -> None:
    doc = remote_run(server, str(flow), "flaky", "--marker", str(tmp_path / "marker"))
    assert doc["outputs"] == 3
    action = json.loads(loom_cli(server, "get", "action", doc["run"], "a0", "-o", "json").stdout)
    assert [a["phase"] for a in action["attempts"]] == ["FAILED", "FAILED", "SUCCEEDED"]


def test_the_retries_example_runs_remotely_with_the_servers_attempt_numbers(server: Any) -> None:
    # ctx().attempt is the server's attempt number (it was always 1 remotely)
    doc = remote_run(server, str(EXAMPLES / "retries_and_timeouts.py"), "main")
    assert doc["phase"] == "SUCCEEDED", doc
    fetched, timed, single = doc["outputs"]
    assert fetched.endswith("fetched on attempt 3")
    assert timed.startswith("timed out")
    assert single == "no retries: https://example.invalid/other unreachable (attempt 1)"


def test_a_nan_result_comes_back_as_nan(server: Any, flow: Path) -> None:
    # JSON has no NaN: it used to be refused (or turned into null) on the way to the server
    doc = remote_run(server, str(flow), "not_a_number")
    assert doc["phase"] == "SUCCEEDED", doc
    assert doc["outputs"] == ["nan", "inf", 1.5]


def test_timeouts_are_enforced(server: Any, flow: Path) -> None:
    started = time.monotonic()
    doc = remote_run(server, str(flow), "sleepy", "--seconds", "30")
    assert doc["phase"] == "FAILED" and doc["error"]["kind"] == "timeout"
    assert time.monotonic() - started < 20


def test_env_vars_reach_the_action(server: Any, flow: Path) -> None:
    assert remote_run(server, str(flow), "flavour")["outputs"] == "remote"


def test_cache_hits_across_runs(server: Any, flow: Path) -> None:
    first = remote_run(server, str(flow), "cached", "--x", "1")["outputs"]
    second = remote_run(server, str(flow), "cached", "--x", "1")
    assert second["outputs"] == first
    action = json.loads(loom_cli(server, "get", "action", second["run"], "a0", "-o", "json").stdout)
    assert action["cache"] == "hit"


def test_serialized_cache_runs_identical_calls_once(
    server: Any, flow: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "expensive-calls"
    doc = remote_run(server, str(flow), "many_expensive", "--marker", str(marker), "--n", "4")
    assert doc["phase"] == "SUCCEEDED" and doc["outputs"] == [42] * 4
    assert marker.read_text() == "x"  # one execution for four calls
    actions = json.loads(loom_cli(server, "get", "action", doc["run"], "-o", "json").stdout)
    children = [a for a in actions if a["task"].endswith("expensive") and a["parent"]]
    assert sorted(a["cache"] for a in children) == ["hit", "hit", "hit", "miss"]
    assert sum(len(a["attempts"]) for a in children) == 1


def test_secrets_from_the_server_reach_the_action_and_nothing_else(server: Any, flow: Path) -> None:
    created = subprocess.run(
        [sys.executable, "-m", "loom.cli", "create", "secret", "api-token"],
        input="s3cr3t-token\n",
        capture_output=True,
        text=True,
        env=server.env,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    assert "s3cr3t" not in created.stdout + created.stderr
    assert loom_cli(server, "create", "secret", "cert", "--value", "CERT").returncode == 0
    listed = loom_cli(server, "get", "secret", "-o", "json").stdout
    assert [s["key"] for s in json.loads(listed)] == ["api-token", "cert"]
    assert "s3cr3t" not in listed and "CERT" not in listed

    doc = remote_run(server, str(flow), "uses_secrets")
    token, cert, mode, path = doc["outputs"]
    assert (token, cert, mode) == ("s3cr3t-token", "CERT", "0o600")
    assert not Path(path).exists()  # the attempt removed its mounted secrets
    logs = loom_cli(server, "get", "logs", doc["run"], "a0").stdout
    assert "s3cr3t" not in logs and "s3cr3t" not in "\n".join(server.output)

    missing = remote_run(server, str(flow), "needs_a_missing_secret")
    assert missing["phase"] == "FAILED"
    message = missing["error"]["message"]
    assert "secret 'never-set' is not set on the server" in message
    assert "loom create secret never-set" in message
    deleted = loom_cli(server, "delete", "secret", "cert")
    assert deleted.returncode == 0 and "deleted secret 'cert'" in deleted.stdout


@pytest.mark.skipif(bool(machine_capacity().gpu), reason="this machine has a GPU")
def test_a_gpu_request_on_a_machine_without_gpus_fails_at_once(server: Any, flow: Path) -> None:
    started = time.monotonic()
    doc = remote_run(server, str(flow), "on_a_gpu")
    assert doc["phase"] == "FAILED" and time.monotonic() - started < 30
    assert "requests 1 GPU but the largest worker has none" in doc["error"]["message"]


def test_python_api(server: Any, tmp_path: Path, flow: Path) -> None:
    script = tmp_path / "drive.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(flow.parent)!r})
            import loom
            import remote_flow

            loom.init_from_config()
            run = loom.with_runcontext(mode="remote").run(remote_flow.fan_out, n=3)
            run.wait()
            print(run.name, run.outputs())
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env={**server.env},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1] == "7"


def test_detach_then_inspect_and_abort(server: Any, flow: Path) -> None:
    result = loom_cli(
        server, "run", "--remote", "--detach", str(flow), "sleepy", "--seconds", "0.5"
    )
    assert result.returncode == 0, result.stderr
    name = result.stdout.strip()
    runs = json.loads(loom_cli(server, "get", "run", "-o", "json").stdout)
    assert name in [r["name"] for r in runs]
    detached = loom_cli(
        server, "run", "--remote", "--detach", str(flow), "long_sleep", "--seconds", "60"
    )
    aborted = loom_cli(server, "abort", "run", detached.stdout.strip())
    assert aborted.returncode == 0 and "ABORTED" in aborted.stdout


def test_api_keys_from_the_cli(server: Any) -> None:
    refused = loom_cli(server, "create", "api-key", "ci-bot")  # neither admin nor a project
    assert (
        refused.returncode == 2 and "--project P" in refused.stderr and "--admin" in refused.stderr
    )
    created = loom_cli(server, "create", "api-key", "ci-bot", "--project", "default")
    assert created.returncode == 0, created.stderr
    assert "default: member" in created.stderr
    key = created.stdout.strip()
    listed = json.loads(loom_cli(server, "get", "api-key", "-o", "json").stdout)
    assert {k["name"]: k["projects"] for k in listed}["ci-bot"] == {"default": "member"}
    assert key not in json.dumps(listed)
    table = loom_cli(server, "get", "api-key").stdout
    assert "default: member" in table and "admin" in table
    viewer = loom_cli(
        server, "create", "api-key", "auditor", "--project", "default", "--role", "viewer",
        "-o", "json",
    )  # fmt: skip
    assert viewer.returncode == 0, viewer.stderr
    shown = json.loads(viewer.stdout)
    assert shown["name"] == "auditor" and shown["key"].startswith("loom_")
    unknown = loom_cli(server, "create", "api-key", "x", "--project", "nope")
    assert unknown.returncode == 1 and "loom create project nope" in unknown.stderr
    whoami = run_cli("get", "project", env={**server.env, "LOOM_API_KEY": key})
    assert whoami.returncode == 0, whoami.stderr
    assert loom_cli(server, "delete", "api-key", "ci-bot").returncode == 0
    refused = run_cli("get", "project", env={**server.env, "LOOM_API_KEY": key})
    assert refused.returncode == 1 and "refused the API key" in refused.stderr


def test_projects_from_the_cli(server: Any) -> None:
    created = loom_cli(server, "create", "project", "analytics")
    assert created.returncode == 0, created.stderr
    listed = json.loads(loom_cli(server, "get", "project", "-o", "json").stdout)
    assert {"default", "analytics"} <= {p["name"] for p in listed}


def test_unknown_run_is_a_clear_error(server: Any) -> None:
    result = loom_cli(server, "get", "run", "no-such-run")
    assert result.returncode == 1 and "no-such-run" in result.stderr


def test_a_stopped_server_gets_a_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("endpoint: http://127.0.0.1:9\napi_key: nope\n")
    result = run_cli("get", "run", env={"LOOM_CONFIG": str(config)})
    assert result.returncode == 1
    assert "cannot reach the server at http://127.0.0.1:9" in result.stderr
    assert "loom server start" in result.stderr


def test_follow_logs_carries_on_through_retries(server: Any, flow: Path, tmp_path: Path) -> None:
    detached = loom_cli(
        server, "run", "--remote", "--detach", str(flow), "slow_flaky",
        "--marker", str(tmp_path / "marker"),
    )  # fmt: skip
    assert detached.returncode == 0, detached.stderr
    followed = loom_cli(server, "get", "logs", detached.stdout.strip(), "--follow")
    assert followed.returncode == 0, followed.stderr
    assert "attempt 3 succeeded" in followed.stdout  # the last retry, reached by following
    assert "--- attempt 3 ---" in followed.stderr  # it started earlier and carried on
