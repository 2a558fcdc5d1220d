"""Driving debugpy's adapter over the Debug Adapter Protocol, as VS Code does on F5.

VS Code (and loom's extension) start ``<interpreter> -m debugpy.adapter``, send the launch
configuration from ``.vscode/launch.json``, set breakpoints, and answer the adapter's
``runInTerminal`` request by starting the debuggee; :class:`DapClient` does the same.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from pathlib import Path
from typing import Any

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


def stop_at_breakpoint(
    client: DapClient, config: dict[str, Any], source: Path, line: int
) -> dict[str, Any]:
    """F5 on ``config`` with one breakpoint at ``line`` of ``source``: the ``stopped`` event
    once the debuggee reaches it."""
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
    assert capabilities.get("supportsConfigurationDoneRequest"), capabilities
    # the order VS Code keeps: the launch is answered only after configurationDone
    launch = client.request("launch", **config)
    client.event("initialized")
    placed = client.call(
        "setBreakpoints", source={"path": str(source)}, breakpoints=[{"line": line}]
    )
    assert placed["breakpoints"][0]["verified"], placed
    client.call("configurationDone")
    client.response(launch)
    stopped = client.event("stopped")
    assert stopped["body"]["reason"] == "breakpoint", stopped
    return stopped


def local_variables(client: DapClient, frame: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``Locals`` scope of a stack frame, by name."""
    scopes = client.call("scopes", frameId=frame["id"])["scopes"]
    local = next(s for s in scopes if s["name"] == "Locals")
    found = client.call("variables", variablesReference=local["variablesReference"])
    return {v["name"]: v for v in found["variables"]}
