"""Shared fixtures: every test gets its own loom home, so caches and config never leak."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import loom._run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def loom_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty ``LOOM_HOME`` and no inherited ``LOOM_*`` settings (but ``LOOM_IDE_DIR``, the
    shared cache of IDE installs, is kept: see ``ide_installs``)."""
    home = tmp_path / "loom-home"
    for key in list(os.environ):
        if key.startswith("LOOM_") and key != "LOOM_IDE_DIR":
            monkeypatch.delenv(key)
    monkeypatch.setenv("LOOM_HOME", str(home))
    monkeypatch.setattr(loom._run, "_settings", None)
    yield home


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``loom`` executable in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "loom.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd or REPO,
        timeout=120,
    )


def remote_run(server: Any, *args: str) -> dict[str, Any]:
    """``loom run --remote -o json ARGS`` against ``server`` (a ``ServerProcess``): the run's
    JSON document (run, phase, outputs or error)."""
    result = run_cli("run", "--remote", "-o", "json", *args, env=server.env)
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def run_actions(server: Any, run: str) -> list[dict[str, Any]]:
    """The actions of ``run``, as ``loom get run RUN -o json`` shows them."""
    shown = run_cli("get", "run", run, "-o", "json", env=server.env)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)["actions"]


def free_port() -> int:
    """A free loopback port for a test's server, below the ephemeral range: a port the kernel
    picked (bind to 0) can be taken, before the server binds it, as the local port of any
    outgoing connection on this busy machine (``Address already in use``)."""
    import random
    import socket

    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


def write_module(path: Path, source: str) -> Path:
    """Write a task file for a test and return its path."""
    import textwrap

    path.write_text(textwrap.dedent(source))
    return path


# -- server and database fixtures --
# Owned by the control plane (loom.server). `postgres_url` is a throwaway PostgreSQL database
# per test session; `database_url` runs a test on SQLite and on PostgreSQL (a fresh schema
# each); `server` is a real `python -m loom.server` subprocess.

import dataclasses  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_READY = re.compile(r"^loom server ready at (http://\S+)$")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a database created for this test session, dropped afterwards."""
    import psycopg

    name = f"loom_test_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL is needed at {POSTGRES_ADMIN_URL} (trust auth): {e}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The server's database for one test: an SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'server.db'}"
        return
    import psycopg

    base: str = request.getfixturevalue("postgres_url")
    schema = f"t_{secrets.token_hex(6)}"
    plain = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        _drop_schema(plain, schema)


def _drop_schema(url: str, schema: str) -> None:
    """Drop a test's schema; a session the test left open must not hang the suite."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        try:
            for _ in range(5):
                try:
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
                    return
                except psycopg.errors.DeadlockDetected:
                    # a straggling reader of this schema (a background flush of the test's
                    # server) locked tables in the other order: PostgreSQL picked us; again
                    time.sleep(0.2)
        except psycopg.errors.LockNotAvailable:
            blockers = conn.execute(
                "SELECT pid, state, query FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
            print(f"dropping schema {schema} waited on: {blockers}", file=sys.stderr)
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                "current_database() AND pid <> pg_backend_pid() AND state LIKE 'idle in%'"
            )
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@dataclasses.dataclass
class ServerProcess:
    """A running `python -m loom.server`."""

    endpoint: str
    api_key: str
    data_dir: Path
    config_path: Path
    env: dict[str, str]  # for an SDK subprocess: LOOM_CONFIG, LOOM_HOME
    process: subprocess.Popen[str]
    output: list[str]  # the server's stdout and stderr lines so far

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15, *, restart: bool = False) -> int:
        """Signal the server (SIGKILL: a crash) and wait for it to exit. Its action processes
        outlive it, for the next server process to adopt: unless a ``restart`` follows, they
        are killed too, as the test is over."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if not restart:
            kill_actions(self.data_dir)
        return code


def actions_of(data_dir: Path) -> list[int]:
    """The processes working under a server's data directory or its scratch directory (its
    action processes and warm workers)."""
    from loom.server import ServerSettings

    scratch = ServerSettings.load({}, data_dir=data_dir).session_sockets_dir()
    roots = [str(data_dir.resolve()), str(scratch)]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if any(cwd == root or cwd.startswith(root + os.sep) for root in roots):
            found.append(int(entry.name))
    return found


def kill_actions(data_dir: Path) -> None:
    for pid in actions_of(data_dir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def session_client(server: ServerProcess, session: dict[str, Any]) -> Any:
    """An ``httpx.Client`` (with the admin key) for a session on its own origin,
    ``http://<label>.localhost:<port>``: browsers resolve such names to loopback, this
    machine's resolver does not, so the client connects to loopback and names the host."""
    from urllib.parse import urlsplit

    import httpx

    origin = urlsplit(session["origin"])
    return httpx.Client(
        base_url=f"http://127.0.0.1:{origin.port}",
        headers={**server.headers, "Host": origin.netloc},
        follow_redirects=True,
        timeout=30,
    )


