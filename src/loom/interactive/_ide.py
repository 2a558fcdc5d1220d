"""Start and stop the IDE server of one interactive session (code-server or JupyterLab).

The IDE listens on a Unix socket in the session's private directory (mode 0700, the socket
0600), never on a TCP port: the only way in is the control plane's authenticated proxy.
Jupyter also requires a per-session token, which only the proxy knows. The IDE has its own
temporary, config and data directories, and stays in the action process's process group: if
the action is aborted, times out or dies, the executor kills that group and the IDE with it.
Stopping the IDE from the action kills every other member of the group, so nothing it started
is left behind even if it re-parented. Its output is handed to ``output`` line
by line while it runs, so start-up errors show in the action's log at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..errors import IdeInstallError, LoomError
from ._config import VscodeConfig
from ._install import (
    CodeServerInstall,
    find_code_server,
    find_jupyter,
    install_code_server,
    install_extensions,
    installed_extensions,
    write_kernelspec,
)

__all__ = ["IdeProcess", "IdeStartError", "ensure_extensions", "start_jupyter", "start_vscode"]

_READY_TIMEOUT_S = 120.0
_STOP_GRACE_S = 3.0
_MS_PYTHON_DEBUGGERS = ("ms-python.python", "ms-python.debugpy")


class IdeStartError(LoomError):
    """The IDE server could not be started or did not become ready."""


@dataclass
class IdeProcess:
    """A running IDE server."""

    kind: str
    process: asyncio.subprocess.Process
    socket: Path
    token: str | None = field(default=None, repr=False)
    ready_path: str = "/healthz"
    debug_type: str = "loom-python"
    _pump: asyncio.Task[None] | None = field(default=None, repr=False)

    async def wait_ready(self, timeout: float = _READY_TIMEOUT_S) -> None:
        """Until the IDE answers its health check on its socket (HTTP 200); fails if it exits or
        takes too long."""
        headers = {"Authorization": f"token {self.token}"} if self.token else {}
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(transport=transport, base_url="http://ide") as client:
            while True:
                if self.process.returncode is not None:
                    raise IdeStartError(
                        f"{self.kind} exited with code {self.process.returncode} while starting"
                    )
                if self.socket.exists():
                    with contextlib.suppress(httpx.HTTPError):
                        response = await client.get(self.ready_path, headers=headers, timeout=5)
                        # 200 only: code-server listens before it has routes, and answers
                        # "Cannot GET" 404s for a moment; that is not ready
                        if response.status_code == 200:
                            return
                if loop.time() > deadline:
                    raise IdeStartError(f"{self.kind} did not become ready within {timeout:g}s")
                await asyncio.sleep(0.05)

    async def wait(self) -> int:
        """Until the IDE process exits by itself; its exit code."""
        code = await self.process.wait()
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pump, 2)
        return code

    async def stop(self) -> None:
        """Stop the IDE and everything it started: TERM, then KILL what lingers."""
        targets = _leftovers(self.process.pid)
        _signal_all(targets, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), _STOP_GRACE_S)
        for _ in range(100):  # until nothing it started is left
            targets = sorted(set(targets) | set(_leftovers(self.process.pid)))
            alive = [pid for pid in targets if pid in _processes()]
            if not alive:
                break
            _signal_all(alive, signal.SIGKILL)
            await asyncio.sleep(0.05)
        await self.process.wait()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump


def _processes() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (parent pid, process group)."""
    found: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[0] not in ("Z", "X"):
            found[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return found


def _leftovers(root: int) -> list[int]:
    """What to stop: as the leader of our process group (an action process), every other member
    (so even children that re-parented are found); otherwise ``root``'s descendants."""
    me = os.getpid()
    table = _processes()
    if os.getpgid(0) == me:
        return [pid for pid, (_, group) in table.items() if group == me and pid != me]
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


async def _spawn(
    kind: str,
    argv: list[str],
    env: Mapping[str, str],
    cwd: Path,
    output: Callable[[str], None],
) -> asyncio.subprocess.Process:
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
        )
    except OSError as e:
        raise IdeStartError(f"cannot start {kind}: {e}") from e
    return process


async def _pump_output(
    kind: str, process: asyncio.subprocess.Process, output: Callable[[str], None]
) -> None:
    assert process.stdout is not None
    async for line in process.stdout:
        output(f"[{kind}] {line.decode(errors='replace').rstrip()}")


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _code_server(
    config: VscodeConfig | None, ide_dir: Path, output: Callable[[str], None] | None = None
) -> CodeServerInstall:
    if config is not None and config.code_server_remote_paths:
        # the task names its own code-server: fetch it (once; later sessions find it cached)
        # rather than use another one
        return install_code_server(config, ide_dir, progress=output)
    found = find_code_server(config, ide_dir)
    if found is None:
        raise IdeInstallError(
            "code-server is not installed on this worker; run `loom ide install vscode` "
            f"(it installs into {ide_dir}), or put `code-server` on PATH"
        )
    return found


