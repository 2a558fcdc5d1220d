"""``loom server start|status|stop`` through the real executable."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, free_port, run_cli

pytestmark = pytest.mark.e2e


def test_detached_server_lifecycle(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"LOOM_HOME": str(data), "LOOM_CONFIG": str(data / "config.yaml")}
    port = str(free_port())
    started = run_cli("server", "start", "--detach", "--port", port, env=env)
    try:
        assert started.returncode == 0, started.stderr + started.stdout
        assert f"loom server ready at http://127.0.0.1:{port}" in started.stdout
        config = data / "config.yaml"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        doc = yaml.safe_load(config.read_text())
        assert doc["endpoint"] == f"http://127.0.0.1:{port}" and doc["api_key"]
        status = run_cli("server", "status", env=env)
        assert status.returncode == 0 and "is up at" in status.stdout
        again = run_cli("server", "start", "--detach", "--port", port, env=env)
        assert again.returncode == 1 and "already running" in again.stderr
        projects = run_cli("get", "project", env=env)
        assert projects.returncode == 0 and "default" in projects.stdout
    finally:
        stopped = run_cli("server", "stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    down = run_cli("server", "status", env=env)
    assert down.returncode == 1 and "cannot reach the server" in down.stderr
    assert run_cli("server", "stop", env=env).returncode == 1


def test_refuses_a_non_loopback_bind(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"LOOM_HOME": str(data), "LOOM_CONFIG": str(data / "config.yaml")}
    result = run_cli("server", "start", "--host", "0.0.0.0", "--port", "0", env=env)
    assert result.returncode != 0
    assert "loopback" in (result.stderr + result.stdout)


def _foreground(tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, str], int]:
    """`loom server start` in the foreground, as in a terminal; with its server's pid."""
    data = tmp_path / "data"
    env = {"LOOM_HOME": str(data), "LOOM_CONFIG": str(data / "config.yaml")}
    cli = subprocess.Popen(
        [sys.executable, "-m", "loom.cli", "server", "start", "--port", str(free_port())],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert cli.stdout is not None
    for line in cli.stdout:
        if "loom server ready at" in line:
            break
    else:
        raise AssertionError(f"no ready line; exit {cli.wait()}")
    pid = int((data / "server.pid").read_text())
    return cli, env, pid


def _gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_sigterm_to_a_foreground_server_stops_the_server(tmp_path: Path) -> None:
    cli, _, pid = _foreground(tmp_path)
    try:
        cli.send_signal(signal.SIGTERM)  # what a terminal's parent, systemd or CI sends
        assert cli.wait(20) == 0
        assert _gone(pid), "the server outlived the CLI that started it"
        assert not (tmp_path / "data" / "server.pid").exists()
    finally:
        cli.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_loom_server_stop_finds_a_foreground_server(tmp_path: Path) -> None:
    cli, env, pid = _foreground(tmp_path)
    try:
        again = run_cli("server", "start", "--detach", env=env)
        assert again.returncode == 1 and "already running" in again.stderr
        stopped = run_cli("server", "stop", env=env)
        assert stopped.returncode == 0, stopped.stderr
        assert cli.wait(20) == 0 and _gone(pid)
    finally:
        cli.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stop(env: dict[str, str], *args: str) -> None:
    run_cli("server", "stop", *args, env=env)


def test_the_client_configuration_follows_the_port_the_server_serves(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"LOOM_HOME": str(data), "LOOM_CONFIG": str(data / "config.yaml")}
    first, second = str(free_port()), str(free_port())
    assert run_cli("server", "start", "--detach", "--port", first, env=env).returncode == 0
    _stop(env)
    try:
        again = run_cli("server", "start", "--detach", "--port", second, env=env)
        assert again.returncode == 0, again.stderr
        status = run_cli("server", "status", env=env)
        assert status.returncode == 0, status.stderr
        assert f"is up at http://127.0.0.1:{second}" in status.stdout
        assert run_cli("get", "project", env=env).returncode == 0
    finally:
        _stop(env)


def test_a_new_config_file_on_an_existing_data_dir_gets_a_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"LOOM_HOME": str(data), "LOOM_CONFIG": str(data / "config.yaml")}
    assert (
        run_cli("server", "start", "--detach", "--port", str(free_port()), env=env).returncode == 0
    )
    _stop(env)
    fresh = {**env, "LOOM_CONFIG": str(tmp_path / "elsewhere" / "config.yaml")}
    try:
        started = run_cli("server", "start", "--detach", "--port", str(free_port()), env=fresh)
        assert started.returncode == 0, started.stderr
        doc = yaml.safe_load((tmp_path / "elsewhere" / "config.yaml").read_text())
        assert doc["api_key"] and doc["endpoint"]
        projects = run_cli("get", "project", env=fresh)
        assert projects.returncode == 0 and "default" in projects.stdout
    finally:
        _stop(fresh)


def test_stop_and_status_find_a_server_started_with_a_data_dir(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"LOOM_HOME": str(home), "LOOM_CONFIG": str(home / "config.yaml")}
    data = tmp_path / "elsewhere"
    started = run_cli(
        "server", "start", "--detach", "--port", str(free_port()), "--data-dir", str(data),
        env=env,
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr
        status = run_cli("server", "status", "-o", "json", env=env)
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert doc["up"] is True and doc["data_dir"] == str(data.resolve()) and doc["pid"]
    finally:
        stopped = run_cli("server", "stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert not (data / "server.pid").exists()
    again = run_cli("server", "stop", env={**env, "LOOM_CONFIG": str(tmp_path / "none.yaml")})
    assert again.returncode == 1 and "loom server stop --data-dir" in again.stderr
