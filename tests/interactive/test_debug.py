"""The "Interactive Debugging" launch configuration, spoken to debugpy's adapter over DAP.

This is what VS Code does when the user presses F5: start ``python -m debugpy.adapter`` (loom's
extension does exactly that), send the launch configuration from ``.vscode/launch.json``, set
breakpoints, and answer the adapter's ``runInTerminal`` request by starting the debuggee.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from loom.interactive._workspace import LAUNCH_DEBUG, prepare_workspace

from .test_workspace import INPUTS, PYTHON, SESSION, make_bundle

TIMEOUT = 60.0


class DapClient:
    """A minimal Debug Adapter Protocol client over an adapter's stdin/stdout."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.seq = 0
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.debuggees: list[subprocess.Popen[bytes]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        while True:
            headers = {}
            while True:
                line = stream.readline()
                if not line:
                    return
                line = line.strip()
                if not line:
                    break
                key, _, value = line.decode().partition(":")
                headers[key.strip().lower()] = value.strip()
            body = stream.read(int(headers["content-length"]))
            self.messages.put(json.loads(body))

    def send(self, message: dict[str, Any]) -> int:
        self.seq += 1
        message = {"seq": self.seq, **message}
        data = json.dumps(message).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(data) + data)
        self.proc.stdin.flush()
        return self.seq

    def request(self, command: str, **arguments: Any) -> int:
        return self.send({"type": "request", "command": command, "arguments": arguments})

    def wait(self, predicate: Any, what: str) -> dict[str, Any]:
        """The next message matching ``predicate``, answering reverse requests meanwhile."""
        while True:
            try:
                message = self.messages.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"no {what} from the adapter; got {self.seen}") from None
            self.seen.append(message)
            if message["type"] == "request" and message["command"] == "runInTerminal":
                self._run_in_terminal(message)
                continue
            if message["type"] == "response" and not message["success"] and predicate(message):
                raise AssertionError(f"{what} failed: {message}")
            if predicate(message):
                return message

    def response(self, seq: int) -> dict[str, Any]:
        reply = self.wait(
            lambda m: m["type"] == "response" and m["request_seq"] == seq, f"response to {seq}"
        )
        body: dict[str, Any] = reply.get("body", {})
        return body

    def call(self, command: str, **arguments: Any) -> dict[str, Any]:
        return self.response(self.request(command, **arguments))

    def event(self, name: str) -> dict[str, Any]:
        return self.wait(lambda m: m["type"] == "event" and m["event"] == name, f"{name} event")

    def _run_in_terminal(self, message: dict[str, Any]) -> None:
        # What VS Code's integrated terminal does: run the command with the given env and cwd.
        args = message["arguments"]
        env = dict(os.environ)
        for key, value in (args.get("env") or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        debuggee = subprocess.Popen(
            args["args"],
            cwd=args.get("cwd") or None,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.debuggees.append(debuggee)
        self.send(
            {
                "type": "response",
                "request_seq": message["seq"],
                "command": "runInTerminal",
                "success": True,
                "body": {"processId": debuggee.pid},
            }
        )

    def close(self) -> None:
        for proc in [*self.debuggees, self.proc]:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def substitute(value: Any, folder: Path) -> Any:
    """VS Code's variable substitution, for the one variable loom's launch.json uses."""
    if isinstance(value, str):
        return value.replace("${workspaceFolder}", str(folder))
    if isinstance(value, list):
        return [substitute(v, folder) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, folder) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    ("attr", "expected"),
    [("total", "pen@3 x4 = 24 (real)"), ("total_async", "async pen@3 = 24")],
)
def test_interactive_debugging_stops_at_a_breakpoint_with_the_real_inputs(
    tmp_path: Path, attr: str, expected: str
) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    inputs = INPUTS if attr == "total" else {k: INPUTS[k] for k in ("item", "count")}
    ws = prepare_workspace(
        tmp_path / "ws", bundle, "shop.tasks", attr, inputs, python=PYTHON, session=SESSION
    )
    assert ws.launch is not None
    configs = json.loads(ws.launch.read_text())["configurations"]
    (config,) = [c for c in configs if c["name"] == LAUNCH_DEBUG]
    config = substitute(config, ws.root)
    source = ws.root / "shop" / "tasks.py"
    line = next(
        n
        for n, text in enumerate(source.read_text().splitlines(), 1)
        if text.endswith(f"# breakpoint: {attr}")
    )

    # The adapter as loom's extension starts it: the launch configuration's interpreter.
    client = DapClient([config["python"], "-m", "debugpy.adapter"], cwd=ws.root)
    try:
        capabilities = client.call(
            "initialize",
            clientID="vscode",
            adapterID=config["type"],
            pathFormat="path",
            linesStartAt1=True,
            columnsStartAt1=True,
            supportsRunInTerminalRequest=True,
            supportsVariableType=True,
        )
        assert capabilities.get("supportsConfigurationDoneRequest")
        launch = client.request("launch", **config)
        client.event("initialized")
        placed = client.call(
            "setBreakpoints", source={"path": str(source)}, breakpoints=[{"line": line}]
        )
        assert placed["breakpoints"][0]["verified"], placed
        client.call("configurationDone")
        client.response(launch)

        stopped = client.event("stopped")
        assert stopped["body"]["reason"] == "breakpoint"
        frames = client.call("stackTrace", threadId=stopped["body"]["threadId"])["stackFrames"]
        top = frames[0]
        assert top["name"] == attr
        assert Path(top["source"]["path"]).resolve() == source.resolve()
        assert top["line"] == line
        scopes = client.call("scopes", frameId=top["id"])["scopes"]
        local = next(s for s in scopes if s["name"] == "Locals")
        variables = {
            v["name"]: v
            for v in client.call("variables", variablesReference=local["variablesReference"])[
                "variables"
            ]
        }
        assert variables["count"]["value"] == "4"
        assert variables["item"]["value"] == "Item(name='pen', price=3)"
        assert variables["item"]["type"] == "Item"
        if attr == "total":
            assert variables["note"]["value"] == "'real'"
        # justMyCode is off: loom's own frames (the local run calling the task) are visible
        assert any("/loom/" in f.get("source", {}).get("path", "") for f in frames[1:])

        client.call("continue", threadId=stopped["body"]["threadId"])
        exited = client.event("exited")
        assert exited["body"]["exitCode"] == 0
        (debuggee,) = client.debuggees
        out = debuggee.communicate(timeout=TIMEOUT)[0].decode()
        assert f"returned {expected!r}" in out, out
        client.request("disconnect")
    finally:
        client.close()


def test_adapter_is_the_one_loom_depends_on() -> None:
    # loom's extension runs `<interpreter> -m debugpy.adapter`: debugpy must be importable there.
    done = subprocess.run(
        [sys.executable, "-c", "import debugpy.adapter, debugpy; print(debugpy.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