def start_server(
    data_dir: Path,
    *,
    home: Path | None = None,
    env: dict[str, str] | None = None,
    port: int = 0,
    args: tuple[str, ...] = (),
    timeout: float = 60,
) -> ServerProcess:
    """Start `python -m loom.server` on ``port`` (0: a free one) and wait for its ready line.

    The client configuration goes to ``<data_dir>/config.yaml``; ``env`` adds variables
    (e.g. ``LOOM_DATABASE_URL``, ``LOOM_RUNTIME_COMMAND``) to this process's environment.
    """
    config_path = data_dir / "config.yaml"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")}
    full_env.update({"LOOM_CONFIG": str(config_path), "PYTHONUNBUFFERED": "1"})
    full_env.update(env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "loom.server", "--data-dir", str(data_dir), "--port", str(port)]
        + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
        cwd=REPO,
    )
    output: list[str] = []
    ready = threading.Event()
    endpoint: list[str] = []

    def pump() -> None:  # keep reading, or a chatty server would block on a full pipe
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line.rstrip("\n"))
            match = _READY.match(line.strip())
            if match and not ready.is_set():
                endpoint.append(match.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.05):
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("server not ready in time:\n" + "\n".join(output))
    if not endpoint:
        process.wait(5)
        raise RuntimeError(
            f"server exited with {process.returncode} before it was ready:\n" + "\n".join(output)
        )
    import yaml

    api_key = yaml.safe_load(config_path.read_text())["api_key"]
    client_env = {"LOOM_CONFIG": str(config_path)}
    if home is not None:
        client_env["LOOM_HOME"] = str(home)
    return ServerProcess(endpoint[0], api_key, data_dir, config_path, client_env, process, output)


@pytest.fixture
def server(tmp_path: Path, loom_home: Path) -> Iterator[ServerProcess]:
    """A real server in a subprocess, with its own data directory; killed at teardown."""
    proc = start_server(tmp_path / "server-data", home=loom_home)
    try:
        yield proc
    finally:
        proc.stop()


# -- IDE installs (loom.interactive._install) --
# Building code-server takes about 2 minutes, so tests share one real install per cache
# directory: $LOOM_IDE_DIR (the Makefile sets it to <repo>/.cache/ide) or else <repo>/.cache/ide.
# The first test session that needs it builds it (`make ide` does it up front); later sessions
# reuse it. Concurrent xdist workers wait for each other on the install's file lock.


@dataclasses.dataclass(frozen=True)
class IdeInstalls:
    """The shared code-server and JupyterLab installs, and the cache directory they live in."""

    ide_dir: Path
    code_server: Any  # loom.interactive._install.CodeServerInstall
    jupyter: Any  # loom.interactive._install.JupyterInstall


def ide_cache_dir() -> Path:
    """The shared IDE cache: $LOOM_IDE_DIR, or <repo>/.cache/ide."""
    return Path(os.environ.get("LOOM_IDE_DIR") or REPO / ".cache" / "ide")


@pytest.fixture(scope="session")
def ide_installs() -> IdeInstalls:
    """code-server and JupyterLab installed (or found) in :func:`ide_cache_dir`."""
    from loom.interactive._install import install_code_server, install_jupyter

    ide_dir = ide_cache_dir()
    return IdeInstalls(
        ide_dir=ide_dir,
        code_server=install_code_server(ide_dir=ide_dir),
        jupyter=install_jupyter(ide_dir=ide_dir),
    )
