"""``loom server start|stop|status``: the embedded control plane on this machine.

The client configuration follows the server: ``start`` has the server write its first admin
key to the configuration the CLI reads, then records there the endpoint it really serves and
its data directory, so ``stop`` and ``status`` find it without flags."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, NoReturn

import click

from .._settings import Settings, read_yaml_mapping
from .._sync import run_sync
from ..errors import ApiError, ConfigError
from ..remote import Client
from ._output import OutputFormat, emit, output_option

READY_MARK = "loom server ready at "


def _settings() -> Settings:
    try:
        return Settings.load()
    except ConfigError as e:
        raise click.ClickException(str(e)) from e


def _data_dir(value: str | None, settings: Settings) -> tuple[Path, str]:
    """The data directory meant, and how it was found (for messages)."""
    if value:
        return Path(value).expanduser(), "--data-dir"
    if settings.server_data_dir is not None:
        return settings.server_data_dir, f"the configuration {settings.config_path}"
    return settings.home, "the default (LOOM_HOME or ~/.loom)"


def _record_server(settings: Settings, endpoint: str, data_dir: Path) -> None:
    """Point the client configuration at the server that just started (keeping its key,
    project and domain), readable by its owner only: it holds a secret."""
    import yaml

    path = settings.config_path
    doc: dict[str, Any] = read_yaml_mapping(path, "configuration file") if path.exists() else {}
    doc.update(endpoint=endpoint, server_data_dir=str(data_dir.resolve()))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-")  # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(yaml.safe_dump(doc, sort_keys=False))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
@output_option
def start(
    port: int, host: str, data_dir: str | None, detach: bool, allow_remote: bool,
    output: OutputFormat,
) -> None:  # fmt: skip
    """Start the server. It writes the client configuration ($LOOM_CONFIG or
    ~/.loom/config.yaml): an admin API key when that file has none (the first start, or a new
    LOOM_CONFIG), and on every start the endpoint it serves and its data directory."""
    settings = _settings()
    directory = Path(data_dir).expanduser() if data_dir else settings.home
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # a configuration without a key (a new LOOM_CONFIG, say) gets one: whoever may start the
    # server on this data directory owns everything in it anyway
    needs_key = settings.api_key is None
    command = [
        sys.executable, "-m", "loom.server", "--host", host, "--port", str(port),
        "--data-dir", str(directory), *(["--allow-remote"] if allow_remote else []),
        *(["--new-admin-key"] if needs_key else []),
    ]  # fmt: skip
    env = {**os.environ, "LOOM_CONFIG": str(settings.config_path)}  # where this CLI reads it
    pid_file, log_file = directory / "server.pid", directory / "server.log"
    if _alive(pid_file):
        raise click.ClickException(
            f"a server is already running on this data directory (pid "
            f"{pid_file.read_text().strip()}); stop it with `loom server stop`"
        )
    if not detach:
        _foreground(command, env, pid_file, lambda url: _record_server(settings, url, directory))
    with log_file.open("ab") as log:
        offset = log.tell()
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    pid_file.write_text(str(process.pid))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log_file.read_bytes()[offset:].decode(errors="replace")
        if READY_MARK in text:
            url = text.split(READY_MARK, 1)[1].split()[0]
            _record_server(settings, url, directory)
            if output.for_scripts:
                emit(_status_doc(url, process.pid, directory, settings, up=True), output)
                return
            click.echo(f"loom server ready at {url} (pid {process.pid}, log {log_file})")
            click.echo(
                f"client configuration: {settings.config_path}; stop it with `loom server stop`",
                err=True,
            )
            return
        if process.poll() is not None:
            pid_file.unlink(missing_ok=True)
            raise click.ClickException(f"the server exited during start-up:\n{text.strip()}")
        time.sleep(0.05)
    raise click.ClickException(f"the server did not become ready in 30 s; see {log_file}")


def _foreground(command: list[str], env: dict[str, str], pid_file: Path, on_ready: Any) -> NoReturn:
    """Run the server in this terminal until it exits; its pid in ``pid_file`` (so `loom
    server stop` finds it), its output passed through (watching for the ready line), and
    SIGTERM and SIGHUP passed on to it (Ctrl+C reaches it by itself: it is in the
    terminal's process group)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE)
    pid_file.write_text(str(process.pid))
    assert process.stdout is not None
    relay = threading.Thread(target=_relay, args=(process.stdout, on_ready), daemon=True)
    relay.start()

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
        relay.join(5)
        if pid_file.exists() and pid_file.read_text().strip() == str(process.pid):
            pid_file.unlink(missing_ok=True)
    raise SystemExit(code)


def _relay(stream: IO[bytes], on_ready: Any) -> None:
    for raw in stream:
        line = raw.decode(errors="replace")
        sys.stdout.write(line)
        sys.stdout.flush()
        if line.startswith(READY_MARK):
            try:
                on_ready(line[len(READY_MARK) :].split()[0])
            except (OSError, ConfigError) as e:
                print(f"cannot update the client configuration: {e}", file=sys.stderr)


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def _pid(pid_file: Path) -> int | None:
    return int(pid_file.read_text()) if _alive(pid_file) else None


_data_dir_option = click.option(
    "--data-dir",
    help="The data directory the server was started with "
    "[default: the one `loom server start` recorded in the configuration].",
)


@server.command()
@_data_dir_option
@output_option
def stop(data_dir: str | None, output: OutputFormat) -> None:
    """Stop the server of this data directory (started detached or in a terminal)."""
    settings = _settings()
    directory, found_by = _data_dir(data_dir, settings)
    pid_file = directory / "server.pid"
    if not _alive(pid_file):
        pid_file.unlink(missing_ok=True)
        hint = (
            ""
            if data_dir
            else "; a server started with `--data-dir D` stops with `loom server stop --data-dir D`"
        )
        raise click.ClickException(
            f"no server is running on the data directory {directory} (from {found_by}: no live "
            f"pid in {pid_file}){hint}"
        )
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid_file):
        time.sleep(0.05)
    if _alive(pid_file):
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    if output.for_scripts:
        emit({"stopped": True, "pid": pid, "data_dir": str(directory)}, output)
    else:
        click.echo(f"stopped the server (pid {pid}, data directory {directory})")


