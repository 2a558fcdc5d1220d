"""Every example runs, through the CLI, with the output it promises."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.e2e

EXAMPLES = REPO / "examples"


def run_example(name: str, task: str = "main", *args: str, env: dict[str, str] | None = None):
    result = run_cli("run", "-o", "json", str(EXAMPLES / name), task, *args, env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)["outputs"]


def test_hello() -> None:
    assert run_example("hello.py") == ["Hello, Ada!", "Hello, Grace!", "Hello, Linus!"]


def test_retries_and_timeouts() -> None:
    fetched, timed, single = run_example("retries_and_timeouts.py")
    assert fetched.endswith("fetched on attempt 3")
    assert timed.startswith("timed out:") and "0.5 s" in timed
    assert single == "no retries: https://example.invalid/other unreachable (attempt 1)"


def test_caching_second_run_hits() -> None:
    first = run_cli("run", "-o", "json", str(EXAMPLES / "caching.py"), "main")
    second = run_cli("run", "-o", "json", str(EXAMPLES / "caching.py"), "main")
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["outputs"] == b["outputs"] == {"sum_of_squares": 332833500, "doubled": 2000}
    assert b["duration_s"] < 0.5 <= a["duration_s"]


def test_env_and_secrets() -> None:
    out = run_example("env_and_secrets.py", env={"LOOM_SECRET_GREETING_TOKEN": "abcd"})
    assert out == "hello, world (token has 4 characters)"
    missing = run_cli("run", str(EXAMPLES / "env_and_secrets.py"), "main")
    assert missing.returncode == 1
    assert "secret 'greeting-token' is not set" in missing.stderr


def test_rich_types() -> None:
    station = '{"name": "n", "readings": [{"sensor": "a", "value": 2.5}]}'
    out = run_example("rich_types.py", "summarise", "--station", station, "--unit", "F")
    assert out == {"station": "n", "mean": 2.5, "unit": "F", "day": "2026-01-01", "warning": None}


def test_files() -> None:
    assert run_example("files.py") == 6


def test_dataframes() -> None:
    assert run_example("dataframes.py") == 28.5


def test_sync_tasks_run_concurrently() -> None:
    out = run_example("sync_tasks.py")
    assert out["total"] == 450 and out["seconds"] < 1.5


def test_errors() -> None:
    assert run_example("errors.py") == "declined: cannot withdraw 150 from 100"
    crash = run_cli("run", str(EXAMPLES / "errors.py"), "crash")
    assert crash.returncode == 1 and "ValueError: amount must be positive" in crash.stderr


def test_observability() -> None:
    out = run_example("observability.py")
    assert out["total"] == "9" and out["action"] == "a0"


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in EXAMPLES.glob("*.py")),
)
def test_every_example_runs_as_a_script(name: str) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "LOOM_SECRET_GREETING_TOKEN": "x"},
    )
    assert result.returncode == 0, result.stderr


def test_interactive_tasks_just_run_locally() -> None:
    assert run_example("interactive.py", "train", "--epochs", "2") == 0.75
    assert run_example("interactive.py", "explore") == 0.5
