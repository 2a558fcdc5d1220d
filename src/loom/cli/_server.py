"""``loom server start|stop|status``: the embedded control plane on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

import click

from .._settings import Settings
from .._sync import run_sync
from ..errors import ApiError
from ..remote import Client

READY_MARK = "loom server ready at "


def _data_dir(value: str | None) -> Path:
    return Path(value).expanduser() if value else Settings.load().home


@click.group()
def server() -> None:
    """Run the loom control plane (API, scheduler, executor) on this machine."""


@server.command()
@click.option("--port", default=8377, show_default=True, help="TCP port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--data-dir", help="Where the database and objects live [default: ~/.loom].")
@click.option("--detach", is_flag=True, help="Run in the background; stop with `loom server stop`.")
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a --host other machines can reach (put TLS in front; see docs/security.md).",
)
def start(port: int, host: str, data_dir: str | None, detach: bool, allow_remote: bool) -> None:
    """Start the server. The first start creates an admin API key and writes the client
    configuration (endpoint and key) to $LOOM_CONFIG or ~/.loom/config.yaml."""
    directory = _data_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    command = [
        sys.executable, "-m", "loom.server", "--host", host, "--port", str(port),
        "--data-dir", str(directory), *(["--allow-remote"] if allow_remote else []),
    ]  # fmt: skip
    pid_file, log_file = directory / "server.pid", directory / "server.log"
    if _alive(pid_file):
        raise click.ClickException(
            f"a server is already running on this data directory (pid "
            f"{pid_file.read_text().strip()}); stop it with `loom server stop`"
        )
    if not detach:
        _foreground(command, pid_file)
    with log_file.open("ab") as log:
        offset = log.tell()
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    pid_file.write_text(str(process.pid))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log_file.read_bytes()[offset:].decode(errors="replace")
        if READY_MARK in text:
            url = text.split(READY_MARK, 1)[1].split()[0]
            click.echo(f"loom server ready at {url} (pid {process.pid}, log {log_file})")
            click.echo("stop it with `loom server stop`", err=True)
            return
        if process.poll() is not None:
            pid_file.unlink(missing_ok=True)
            raise click.ClickException(f"the server exited during start-up:\n{text.strip()}")
        time.sleep(0.05)
    raise click.ClickException(f"the server did not become ready in 30 s; see {log_file}")


def _foreground(command: list[str], pid_file: Path) -> NoReturn:
    """Run the server in this terminal until it exits; its pid in ``pid_file`` (so `loom
    server stop` finds it), and SIGTERM and SIGHUP passed on to it (Ctrl+C reaches it by
    itself: it is in the terminal's process group)."""
    process = subprocess.Popen(command)
    pid_file.write_text(str(process.pid))

    def forward(sig: int, frame: object) -> None:
        process.send_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        code = process.wait()
    finally:
        if pid_file.exists() and pid_file.read_text().strip() == str(process.pid):
            pid_file.unlink(missing_ok=True)
    raise SystemExit(code)


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


@server.command()
@click.option("--data-dir", help="The data directory the server was started with.")
def stop(data_dir: str | None) -> None:
    """Stop the server of this data directory (started detached or in a terminal)."""
    pid_file = _data_dir(data_dir) / "server.pid"
    if not _alive(pid_file):
        pid_file.unlink(missing_ok=True)
        raise click.ClickException(f"no server is running (no live pid in {pid_file})")
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid_file):
        time.sleep(0.05)
    if _alive(pid_file):
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    click.echo(f"stopped the server (pid {pid})")


@server.command()
@click.option("--data-dir", help="The data directory the server was started with.")
def status(data_dir: str | None) -> None:
    """Say whether the configured server answers, and where."""
    settings = Settings.load()
    pid_file = _data_dir(data_dir) / "server.pid"
    if settings.endpoint is None:
        raise click.ClickException(
            f"no server configured in {settings.config_path}; start one with `loom server start`"
        )

    async def check() -> str:
        async with Client(settings.endpoint or "", settings.api_key) as client:
            return (await client.health()).version

    try:
        version = run_sync(check())
    except ApiError as e:
        raise click.ClickException(str(e)) from e
    detached = f", detached pid {pid_file.read_text().strip()}" if _alive(pid_file) else ""
    click.echo(f"loom server {version} is up at {settings.endpoint}{detached}")
