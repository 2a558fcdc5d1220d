"""Installing code-server, JupyterLab and extensions: real installs, real processes.

The pinned code-server and JupyterLab come from the shared cache (``ide_installs`` in
tests/conftest.py); release tarballs and extensions are served from a local HTTP server.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loom._settings import Settings
from loom.errors import IdeInstallError, LoomError
from loom.interactive import _install
from loom.interactive._config import VscodeConfig, current_arch
from loom.interactive._install import (
    CODE_SERVER_VERSION,
    JUPYTERLAB_VERSION,
    NODE_VERSION,
    VSCE_VERSION,
    find_code_server,
    find_jupyter,
    install_code_server,
    install_extensions,
    install_jupyter,
    installed_extensions,
    read_vsix,
    write_kernelspec,
)
from tests.conftest import REPO, IdeInstalls, free_port

pytestmark = pytest.mark.e2e

# The first use of `ide_installs` may build code-server (about 2 minutes) and JupyterLab.
SLOW = pytest.mark.timeout(900)


# -- a local HTTP server for tarballs and extensions -------------------------------------------


@dataclass
class Served:
    """What the test server does: files from ``root``, with optional failures and stalls."""

    root: Path
    base: str = ""
    requests: list[str] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)  # path -> how many 503s first
    stall: set[str] = field(default_factory=set)  # paths that send 1 KiB, then hang
    delay: float = 0.0
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


class _Handler(http.server.SimpleHTTPRequestHandler):
    served: Served

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        served = self.served
        served.requests.append(self.path)
        if served.failures.get(self.path, 0) > 0:
            served.failures[self.path] -= 1
            self.send_error(503)
            return
        if self.path in served.stall:
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            self.wfile.write(b"\0" * 1024)
            self.wfile.flush()
            served.release.wait(60)
            return
        time.sleep(served.delay)
        super().do_GET()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Served]:
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "www"``."""
    served = Served(tmp_path / "www")
    served.root.mkdir()
    handler = type("Handler", (_Handler,), {"served": served})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(served.root))
    )
    server.daemon_threads = True
    served.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.release.set()
        server.shutdown()
        server.server_close()


def make_release(path: Path, *, top: str = "code-server-9.9.9-linux-amd64", script: str) -> str:
    """A code-server release tarball whose ``bin/code-server`` is ``script``; its sha256."""
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, f"{top}/bin/code-server", script.encode(), 0o755)
        _add(tar, f"{top}/README.md", b"a test release\n", 0o644)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


FAKE_CODE_SERVER = '#!/bin/sh\necho "9.9.9 0123abcd with Code 1.99.0"\n'


def tarball_config(url: str, sha256: str | None = None) -> VscodeConfig:
    arch = current_arch()
    return VscodeConfig(
        code_server_remote_paths={arch: url},
        code_server_sha256={arch: sha256} if sha256 else {},
    )


def install_dirs(ide_dir: Path) -> list[str]:
    """Every directory in the cache but the logs: installs, and leftovers of failed ones."""
    if not ide_dir.exists():
        return []
    return sorted(p.name for p in ide_dir.iterdir() if p.is_dir() and p.name != "logs")


def isolated_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
    }


# -- settings -----------------------------------------------------------------------------------


def test_ide_dir_setting(monkeypatch: pytest.MonkeyPatch, loom_home: Path, tmp_path: Path) -> None:
    monkeypatch.delenv("LOOM_IDE_DIR", raising=False)
    assert Settings.load().ide_dir == loom_home / "ide"
    monkeypatch.setenv("LOOM_IDE_DIR", str(tmp_path / "elsewhere"))
    assert Settings.load().ide_dir == tmp_path / "elsewhere"
    assert issubclass(IdeInstallError, LoomError)


# -- the pinned installs ------------------------------------------------------------------------