def _status_doc(
    endpoint: str | None, pid: int | None, directory: Path, settings: Settings, *, up: bool,
    version: str | None = None, problem: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "up": up, "endpoint": endpoint, "version": version, "pid": pid,
        "data_dir": str(directory), "config": str(settings.config_path), "problem": problem,
    }  # fmt: skip


@server.command()
@_data_dir_option
@output_option
def status(data_dir: str | None, output: OutputFormat) -> None:
    """Say whether the configured server answers, and where. Exits 1 when it does not."""
    settings = _settings()
    directory, _ = _data_dir(data_dir, settings)
    pid = _pid(directory / "server.pid")
    problem = version = None
    if settings.endpoint is None:
        problem = (
            f"no server configured in {settings.config_path}; start one with `loom server start`"
        )
    else:

        async def check() -> str:
            async with Client(settings.endpoint or "", settings.api_key) as client:
                return (await client.health()).version

        try:
            version = run_sync(check())
        except ApiError as e:
            problem = str(e)
            if pid is not None:
                problem += (
                    f" (a server process, pid {pid}, runs on {directory}: is it still starting, "
                    "or listening elsewhere?)"
                )
    if output.for_scripts:
        emit(
            _status_doc(settings.endpoint, pid, directory, settings, up=problem is None,
                        version=version, problem=problem),
            output,
        )  # fmt: skip
        if problem is not None:
            raise SystemExit(1)
        return
    if problem is not None:
        raise click.ClickException(problem)
    where = f", pid {pid}, data directory {directory}" if pid is not None else ""
    click.echo(f"loom server {version} is up at {settings.endpoint}{where}")
