"""Interactive tasks end to end: a real server, real code-server and JupyterLab, the real CLI.

Each test starts a run whose root action opens a session, reaches it through the server's
proxy, then ends it in one of the ways a user can (resume, resume with broken code, idle,
abort, the IDE dying, giving up) and checks the recorded outcome and that no IDE process is
left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._dap import DapClient, local_variables, stop_at_breakpoint, substitute
from tests.conftest import (
    IdeInstalls,
    ServerProcess,
    run_cli,
    session_client,
    start_server,
    write_module,
)

pytestmark = pytest.mark.e2e

FLOW = """
import asyncio
import os
from pathlib import Path

import loom
from loom.interactive import jupyter, vscode

env = loom.TaskEnvironment("ide")
MARKS = Path(os.environ["MARKS_DIR"])


def mark(name):
    def hook():
        with open(MARKS / name, "a") as f:
            f.write("x")
    return hook


@env.task
async def double(x: int) -> int:
    return 2 * x


@vscode(max_idle_seconds=IDLE, pre_execute=mark("pre"), post_execute=mark("post"))
@env.task
async def edit_me(x: int) -> int:
    return await double(x) + 1


@env.task
@vscode(run_task_first=True, pre_execute=mark("pre_first"), post_execute=mark("post_first"))
def maybe_fails(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x


@jupyter(max_idle_seconds=IDLE, notebook_dir="notebooks")
@env.task
async def in_notebook(x: int) -> int:
    return x * 3


@env.task
async def plain(x: int) -> int:
    return x + 100
"""


def flow(tmp_path: Path, idle: float | None = 120) -> Path:
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    code = tmp_path / "code"  # its own source root: the bundle holds nothing else
    code.mkdir(exist_ok=True)
    return write_module(code / "ide_flow.py", FLOW.replace("IDLE", repr(idle)))


def start(server: ServerProcess, tmp_path: Path, path: Path, *args: str) -> str:
    result = run_cli(
        "run", "--remote", "--detach", "--env", f"MARKS_DIR={tmp_path / 'marks'}", str(path),
        *args, env={**server.env, "MARKS_DIR": str(tmp_path / "marks")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def action(server: ServerProcess, run: str, name: str = "a0") -> dict[str, Any]:
    response = httpx.get(
        f"{server.endpoint}/api/v1/runs/{run}/actions/{name}", headers=server.headers
    )
    response.raise_for_status()
    return response.json()


def wait_for(
    server: ServerProcess, run: str, phases: set[str], timeout: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    info = action(server, run)
    while info["phase"] not in phases:
        assert time.monotonic() < deadline, f"still {info['phase']}:\n" + logs(server, run)
        time.sleep(0.2)
        info = action(server, run)
    return info


def wait_ready(server: ServerProcess, run: str) -> dict[str, Any]:
    """The session once its IDE answers through the proxy."""
    info = wait_for(server, run, {"INTERACTIVE", "FAILED", "SUCCEEDED"})
    assert info["phase"] == "INTERACTIVE", logs(server, run)
    deadline = time.monotonic() + 60
    with session_client(server, info["session"]) as client:
        while True:
            response = client.get(info["session"]["url"])
            if response.status_code == 200:
                return info
            assert time.monotonic() < deadline, f"{response.status_code}: {response.text[:500]}"
            time.sleep(0.2)


def logs(server: ServerProcess, run: str, name: str = "a0") -> str:
    return run_cli("get", "logs", run, name, env=server.env).stdout


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=server.env)


def ide_processes(workspace: str) -> list[int]:
    """Live processes started for the session: the IDE and everything it started inherit
    ``LOOM_SESSION_FILE``, which names the session's workspace."""
    marker = f"LOOM_SESSION_FILE={workspace}/".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in environ and state != "Z":
            found.append(int(entry.name))
    return found


def assert_no_processes_left(workspace: str) -> None:
    deadline = time.monotonic() + 10
    while ide_processes(workspace):
        assert time.monotonic() < deadline, f"left behind: {ide_processes(workspace)}"
        time.sleep(0.1)


def edit(workspace: Path, old: str, new: str) -> None:
    source = workspace / "ide_flow.py"
    text = source.read_text()
    assert old in text
    source.write_text(text.replace(old, new))


def test_vscode_session_edit_and_resume(ide_server: ServerProcess, tmp_path: Path) -> None:
    run = start(ide_server, tmp_path, flow(tmp_path), "edit_me", "--x", "5")
    info = wait_ready(ide_server, run)
    session = info["session"]
    assert session["kind"] == "vscode" and session["state"] == "ready"
    workspace = Path(session["workspace"])
    # the editor page, on the session's own origin, through the proxy only for a caller
    # with a key (or the session's cookie)
    assert session["origin"].endswith(".localhost:" + session["origin"].rsplit(":", 1)[1])
    with session_client(ide_server, session) as client:
        page = client.get(session["url"])
        assert page.status_code == 200 and "vscode" in page.text.lower()
        assert page.url.path.startswith(session["url"])  # redirects stay behind the proxy
        assert client.get(session["url"], headers={"Authorization": ""}).status_code == 401
    # and never on the UI's origin
    assert httpx.get(ide_server.endpoint + session["url"]).status_code == 404
    # the workspace: launch configurations, the real inputs, the code outside the source tree
    launch = json.loads((workspace / ".vscode" / "launch.json").read_text())
    names = {c["name"] for c in launch["configurations"]}
    assert {"Interactive Debugging", "Resume Task"} <= names
    assert json.loads((workspace / ".loom" / "inputs.json").read_text()) == {"x": 5}
    assert not str(workspace).startswith(str(tmp_path / "ide_flow.py"))
    assert (tmp_path / "marks" / "pre").read_text() == "x"
    shown = cli(ide_server, "get", "action", run, "a0")
    assert "INTERACTIVE" in shown.stdout and session["url"] in shown.stdout
    # edit, resume: the edited code runs with the original inputs, its child remotely
    edit(workspace, "return await double(x) + 1", "return await double(x) + 1000")
    resumed = cli(ide_server, "resume", run)
    assert resumed.returncode == 0, resumed.stderr
    final = wait_for(ide_server, run, {"SUCCEEDED", "FAILED"})
    assert final["phase"] == "SUCCEEDED", logs(ide_server, run)
    outputs = httpx.get(
        f"{ide_server.endpoint}/api/v1/runs/{run}/actions/a0/outputs", headers=ide_server.headers
    ).json()
    assert outputs["value"] == 1010
    assert_no_processes_left(str(workspace))
    assert (tmp_path / "marks" / "pre").read_text() == "x"
    assert (tmp_path / "marks" / "post").read_text() == "x"  # exactly once each
    diff = cli(ide_server, "session", "diff", run)
    assert "+    return await double(x) + 1000" in diff.stdout
    assert "edits made in the session" in logs(ide_server, run)


def test_resume_with_broken_code_keeps_the_session(
    ide_server: ServerProcess, tmp_path: Path
) -> None:
    run = start(ide_server, tmp_path, flow(tmp_path), "edit_me", "--x", "1")
    workspace = Path(wait_ready(ide_server, run)["session"]["workspace"])
    edit(workspace, "return await double(x) + 1", "return undefined_name")
    broken = cli(ide_server, "resume", run)
    assert broken.returncode == 1
    assert "NameError" in broken.stderr and "session stays open" in broken.stderr
    assert action(ide_server, run)["phase"] == "INTERACTIVE"
    edit(workspace, "return undefined_name", "return (")  # does not even import
    broken = cli(ide_server, "resume", run)
    assert broken.returncode == 1 and "SyntaxError" in broken.stderr
    assert action(ide_server, run)["phase"] == "INTERACTIVE"
    assert "resume failed" in logs(ide_server, run)
    edit(workspace, "return (", "return -x")
    assert cli(ide_server, "resume", run).returncode == 0
    assert wait_for(ide_server, run, {"SUCCEEDED", "FAILED"})["phase"] == "SUCCEEDED"
    assert_no_processes_left(str(workspace))


def test_idle_session_fails_the_action(ide_server: ServerProcess, tmp_path: Path) -> None:
    run = start(ide_server, tmp_path, flow(tmp_path, idle=3), "edit_me", "--x", "1")
    workspace = wait_ready(ide_server, run)["session"]["workspace"]
    final = wait_for(ide_server, run, {"SUCCEEDED", "FAILED", "ABORTED"}, timeout=60)
    assert final["phase"] == "FAILED"
    assert "interactive session idle for 3 s" in final["error"]["message"]
    assert_no_processes_left(workspace)
    assert (tmp_path / "marks" / "post").read_text() == "x"


def test_abort_stops_the_ide(ide_server: ServerProcess, tmp_path: Path) -> None:
    run = start(ide_server, tmp_path, flow(tmp_path), "edit_me", "--x", "1")
    workspace = wait_ready(ide_server, run)["session"]["workspace"]
    assert cli(ide_server, "abort", "run", run).returncode == 0
    assert wait_for(ide_server, run, {"ABORTED"})["phase"] == "ABORTED"
    assert_no_processes_left(workspace)


def test_an_ide_that_dies_fails_the_action(ide_server: ServerProcess, tmp_path: Path) -> None:
    run = start(ide_server, tmp_path, flow(tmp_path), "edit_me", "--x", "1")
    workspace = wait_ready(ide_server, run)["session"]["workspace"]
    main = [
        p for p in ide_processes(workspace)
        if b"code-server" in Path(f"/proc/{p}/cmdline").read_bytes()
    ]  # fmt: skip
    assert main
    for pid in main:
        os.kill(pid, signal.SIGKILL)
    final = wait_for(ide_server, run, {"SUCCEEDED", "FAILED"})
    assert final["phase"] == "FAILED"
    assert "exited by itself" in final["error"]["message"]
    assert_no_processes_left(workspace)


def first_look(server: ServerProcess, run: str) -> tuple[dict[str, Any], httpx.Response]:
    """The action the moment it is first seen INTERACTIVE, and the answer to one request
    through its session's link made right then (no waiting for the IDE)."""
    deadline = time.monotonic() + 120
    while True:
        info = action(server, run)
        if info["phase"] == "INTERACTIVE" or info["session"] is not None:
            break
        assert info["phase"] in ("QUEUED", "RUNNING"), logs(server, run)
        assert time.monotonic() < deadline, logs(server, run)
        time.sleep(0.02)
    session = info["session"]
    with session_client(server, session) as client:
        return info, client.get(session["url"])


@pytest.mark.parametrize(("task", "kind"), [("edit_me", "vscode"), ("in_notebook", "jupyter")])
def test_a_session_is_usable_once_it_is_reported_ready(
    ide_server: ServerProcess, tmp_path: Path, task: str, kind: str
) -> None:
    """Ready means usable: the first request through the link, made as soon as the action
    shows its session, reaches the IDE (not the proxy's 502 while the IDE boots)."""
    run = start(ide_server, tmp_path, flow(tmp_path), task, "--x", "1")
    info, first = first_look(ide_server, run)
    session = info["session"]
    assert info["phase"] == "INTERACTIVE" and session["kind"] == kind
    assert session["state"] == "ready"
    assert first.status_code == 200, f"{first.status_code}: {first.text[:300]}"
    assert ("vscode" if kind == "vscode" else "JupyterLab") in first.text
    assert cli(ide_server, "abort", "run", run).returncode == 0
    assert wait_for(ide_server, run, {"ABORTED"})["phase"] == "ABORTED"
    assert_no_processes_left(session["workspace"])


def test_run_task_first_success_opens_no_session(ide_server: ServerProcess, tmp_path: Path) -> None:
    run = start(ide_server, tmp_path, flow(tmp_path), "maybe_fails", "--x", "4")
    final = wait_for(ide_server, run, {"SUCCEEDED", "FAILED"})
    assert final["phase"] == "SUCCEEDED" and final["session"] is None
    # the seeds: pre_execute runs "immediately before the VSCode server setup begins",
    # post_execute "just before the VSCode server terminates": no IDE, no hooks
    assert sorted(p.name for p in (tmp_path / "marks").iterdir()) == []


def test_run_task_first_failure_opens_a_session(ide_server: ServerProcess, tmp_path: Path) -> None:
    run = start(ide_server, tmp_path, flow(tmp_path), "maybe_fails", "--x", "-1")
    workspace = Path(wait_ready(ide_server, run)["session"]["workspace"])
    assert "ValueError: negative: -1" in (workspace / "loom_error.txt").read_text()
    assert "ValueError: negative: -1" in logs(ide_server, run)
    gave_up = cli(ide_server, "resume", "--fail", run)
    assert gave_up.returncode == 0, gave_up.stderr
    final = wait_for(ide_server, run, {"SUCCEEDED", "FAILED"})
    assert final["phase"] == "FAILED" and final["error"]["type"] == "ValueError"
    assert_no_processes_left(str(workspace))
    # a session opened, so both hooks ran around it, once each
    assert (tmp_path / "marks" / "pre_first").read_text() == "x"
    assert (tmp_path / "marks" / "post_first").read_text() == "x"


def test_debug_flag_makes_any_task_interactive(ide_server: ServerProcess, tmp_path: Path) -> None:
    path = flow(tmp_path)
    run = start(ide_server, tmp_path, path, "plain", "--x", "1")
    assert wait_for(ide_server, run, {"SUCCEEDED", "FAILED"})["phase"] == "SUCCEEDED"
    result = run_cli(
        "run", "--remote", "--detach", "--debug", "--env", f"MARKS_DIR={tmp_path / 'marks'}",
        str(path), "plain", "--x", "2",
        env={**ide_server.env, "MARKS_DIR": str(tmp_path / "marks")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    debugged = result.stdout.strip()
    workspace = Path(wait_ready(ide_server, debugged)["session"]["workspace"])
    assert cli(ide_server, "resume", debugged).returncode == 0
    assert wait_for(ide_server, debugged, {"SUCCEEDED", "FAILED"})["phase"] == "SUCCEEDED"
    assert_no_processes_left(str(workspace))
    # `loom debug` re-runs a finished action interactively, with its bundle and inputs
    rerun = cli(ide_server, "debug", run, "-o", "json")
    assert rerun.returncode == 0, rerun.stderr
    again = json.loads(rerun.stdout)["name"]
    session = wait_ready(ide_server, again)["session"]
    assert json.loads((Path(session["workspace"]) / ".loom" / "inputs.json").read_text()) == {
        "x": 1
    }
    assert cli(ide_server, "resume", again).returncode == 0
    final = wait_for(ide_server, again, {"SUCCEEDED", "FAILED"})
    assert final["phase"] == "SUCCEEDED"


def test_an_attached_run_prints_the_session_address_and_waits_for_the_resume(
    ide_server: ServerProcess, tmp_path: Path
) -> None:
    path = flow(tmp_path)
    attached = subprocess.Popen(
        [sys.executable, "-m", "loom.cli", "run", "--remote", "--debug",
         "--env", f"MARKS_DIR={tmp_path / 'marks'}", str(path), "plain", "--x", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **ide_server.env, "MARKS_DIR": str(tmp_path / "marks")},
    )  # fmt: skip
    try:
        assert attached.stderr is not None
        lines = []
        for line in attached.stderr:  # the CLI names the run, then the session once it opens
            lines.append(line)
            if "interactive vscode session for action a0:" in line:
                break
        else:
            raise AssertionError("no session address in:\n" + "".join(lines))
        run = next(x.split()[2] for x in lines if x.startswith("created run "))
        assert ".localhost:" in line and "/_loom/enter?ticket=" in line  # a way in, once
        # printed means usable: the very first request through the link is answered by the IDE
        session = action(ide_server, run)["session"]
        with session_client(ide_server, session) as client:
            first = client.get(session["url"])
        assert first.status_code == 200, f"{first.status_code}: {first.text[:300]}"
        assert cli(ide_server, "resume", run).returncode == 0
        out, err = attached.communicate(timeout=120)
    finally:
        attached.kill()
    assert attached.returncode == 0, err
    assert out.strip() == "103" and f"run {run} succeeded" in err


def test_jupyter_session(
    ide_server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = start(ide_server, tmp_path, flow(tmp_path), "in_notebook", "--x", "7")
    session = wait_ready(ide_server, run)["session"]
    assert session["kind"] == "jupyter"
    base = session["url"]
    client = session_client(ide_server, session)
    lab = client.get(base + "lab")
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    assert client.get(base + "lab", headers={"Authorization": ""}).status_code == 401
    workspace = Path(session["workspace"])
    notebooks = list((workspace / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == 1
    contents = client.get(base + f"api/contents/{notebooks[0].name}")
    assert contents.status_code == 200, contents.text
    client.close()
    # the generated notebook, every cell as generated: it loads the real inputs, runs the
    # task, and its last cell, resume(), resumes the action
    import nbclient
    import nbformat

    for key, value in {
        "MARKS_DIR": str(tmp_path / "marks"),
        "LOOM_SESSION_FILE": str(workspace / ".loom" / "session.json"),
        "LOOM_API_KEY": ide_server.api_key,
        **ide_server.env,
    }.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(notebooks[0], as_version=4)
    nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(notebooks[0].parent)}},
    ).execute()
    (ran,) = [c for c in notebook.cells if "run_aio" in c.source]
    results = [o["data"]["text/plain"] for o in ran.outputs if o.get("data")]
    assert results == ["21"]  # in_notebook(x=7), run with the real input
    assert "resume" in notebook.cells[-1].source
    final = wait_for(ide_server, run, {"SUCCEEDED", "FAILED"})
    assert final["phase"] == "SUCCEEDED", logs(ide_server, run)
    assert_no_processes_left(str(workspace))


def test_interactive_debugging_breaks_in_the_session_workspace(
    ide_server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F5 on "Interactive Debugging" in a real session's workspace stops in the task body with
    the real inputs (driven over DAP, as VS Code and loom's extension drive debugpy)."""
    run = start(ide_server, tmp_path, flow(tmp_path), "edit_me", "--x", "21")
    workspace = Path(wait_ready(ide_server, run)["session"]["workspace"])
    configs = json.loads((workspace / ".vscode" / "launch.json").read_text())["configurations"]
    config = substitute(next(c for c in configs if c["name"] == "Interactive Debugging"), workspace)
    source = workspace / "ide_flow.py"
    line = source.read_text().splitlines().index("    return await double(x) + 1") + 1
    monkeypatch.setenv("MARKS_DIR", str(tmp_path / "marks"))  # the debuggee imports the flow
    client = DapClient([config["python"], "-m", "debugpy.adapter"], cwd=workspace)
    try:
        thread = stop_at_breakpoint(client, config, source, line)["body"]["threadId"]
        top = client.call("stackTrace", threadId=thread)["stackFrames"][0]
        assert top["name"] == "edit_me" and top["line"] == line
        assert local_variables(client, top)["x"]["value"] == "21"
        client.call("continue", threadId=thread)
        assert client.event("exited")["body"]["exitCode"] == 0
        client.request("disconnect")
    finally:
        client.close()
    assert action(ide_server, run)["phase"] == "INTERACTIVE"  # debugging is not resuming
    assert cli(ide_server, "resume", run).returncode == 0
    assert wait_for(ide_server, run, {"SUCCEEDED", "FAILED"})["phase"] == "SUCCEEDED"


def test_commands_inside_the_session_use_its_own_environment(
    ide_server: ServerProcess, tmp_path: Path
) -> None:
    """What "Resume Task" and the editor's commands run: `python -m loom.interactive ...` in
    the environment the IDE gives its terminals (read from the running code-server)."""
    run = start(ide_server, tmp_path, flow(tmp_path), "edit_me", "--x", "2")
    workspace = Path(wait_ready(ide_server, run)["session"]["workspace"])
    (pid, *_) = ide_processes(str(workspace))
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    ide_env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    launch = json.loads((workspace / ".vscode" / "launch.json").read_text())
    (resume_config,) = [c for c in launch["configurations"] if c["name"] == "Resume Task"]

    def inside(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [resume_config["python"], "-m", "loom.interactive", *args],
            env=ide_env, cwd=workspace, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    status = inside("status", "--output", "json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["state"] == "ready" and doc["max_idle_seconds"] == 120
    assert doc["idle_deadline"] > time.time()
    edit(workspace, "return await double(x) + 1", "return await double(x) + 2")
    resumed = inside(*resume_config["args"])
    assert resumed.returncode == 0, resumed.stderr
    final = wait_for(ide_server, run, {"SUCCEEDED", "FAILED"})
    assert final["phase"] == "SUCCEEDED"
    assert_no_processes_left(str(workspace))


def test_a_worker_without_the_ide_fails_clearly_once(tmp_path: Path, loom_home: Path) -> None:
    server = start_server(
        tmp_path / "server-data", home=loom_home, env={"LOOM_IDE_DIR": str(tmp_path / "none")}
    )
    try:
        run = start(server, tmp_path, flow(tmp_path), "edit_me", "--x", "1")
        final = wait_for(server, run, {"SUCCEEDED", "FAILED"})
        assert final["phase"] == "FAILED"
        assert "loom ide install vscode" in final["error"]["message"]
        assert final["error"]["kind"] == "system" and len(final["attempts"]) == 1
    finally:
        server.stop()


SEEDS_CONFIG_FLOW = """
import loom
from loom.interactive import VscodeConfig, vscode

env = loom.TaskEnvironment("seeds")

# as seeds 000 and 001 write it: the platform key "linux-x64", and add_extensions called for
# its effect, its return value dropped
config = VscodeConfig(code_server_remote_paths={KEY: URL})
config.add_extensions(VSIX)


@env.task
@vscode(config=config)
def say_hello(name: str) -> str:
    return f"Hello, {name}!"
"""


def test_a_session_runs_the_code_server_its_config_downloads(
    tmp_path: Path, loom_home: Path, ide_installs: IdeInstalls
) -> None:
    """``VscodeConfig(code_server_remote_paths={"linux-x64": url})``: the session downloads the
    tarball (served here on loopback), unpacks it into the IDE dir and starts code-server from
    it, with the extension the seeds' ``config.add_extensions(...)`` added."""
    import functools
    import http.server
    import tarfile
    import threading

    from loom.interactive._config import current_arch
    from loom.interactive._install import installed_extensions
    from tests.interactive.test_install import make_vsix

    # the release: a real code-server, repackaged as a tarball whose bin/code-server starts the
    # installed one (and notes that it was started from where the tarball was unpacked)
    www = tmp_path / "www"
    www.mkdir()
    launcher = (
        "#!/bin/sh\n"
        'if [ -n "$MARKS_DIR" ]; then echo "$0" >> "$MARKS_DIR/code-server-from"; fi\n'
        f'exec "{ide_installs.code_server.code_server}" "$@"\n'
    )
    script = tmp_path / "code-server"
    script.write_text(launcher)
    script.chmod(0o755)
    top = "code-server-4.139.1-linux-amd64"
    with tarfile.open(www / "code-server.tar.gz", "w:gz") as tar:
        tar.add(script, f"{top}/bin/code-server")
    vsix = make_vsix(tmp_path / "greeter.vsix", "loomtest", "greeter", "0.0.1")
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

    web = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(www))
    )
    threading.Thread(target=web.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{web.server_address[1]}/code-server.tar.gz"
    key = f"linux-{'x64' if current_arch() == 'amd64' else current_arch()}"
    code = tmp_path / "code"
    code.mkdir()
    module = write_module(
        code / "seeds_flow.py",
        SEEDS_CONFIG_FLOW.replace("KEY", repr(key))
        .replace("URL", repr(url))
        .replace("VSIX", repr(str(vsix))),
    )
    (tmp_path / "marks").mkdir()
    ide_dir = tmp_path / "ide"  # its own: no code-server-tarball-* in the shared cache
    ide_dir.mkdir()
    # but the pinned npm install is there (as on a worker that ran `loom ide install`): its
    # vsce packs loom's extension, which a release tarball cannot
    npm_install = ide_installs.code_server.root
    (ide_dir / npm_install.name).symlink_to(npm_install)
    server = start_server(
        tmp_path / "server-data", home=loom_home, env={"LOOM_IDE_DIR": str(ide_dir)}
    )
    try:
        run = start(server, tmp_path, module, "say_hello", "--name", "seeds")
        info, first = first_look(server, run)
        assert info["phase"] == "INTERACTIVE", logs(server, run)
        assert first.status_code == 200 and "vscode" in first.text.lower()
        assert requests == ["/code-server.tar.gz"]
        (install,) = ide_dir.glob("code-server-tarball-*")
        started_from = (tmp_path / "marks" / "code-server-from").read_text().splitlines()
        # the last start is the session's (before it: the install's checks, from the build)
        assert started_from[-1] == f"{install}/release/{top}/bin/code-server", started_from
        extensions = installed_extensions(ide_dir / "extensions" / "code-server-4.139.1")
        assert "loomtest.greeter" in extensions and "loom.loom-interactive" in extensions
        assert "downloading " + url in logs(server, run)
        assert cli(server, "resume", run).returncode == 0
        final = wait_for(server, run, {"SUCCEEDED", "FAILED"})
        assert final["phase"] == "SUCCEEDED", logs(server, run)
        assert_no_processes_left(info["session"]["workspace"])
    finally:
        server.stop()
        web.shutdown()
        web.server_close()