@SLOW
def test_code_server_install_runs(ide_installs: IdeInstalls, tmp_path: Path) -> None:
    vscode = ide_installs.code_server
    assert vscode.source == "npm" and vscode.version == CODE_SERVER_VERSION
    assert vscode.root == ide_installs.ide_dir / f"code-server-{CODE_SERVER_VERSION}"
    done = subprocess.run(
        [str(vscode.code_server), "--version", "--config", str(tmp_path / "config.yaml"),
         "--user-data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60, env=isolated_env(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{CODE_SERVER_VERSION} " in done.stdout and "with Code 1.139.1" in done.stdout
    assert (tmp_path / "config.yaml").exists()  # it wrote its config where it was told
    node = subprocess.run([str(vscode.node), "--version"], capture_output=True, text=True)
    assert node.stdout.strip() == f"v{NODE_VERSION}"
    assert vscode.vsce is not None
    vsce = subprocess.run([str(vscode.vsce), "--version"], capture_output=True, text=True)
    assert vsce.returncode == 0 and vsce.stdout.strip() == VSCE_VERSION


@SLOW
def test_jupyter_install_runs(ide_installs: IdeInstalls, tmp_path: Path) -> None:
    jupyter = ide_installs.jupyter
    assert jupyter.version == JUPYTERLAB_VERSION
    assert jupyter.root == ide_installs.ide_dir / f"jupyterlab-{JUPYTERLAB_VERSION}"
    done = subprocess.run(
        [*jupyter.jupyter_lab_argv, "--version"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == JUPYTERLAB_VERSION
    assert (jupyter.site_packages / "ipykernel").is_dir()


def _serve_and_get(argv: list[str], url: str, tmp_path: Path, headers: dict | None = None) -> str:
    """Start a server, GET ``url`` once it answers, stop the server's whole process group."""
    import httpx

    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**isolated_env(tmp_path), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                response = httpx.get(url, headers=headers, follow_redirects=True, timeout=10)
                # code-server listens before its routes exist: a moment of "Cannot GET /" 404s
                if response.status_code == 200 or time.monotonic() > deadline:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        assert response.status_code == 200, response.text[:500]
        return response.text
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@SLOW
def test_code_server_serves_the_editor(ide_installs: IdeInstalls, tmp_path: Path) -> None:
    port = free_port()
    page = _serve_and_get(
        [str(ide_installs.code_server.code_server), "--auth", "none",
         "--bind-addr", f"127.0.0.1:{port}", "--config", str(tmp_path / "config.yaml"),
         "--user-data-dir", str(tmp_path / "data"), "--extensions-dir", str(tmp_path / "ext"),
         "--disable-telemetry", "--disable-update-check", str(tmp_path)],
        f"http://127.0.0.1:{port}/",
        tmp_path,
    )  # fmt: skip
    assert "workbench" in page  # the VS Code page itself, not an error page


@SLOW
def test_jupyter_lab_serves(ide_installs: IdeInstalls, tmp_path: Path) -> None:
    port = free_port()
    token = "loom-test-token"
    status = _serve_and_get(
        [*ide_installs.jupyter.jupyter_lab_argv, "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}"],
        f"http://127.0.0.1:{port}/api/status",
        tmp_path,
        headers={"Authorization": f"token {token}"},
    )  # fmt: skip
    assert "last_activity" in json.loads(status)


@SLOW
def test_a_second_install_is_a_fast_no_op(ide_installs: IdeInstalls) -> None:
    start = time.monotonic()
    vscode = install_code_server(ide_dir=ide_installs.ide_dir)
    jupyter = install_jupyter(ide_dir=ide_installs.ide_dir)
    assert time.monotonic() - start < 5
    assert not vscode.fresh and not jupyter.fresh
    assert vscode.code_server == ide_installs.code_server.code_server
    assert jupyter.python == ide_installs.jupyter.python
    found = find_code_server(ide_dir=ide_installs.ide_dir, search_path=False)
    assert found is not None and found.code_server == vscode.code_server
    assert find_jupyter(ide_installs.ide_dir) == jupyter


def test_find_installs_nothing(tmp_path: Path) -> None:
    ide_dir = tmp_path / "ide"
    assert find_code_server(ide_dir=ide_dir, search_path=False) is None
    assert find_jupyter(ide_dir) is None
    assert not ide_dir.exists()


@SLOW
def test_find_falls_back_to_code_server_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ide_installs: IdeInstalls
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "code-server"
    script.write_text(FAKE_CODE_SERVER)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    found = find_code_server(ide_dir=tmp_path / "empty")
    assert found is not None and found.source == "path"
    assert found.code_server == script and found.version == "9.9.9" and found.vsce is None
    assert find_code_server(ide_dir=tmp_path / "empty", search_path=False) is None
    # the pinned install comes first
    pinned = find_code_server(ide_dir=ide_installs.ide_dir)
    assert pinned is not None and pinned.source == "npm"
    # a code-server on PATH that does not run is ignored
    script.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    assert find_code_server(ide_dir=tmp_path / "empty") is None
    # installing never takes the one on PATH: it needs the pinned build
    assert install_code_server(ide_dir=ide_installs.ide_dir).source == "npm"


def test_a_directory_without_the_completion_marker_is_not_an_install(tmp_path: Path) -> None:
    # What an interrupted install without atomic rename would leave (Flyte's bug): it must be
    # ignored by find and replaced by the next install.
    root = tmp_path / f"code-server-{CODE_SERVER_VERSION}"
    (root / "bin").mkdir(parents=True)
    (root / "bin/code-server").write_text("#!/bin/sh\n")
    (root / "bin/code-server").chmod(0o755)
    (root / "bin/node").symlink_to("/bin/true")
    assert find_code_server(ide_dir=tmp_path, search_path=False) is None
    (tmp_path / f"jupyterlab-{JUPYTERLAB_VERSION}/venv/bin").mkdir(parents=True)
    assert find_jupyter(tmp_path) is None


def test_missing_build_packages_give_the_apt_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        _install, "_BUILD_HEADERS", {"/nonexistent/loom-test/gssapi.h": "libloomtest-dev"}
    )
    ide_dir = tmp_path / "ide"
    with pytest.raises(IdeInstallError) as caught:
        install_code_server(ide_dir=ide_dir)
    message = str(caught.value)
    assert "apt-get install -y --no-install-recommends libloomtest-dev" in message
    assert "/nonexistent/loom-test/gssapi.h" in message
    assert install_dirs(ide_dir) == []  # nothing half-installed
    assert find_code_server(ide_dir=ide_dir, search_path=False) is None


# -- release tarballs ---------------------------------------------------------------------------


@SLOW
def test_tarball_install_with_checksum(
    web: Served, tmp_path: Path, ide_installs: IdeInstalls
) -> None:
    real = ide_installs.code_server.code_server
    sha = make_release(web.root / "cs.tar.gz", script=f'#!/bin/sh\nexec "{real}" "$@"\n')
    config = tarball_config(web.url("cs.tar.gz"), sha)
    ide_dir = tmp_path / "ide"
    assert find_code_server(config, ide_dir) is None
    vscode = install_code_server(config, ide_dir)
    assert vscode.fresh and vscode.source == "tarball"
    assert vscode.version == CODE_SERVER_VERSION  # what the unpacked code-server reports
    assert vscode.code_server.name == "code-server" and vscode.code_server.is_file()
    assert vscode.root.parent == ide_dir and vscode.root.name.startswith("code-server-tarball-")
    again = install_code_server(config, ide_dir)
    assert not again.fresh and again.code_server == vscode.code_server
    assert web.requests == ["/cs.tar.gz"]  # downloaded once
    assert find_code_server(config, ide_dir) == again
    # the npm install is a different thing: a tarball config never falls back to it
    assert find_code_server(config, tmp_path / "empty") is None


def seeds_key(arch: str | None = None) -> str:
    """This machine's platform as the seeds spell it: ``linux-x64`` on x86-64."""
    arch = arch or current_arch()
    return f"linux-{'x64' if arch == 'amd64' else arch}"


def test_a_session_downloads_the_configured_tarball(web: Served, tmp_path: Path) -> None:
    """What a session does first (``ensure_extensions``, then ``start_vscode``): fetch the
    tarball named under the seeds' platform key, once, into the IDE dir, and use it."""
    from loom.interactive._ide import ensure_extensions

    sha = make_release(web.root / "cs.tar.gz", script=FAKE_CODE_SERVER)
    ide_dir = tmp_path / "ide"
    config = VscodeConfig(
        code_server_remote_paths={seeds_key(): web.url("cs.tar.gz")},
        code_server_sha256={seeds_key(): sha},
    )
    lines: list[str] = []
    extensions, debug_type = ensure_extensions(config, ide_dir, lines.append)
    assert web.requests == ["/cs.tar.gz"]
    assert any("downloading" in line for line in lines), lines
    (install,) = [d for d in install_dirs(ide_dir) if d.startswith("code-server-tarball-")]
    assert extensions == ide_dir / "extensions" / "code-server-9.9.9"
    found = find_code_server(config, ide_dir)
    assert found is not None and found.source == "tarball" and found.root.name == install
    assert found.code_server.is_relative_to(ide_dir / install)
    # cached: the next session downloads nothing
    ensure_extensions(config, ide_dir, lines.append)
    assert web.requests == ["/cs.tar.gz"]


def test_a_corrupt_download_fails_the_session_clearly(web: Served, tmp_path: Path) -> None:
    from loom.interactive._ide import ensure_extensions

    make_release(web.root / "cs.tar.gz", script=FAKE_CODE_SERVER)
    config = VscodeConfig(
        code_server_remote_paths={seeds_key(): web.url("cs.tar.gz")},
        code_server_sha256={seeds_key(): "0" * 64},
    )
    with pytest.raises(IdeInstallError, match="checksum mismatch"):
        ensure_extensions(config, tmp_path / "ide", lambda line: None)
    assert [d for d in install_dirs(tmp_path / "ide") if d.startswith("code-server")] == []


def test_no_tarball_for_this_platform_is_a_clear_error(web: Served, tmp_path: Path) -> None:
    """Tarballs only for other platforms: an error naming this one, never a silent fall-back
    to another code-server."""
    from loom.interactive._ide import ensure_extensions

    other = "arm64" if current_arch() == "amd64" else "amd64"
    config = VscodeConfig(code_server_remote_paths={seeds_key(other): web.url("cs.tar.gz")})
    with pytest.raises(IdeInstallError, match="no tarball for this machine.*linux-"):
        ensure_extensions(config, tmp_path / "ide", lambda line: None)
    with pytest.raises(IdeInstallError, match="no tarball for this machine"):
        install_code_server(config, tmp_path / "ide")
    assert find_code_server(config, tmp_path / "ide") is None
    assert web.requests == []


def test_checksum_mismatch_leaves_nothing(web: Served, tmp_path: Path) -> None:
    sha = make_release(web.root / "cs.tar.gz", script=FAKE_CODE_SERVER)
    ide_dir = tmp_path / "ide"
    with pytest.raises(IdeInstallError, match="checksum mismatch") as caught:
        install_code_server(tarball_config(web.url("cs.tar.gz"), "0" * 64), ide_dir)
    assert sha in str(caught.value) and web.url("cs.tar.gz") in str(caught.value)
    assert install_dirs(ide_dir) == []
    vscode = install_code_server(tarball_config(web.url("cs.tar.gz"), sha), ide_dir)
    assert vscode.fresh and vscode.version == "9.9.9"
    assert install_dirs(ide_dir) == [vscode.root.name]


def test_not_found_is_not_retried_and_leaves_nothing(web: Served, tmp_path: Path) -> None:
    ide_dir = tmp_path / "ide"
    with pytest.raises(IdeInstallError, match="HTTP 404") as caught:
        install_code_server(tarball_config(web.url("missing.tar.gz")), ide_dir, retries=3)
    assert "check the URL" in str(caught.value)
    assert web.requests == ["/missing.tar.gz"]
    assert install_dirs(ide_dir) == []
    # and the next install (once the file is there) works
    make_release(web.root / "missing.tar.gz", script=FAKE_CODE_SERVER)
    assert install_code_server(tarball_config(web.url("missing.tar.gz")), ide_dir).fresh


def test_server_errors_are_retried(web: Served, tmp_path: Path) -> None:
    make_release(web.root / "cs.tar.gz", script=FAKE_CODE_SERVER)
    web.failures["/cs.tar.gz"] = 2
    vscode = install_code_server(tarball_config(web.url("cs.tar.gz")), tmp_path, retries=3)
    assert vscode.version == "9.9.9"
    assert web.requests == ["/cs.tar.gz"] * 3
    web.failures["/cs.tar.gz"] = 5
    with pytest.raises(IdeInstallError, match="HTTP 503.*after 2 attempt"):
        install_code_server(tarball_config(web.url("cs.tar.gz")), tmp_path, retries=2, force=True)
    # a failed --force leaves the existing install as it was
    assert find_code_server(tarball_config(web.url("cs.tar.gz")), tmp_path) == vscode


def test_corrupt_tarball(web: Served, tmp_path: Path) -> None:
    (web.root / "cs.tar.gz").write_bytes(b"\x1f\x8b this is not gzip at all")
    with pytest.raises(IdeInstallError, match="not a readable tarball"):
        install_code_server(tarball_config(web.url("cs.tar.gz")), tmp_path / "ide")
    assert install_dirs(tmp_path / "ide") == []


def test_a_tarball_without_code_server(web: Served, tmp_path: Path) -> None:
    with tarfile.open(web.root / "cs.tar.gz", "w:gz") as tar:
        _add(tar, "something-else/README", b"hi", 0o644)
    with pytest.raises(IdeInstallError, match="no executable something-else/bin/code-server"):
        install_code_server(tarball_config(web.url("cs.tar.gz")), tmp_path / "ide")
    assert install_dirs(tmp_path / "ide") == []


@pytest.mark.parametrize("attack", ["dotdot", "absolute", "symlink-out"])
def test_unsafe_tarballs_are_refused(web: Served, tmp_path: Path, attack: str) -> None:
    target = tmp_path / "outside"
    with tarfile.open(web.root / "evil.tar.gz", "w:gz") as tar:
        _add(tar, "cs/bin/code-server", FAKE_CODE_SERVER.encode(), 0o755)
        if attack == "dotdot":
            _add(tar, "cs/../../../../outside", b"owned", 0o644)
        elif attack == "absolute":
            _add(tar, str(target), b"owned", 0o644)
        else:
            link = tarfile.TarInfo("cs/link")
            link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
            tar.addfile(link)
            _add(tar, "cs/link/outside", b"owned", 0o644)
    ide_dir = tmp_path / "ide"
    with pytest.raises(IdeInstallError, match="refusing to unpack"):
        install_code_server(tarball_config(web.url("evil.tar.gz")), ide_dir)
    assert not target.exists()
    assert install_dirs(ide_dir) == []


_INSTALL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from loom.interactive._config import VscodeConfig, current_arch
    from loom.interactive._install import install_code_server
    config = VscodeConfig(code_server_remote_paths={current_arch(): sys.argv[1]})
    found = install_code_server(config, sys.argv[2], progress=lambda m: print(m, flush=True))
    print(json.dumps({"root": str(found.root), "fresh": found.fresh}), flush=True)
    """
)


def _installer(url: str, ide_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _INSTALL_SCRIPT, url, str(ide_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )  # fmt: skip


def test_an_interrupted_install_leaves_no_install(web: Served, tmp_path: Path) -> None:
    make_release(web.root / "cs.tar.gz", script=FAKE_CODE_SERVER)
    web.stall.add("/cs.tar.gz")
    ide_dir = tmp_path / "ide"
    process = _installer(web.url("cs.tar.gz"), ide_dir)
    try:
        deadline = time.monotonic() + 30
        while not list(ide_dir.glob(".code-server-tarball-*.tmp-*/download/*.part")):
            assert time.monotonic() < deadline, "the install never started downloading"
            assert process.poll() is None, process.communicate()[0]
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)  # a crash in the middle of the download
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
        if process.stdout is not None:
            process.stdout.close()
    leftovers = install_dirs(ide_dir)
    assert len(leftovers) == 1 and ".tmp-" in leftovers[0]  # only the scratch directory
    config = tarball_config(web.url("cs.tar.gz"))
    assert find_code_server(config, ide_dir) is None
    web.stall.clear()
    messages: list[str] = []
    vscode = install_code_server(config, ide_dir, progress=messages.append)
    assert vscode.fresh and vscode.version == "9.9.9"
    assert any("left by an interrupted install" in m for m in messages)
    assert install_dirs(ide_dir) == [vscode.root.name]


def test_an_unfinished_directory_in_place_is_replaced(web: Served, tmp_path: Path) -> None:
    make_release(web.root / "cs.tar.gz", script=FAKE_CODE_SERVER)
    config = tarball_config(web.url("cs.tar.gz"))
    ide_dir = tmp_path / "ide"
    vscode = install_code_server(config, ide_dir)
    marker = vscode.root / ".loom-complete"
    marker.unlink()  # as if an older, non-atomic tool had stopped half-way
    (vscode.root / "junk").write_text("half-written")
    assert find_code_server(config, ide_dir) is None
    again = install_code_server(config, ide_dir)
    assert again.fresh and marker.is_file() and not (again.root / "junk").exists()
    assert install_dirs(ide_dir) == [again.root.name]


def test_concurrent_installs_wait_for_each_other(web: Served, tmp_path: Path) -> None:
    make_release(web.root / "cs.tar.gz", script=FAKE_CODE_SERVER)
    web.delay = 1.0  # keep the first install busy while the second one starts
    ide_dir = tmp_path / "ide"
    processes = [_installer(web.url("cs.tar.gz"), ide_dir) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    results = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert results[0]["root"] == results[1]["root"]
    assert sorted(r["fresh"] for r in results) == [False, True]
    assert web.requests == ["/cs.tar.gz"]  # the second one found the first one's install
    assert install_dirs(ide_dir) == [Path(results[0]["root"]).name]


# -- extensions ---------------------------------------------------------------------------------


def make_vsix(path: Path, publisher: str, name: str, version: str) -> Path:
    """A minimal VS Code extension package, built by hand."""
    manifest = f"""<?xml version="1.0" encoding="utf-8"?>
<PackageManifest Version="2.0.0" xmlns="http://schemas.microsoft.com/developer/vsx-schema/2011">
  <Metadata>
    <Identity Language="en-US" Id="{name}" Version="{version}" Publisher="{publisher}" />
    <DisplayName>{name}</DisplayName>
  </Metadata>
  <Installation><InstallationTarget Id="Microsoft.VisualStudio.Code"/></Installation>
  <Dependencies/>
  <Assets>
    <Asset Type="Microsoft.VisualStudio.Code.Manifest" Path="extension/package.json"
           Addressable="true" />
  </Assets>
</PackageManifest>
"""
    types = (
        '<?xml version="1.0" encoding="utf-8"?><Types xmlns='
        '"http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension=".json" ContentType="application/json"/>'
        '<Default Extension=".vsixmanifest" ContentType="text/xml"/></Types>'
    )
    package = {
        "name": name,
        "publisher": publisher,
        "version": version,
        "engines": {"vscode": "^1.80.0"},
    }
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("extension.vsixmanifest", manifest)
        archive.writestr("[Content_Types].xml", types)
        archive.writestr("extension/package.json", json.dumps(package))
    return path


@SLOW
def test_extensions_are_idempotent_by_exact_id_and_version(
    tmp_path: Path, ide_installs: IdeInstalls
) -> None:
    code_server = ide_installs.code_server.code_server
    exts, data = tmp_path / "extensions", tmp_path / "user-data"
    longer = make_vsix(tmp_path / "longer.vsix", "LoomTest", "hello-world", "0.0.1")
    hello = make_vsix(tmp_path / "hello.vsix", "LoomTest", "hello", "0.0.1")
    assert install_extensions(code_server, exts, data, [str(longer)]) == [
        "LoomTest.hello-world@0.0.1"
    ]
    # "loomtest.hello" is a substring of the installed id, but another extension
    messages: list[str] = []
    result = install_extensions(code_server, exts, data, [str(hello)], progress=messages.append)
    assert result == ["LoomTest.hello@0.0.1"]
    assert messages == ["installing extension LoomTest.hello@0.0.1"]
    installed = installed_extensions(exts)
    assert {k: v.version for k, v in installed.items()} == {
        "loomtest.hello-world": "0.0.1",
        "loomtest.hello": "0.0.1",
    }
    # the same id in another case and the same version: already installed, nothing runs
    shouting = make_vsix(tmp_path / "shouting.vsix", "LOOMTEST", "HELLO", "0.0.1")
    messages.clear()
    start = time.monotonic()
    install_extensions(
        code_server, exts, data, [str(hello), str(shouting)], progress=messages.append
    )
    assert time.monotonic() - start < 2
    assert messages == [
        "extension LoomTest.hello@0.0.1 is already installed",
        "extension LOOMTEST.HELLO@0.0.1 is already installed",
    ]
    # another version is not "installed": it replaces the old one
    newer = make_vsix(tmp_path / "newer.vsix", "LoomTest", "hello", "0.0.2")
    assert install_extensions(code_server, exts, data, [str(newer)]) == ["LoomTest.hello@0.0.2"]
    assert installed_extensions(exts)["loomtest.hello"].version == "0.0.2"


@SLOW
def test_extension_from_a_url_is_downloaded_once(
    web: Served, tmp_path: Path, ide_installs: IdeInstalls
) -> None:
    make_vsix(web.root / "remote.vsix", "LoomTest", "remote", "1.2.3")
    web.failures["/remote.vsix"] = 1  # one transient failure: retried
    code_server = ide_installs.code_server.code_server
    downloads = tmp_path / "downloads"
    args = (code_server, tmp_path / "exts", tmp_path / "data", [web.url("remote.vsix")])
    assert install_extensions(*args, download_dir=downloads) == ["LoomTest.remote@1.2.3"]
    assert len(list(downloads.iterdir())) == 1
    assert install_extensions(*args, download_dir=downloads) == ["LoomTest.remote@1.2.3"]
    assert web.requests == ["/remote.vsix", "/remote.vsix"]  # the 503, then the file; no more


@SLOW
def test_vsce_packages_an_extension_offline(tmp_path: Path, ide_installs: IdeInstalls) -> None:
    vsce = ide_installs.code_server.vsce
    assert vsce is not None
    source = tmp_path / "ext"
    source.mkdir()
    (source / "package.json").write_text(
        json.dumps({
            "name": "packaged", "publisher": "LoomTest", "version": "0.1.0", "license": "MIT",
            "description": "test", "engines": {"vscode": "^1.80.0"},
        })
    )  # fmt: skip
    (source / "README.md").write_text("# packaged\n")
    (source / "LICENSE").write_text("MIT\n")
    out = tmp_path / "packaged.vsix"
    done = subprocess.run(
        [str(vsce), "package", "--no-dependencies", "--allow-missing-repository", "-o", str(out)],
        cwd=source, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(read_vsix(out)) == "LoomTest.packaged@0.1.0"
    installed = install_extensions(
        ide_installs.code_server.code_server, tmp_path / "exts", tmp_path / "data", [str(out)]
    )
    assert installed == ["LoomTest.packaged@0.1.0"]


def test_bad_extension_sources(web: Served, tmp_path: Path) -> None:
    not_zip = tmp_path / "not.vsix"
    not_zip.write_text("hello")
    no_manifest = tmp_path / "empty.vsix"
    with zipfile.ZipFile(no_manifest, "w") as archive:
        archive.writestr("readme.md", "hi")
    # code-server is never run for these, so any path will do for it
    args = ("/nonexistent/code-server", tmp_path / "exts", tmp_path / "data")
    cases = [
        (str(not_zip), "not a readable .vsix"),
        (str(no_manifest), "has no extension/package.json"),
        (str(tmp_path / "nope.vsix"), "does not exist"),
        (web.url("nope.vsix"), "HTTP 404"),
        ("ftp://example.invalid/x.vsix", "only http"),
    ]
    for source, message in cases:
        with pytest.raises(IdeInstallError, match=message):
            install_extensions(*args, [source], retries=1)


@SLOW
def test_code_server_refusing_an_extension_is_an_error(
    tmp_path: Path, ide_installs: IdeInstalls
) -> None:
    bad = tmp_path / "bad.vsix"
    with zipfile.ZipFile(bad, "w") as archive:  # no engines.vscode: code-server refuses it
        archive.writestr("extension/package.json", json.dumps(
            {"name": "bad", "publisher": "LoomTest", "version": "1.0.0"}
        ))  # fmt: skip
    with pytest.raises(IdeInstallError, match=r"could not install extension LoomTest.bad@1.0.0"):
        install_extensions(
            ide_installs.code_server.code_server, tmp_path / "exts", tmp_path / "data", [str(bad)]
        )


# -- kernelspecs --------------------------------------------------------------------------------


def test_kernelspec_for_an_interpreter_with_ipykernel(tmp_path: Path) -> None:
    kernel = write_kernelspec(tmp_path / "kernels", sys.executable, name="mine")
    spec = json.loads((kernel / "kernel.json").read_text())
    assert kernel == tmp_path / "kernels/mine"
    assert spec["argv"] == [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert spec["language"] == "python" and spec["metadata"] == {"debugger": True}
    with pytest.raises(ValueError, match="kernel name"):
        write_kernelspec(tmp_path / "kernels", sys.executable, name="no/slashes")


@pytest.fixture
def bare_python(tmp_path: Path) -> Path:
    """A task interpreter without ipykernel: a fresh virtual environment without pip."""
    venv = tmp_path / "task-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv / "tasklib.py").write_text("VALUE = 42\n")
    return venv / "bin/python"


def test_kernelspec_without_ipykernel_and_nothing_to_borrow(
    tmp_path: Path, bare_python: Path
) -> None:
    with pytest.raises(IdeInstallError, match=r"cannot import ipykernel.*-m pip install ipykernel"):
        write_kernelspec(tmp_path / "kernels", bare_python)
    with pytest.raises(IdeInstallError, match="cannot run the kernel's interpreter"):
        write_kernelspec(tmp_path / "kernels", tmp_path / "no-such-python")


_KERNEL_CLIENT = textwrap.dedent(
    """
    import json
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name="loom-task", startup_timeout=60)
    try:
        out = []
        def hook(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
        code = ("import sys, ipykernel, tasklib; "
                "print(json.dumps([sys.prefix, ipykernel.__file__, sys.path[-1], tasklib.VALUE]))")
        reply = kc.execute_interactive("import json; " + code, output_hook=hook, timeout=60)
        print(json.dumps({"status": reply["content"]["status"], "out": "".join(out)}))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    """
)


@SLOW
def test_kernel_runs_on_the_task_interpreter_and_borrows_ipykernel(
    tmp_path: Path, bare_python: Path, ide_installs: IdeInstalls
) -> None:
    jupyter = ide_installs.jupyter
    kernel = write_kernelspec(tmp_path / "share/jupyter/kernels", bare_python, jupyter)
    spec = json.loads((kernel / "kernel.json").read_text())
    assert spec["argv"][0] == str(bare_python)
    env = {
        **os.environ,
        "JUPYTER_PATH": str(tmp_path / "share/jupyter"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "PYTHONPATH": str(bare_python.parent.parent),  # where the task's own module lives
    }
    done = subprocess.run(
        [str(jupyter.python), "-c", _KERNEL_CLIENT],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "ok", result
    prefix, ipykernel_file, last_path, value = json.loads(result["out"])
    assert Path(prefix) == bare_python.parent.parent  # the task's interpreter
    assert Path(ipykernel_file).is_relative_to(jupyter.site_packages)  # borrowed
    assert Path(last_path) == jupyter.site_packages  # appended: the task's packages win
    assert value == 42