def ensure_extensions(
    config: VscodeConfig | None, ide_dir: Path, output: Callable[[str], None]
) -> tuple[Path, str]:
    """The shared extensions directory with loom's extension (and the config's) installed,
    and the debug adapter type the launch configurations should use."""
    from ._vsix import package_extension, vsix_name

    install = _code_server(config, ide_dir, output)
    extra = list(config.extension_remote_paths) if config is not None else []
    extensions = ide_dir / "extensions" / f"code-server-{install.version}"
    scratch = _private_dir(ide_dir / "extensions" / ".user-data")
    sources = list(extra)
    vsix = ide_dir / "vsix" / vsix_name()
    # a release tarball brings no vsce: the pinned npm install's packs loom's extension, if any
    packer = (
        install if install.vsce is not None else find_code_server(None, ide_dir, search_path=False)
    )
    if not vsix.exists() and packer is not None and packer.vsce and packer.node:
        package_extension(packer.vsce, packer.node, vsix.parent)
    if vsix.exists():
        sources.insert(0, str(vsix))
    else:
        output("[loom] loom's VS Code extension is not packaged (no vsce); debugging needs it")
    if sources:
        install_extensions(install.code_server, extensions, scratch, sources)
    present = {key.lower() for key in installed_extensions(extensions)}
    debug_type = "debugpy" if any(p in present for p in _MS_PYTHON_DEBUGGERS) else "loom-python"
    return extensions, debug_type


async def start_vscode(
    workspace: Path,
    session_dir: Path,
    *,
    config: VscodeConfig | None,
    ide_dir: Path,
    env: Mapping[str, str],
    output: Callable[[str], None],
    extensions_dir: Path,
) -> IdeProcess:
    """code-server on ``workspace``, on a Unix socket in ``session_dir``."""
    install = _code_server(config, ide_dir)
    base = _private_dir(session_dir)
    sock = base / "ide.sock"
    tmp = _private_dir(base / "tmp")
    (base / "config.yaml").write_text("auth: none\n")
    argv = [
        str(install.code_server),
        "--auth",
        "none",
        "--socket",
        str(sock),
        "--socket-mode",
        "600",
        "--config",
        str(base / "config.yaml"),
        "--user-data-dir",
        str(_private_dir(base / "user-data")),
        "--extensions-dir",
        str(extensions_dir),
        "--disable-telemetry",
        "--disable-update-check",
        "--disable-workspace-trust",
        "--disable-getting-started-override",
        "--reconnection-grace-time",
        "20",
        str(workspace),
    ]
    child_env = {**env, "TMPDIR": str(tmp), "XDG_DATA_HOME": str(base / "data")}
    child_env.pop("PORT", None)  # a platform PORT must never move the IDE (flytekit#3450)
    process = await _spawn("code-server", argv, child_env, workspace, output)
    ide = IdeProcess("code-server", process, sock)
    ide._pump = asyncio.create_task(_pump_output("code-server", process, output))
    return ide


async def start_jupyter(
    workspace: Path,
    session_dir: Path,
    *,
    base_url: str,
    root_dir: Path,
    python: str,
    token: str,
    open_file: str | None = None,
    ide_dir: Path,
    env: Mapping[str, str],
    output: Callable[[str], None],
) -> IdeProcess:
    """JupyterLab at ``base_url`` on a Unix socket in ``session_dir``, with a kernel that runs
    the task's own interpreter, refusing any request without ``token``."""
    jupyter = find_jupyter(ide_dir)
    if jupyter is None:
        raise IdeInstallError(
            "JupyterLab is not installed on this worker; run `loom ide install jupyter` "
            f"(it installs into {ide_dir})"
        )
    base = _private_dir(session_dir)
    sock = base / "ide.sock"
    tmp = _private_dir(base / "tmp")
    data = _private_dir(base / "jupyter-data")
    write_kernelspec(
        data / "kernels", python, jupyter, name="python3", display_name="Python (task)"
    )
    argv = [
        *jupyter.jupyter_lab_argv,
        f"--ServerApp.sock={sock}",
        "--ServerApp.sock_mode=0600",
        f"--ServerApp.base_url={base_url}",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.open_browser=False",
        # the session's URL opens the generated notebook (relative to the base URL)
        f"--LabApp.default_url=/lab/tree/{open_file or ''}".rstrip("/"),
        # its socket is private and every request needs the token the proxy adds: the Host
        # check (against DNS rebinding) would only refuse the session's own origin
        "--ServerApp.allow_remote_access=True",
        "--allow-root",
        "--no-browser",
    ]
    child_env = {
        **env,
        "TMPDIR": str(tmp),
        "JUPYTER_DATA_DIR": str(data),
        "JUPYTER_CONFIG_DIR": str(_private_dir(base / "jupyter-config")),
        "JUPYTER_RUNTIME_DIR": str(_private_dir(base / "jupyter-runtime")),
        "JUPYTER_PATH": str(data),
        "IPYTHONDIR": str(_private_dir(base / "ipython")),
        # the token only in the environment: a command line is readable by every local user
        "JUPYTER_TOKEN": token,
    }
    # and never written into the page for the browser: the proxy adds it to each request
    labconfig = _private_dir(Path(child_env["JUPYTER_CONFIG_DIR"]) / "labconfig")
    (labconfig / "page_config.json").write_text('{"token": ""}\n')
    # no "news" and update checks: a session makes no outside requests and shows no pop-up
    notification = _private_dir(
        Path(child_env["JUPYTER_CONFIG_DIR"]) / "lab" / "user-settings" / "@jupyterlab"
        / "apputils-extension"
    )  # fmt: skip
    (notification / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}\n'
    )
    child_env.pop("PORT", None)
    process = await _spawn("jupyter", argv, child_env, workspace, output)
    ide = IdeProcess("jupyter", process, sock, token, ready_path=f"{base_url}api/status")
    ide._pump = asyncio.create_task(_pump_output("jupyter", process, output))
    return ide
