"""loom's VS Code extension: packaged offline with vsce, installable into code-server, and its
code (debug adapter, Resume/Abort, idle countdown) run on Node against a stand-in ``vscode``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from loom import __version__
from loom.interactive._vsix import (
    DEBUG_TYPE,
    EXTENSION_ID,
    EXTENSION_SOURCE,
    extension_version,
    package_extension,
    vsix_name,
)
from loom.interactive._workspace import prepare_workspace

from .test_workspace import INPUTS, SESSION, make_bundle


@pytest.fixture(scope="module")
def code_server(ide_installs: Any) -> Any:
    install = ide_installs.code_server
    assert install.vsce is not None and install.node is not None, install
    return install


@pytest.fixture(scope="module")
def vsix(code_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package_extension(code_server.vsce, code_server.node, tmp_path_factory.mktemp("vsix"))


def source_tree() -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(EXTENSION_SOURCE.rglob("*")) if p.is_file()}


# -- packaging ----------------------------------------------------------------------------------


def test_vsix_declares_the_debugger_and_the_commands(vsix: Path) -> None:
    assert vsix.name == vsix_name() == f"loom.loom-interactive-{extension_version()}.vsix"
    if re.fullmatch(r"\d+\.\d+\.\d+", __version__):
        assert extension_version() == __version__
    with zipfile.ZipFile(vsix) as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("extension/package.json"))
        vsixmanifest = z.read("extension.vsixmanifest").decode()
    assert {"extension/extension.js", "extension/package.json"} <= names
    assert f"{manifest['publisher']}.{manifest['name']}" == EXTENSION_ID
    assert manifest["version"] == extension_version()
    assert f'Id="loom-interactive" Version="{extension_version()}" Publisher="loom"' in vsixmanifest
    # code-server 4.139.1 is VS Code 1.139
    assert re.fullmatch(r"\^1\.\d+\.0", manifest["engines"]["vscode"])
    assert int(manifest["engines"]["vscode"].split(".")[1]) <= 139

    (debugger,) = manifest["contributes"]["debuggers"]
    assert debugger["type"] == DEBUG_TYPE
    assert debugger["label"] == "Python (loom)"
    assert {"language": "python"} in manifest["contributes"]["breakpoints"]
    commands = {c["command"]: c["title"] for c in manifest["contributes"]["commands"]}
    assert commands == {"loom.resume": "Resume task", "loom.abort": "Abort task"}
    assert "workspaceContains:.loom/session.json" in manifest["activationEvents"]
    assert f"onDebugResolve:{DEBUG_TYPE}" in manifest["activationEvents"]


def test_packaging_never_writes_into_the_source_and_replaces_its_output(
    code_server: Any, tmp_path: Path
) -> None:
    before = source_tree()
    first = package_extension(code_server.vsce, code_server.node, tmp_path / "out")
    first.write_bytes(b"stale")
    again = package_extension(code_server.vsce, code_server.node, tmp_path / "out")
    assert again == first
    assert zipfile.is_zipfile(again)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [vsix_name()]
    assert source_tree() == before


def test_vsix_installs_into_code_server_offline_by_id_and_version(
    code_server: Any, vsix: Path, tmp_path: Path
) -> None:
    # code-server writes config and state under XDG dirs even for --list-extensions
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
    }
    dirs = [
        "--extensions-dir", str(tmp_path / "extensions"),
        "--user-data-dir", str(tmp_path / "user-data"),
        "--config", str(tmp_path / "config.yaml"),
    ]  # fmt: skip
    binary = str(code_server.code_server)
    done = subprocess.run(
        [binary, *dirs, "--install-extension", str(vsix)],
        capture_output=True, text=True, env=env, timeout=180, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    listed = subprocess.run(
        [binary, *dirs, "--list-extensions", "--show-versions"],
        capture_output=True, text=True, env=env, timeout=180, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert f"{EXTENSION_ID}@{extension_version()}" in listed.stdout.split()
    installed = tmp_path / "extensions" / f"{EXTENSION_ID}-{extension_version()}"
    assert json.loads((installed / "package.json").read_text())["name"] == "loom-interactive"


# -- the extension's code, on Node, against a stand-in for the vscode API -----------------------

HARNESS = r"""
const Module = require("module");
// node -e SCRIPT ARGS: process.argv is [node, ...ARGS]
const [extPath, scenarioText] = process.argv.slice(1);
const scenario = JSON.parse(scenarioText);
const log = { messages: [], progress: [], saveAll: 0, texts: [], output: "" };
const commands = {};
let factory, provider;
const item = { text: "", tooltip: "", show() { log.shown = true; }, dispose() {} };
const folder = { uri: { scheme: "file", fsPath: scenario.root }, name: "ws", index: 0 };
const disposable = { dispose() {} };
const vscode = {
  DebugAdapterExecutable: class {
    constructor(command, args, options) { Object.assign(this, { command, args, options }); }
  },
  ThemeColor: class { constructor(id) { this.id = id; } },
  ProgressLocation: { Notification: 15 },
  StatusBarAlignment: { Left: 1, Right: 2 },
  window: {
    createOutputChannel: () => ({
      append(t) { log.output += t; },
      appendLine(t) { log.output += t + "\n"; },
      show() {},
      dispose() {},
    }),
    createStatusBarItem: () => item,
    showErrorMessage: async (m) => { log.messages.push(["error", m]); },
    showInformationMessage: async (m) => { log.messages.push(["info", m]); },
    showWarningMessage: async (m, options, ...items) => {
      log.messages.push(["warning", m, options]);
      return scenario.confirm ? items[0] : undefined;
    },
    withProgress: async (options, task) => {
      log.progress.push(options.title);
      return task({ report() {} });
    },
    showQuickPick: async (items) => {
      log.picks = items.map((i) => i.id);
      return items.find((i) => i.id === scenario.pick);
    },
    activeTextEditor: undefined,
  },
  workspace: {
    workspaceFolders: [folder],
    getConfiguration: () => ({ get: () => undefined }),
    saveAll: async () => { log.saveAll += 1; return true; },
  },
  debug: {
    registerDebugAdapterDescriptorFactory: (type, f) => {
      log.factoryType = type;
      factory = f;
      return disposable;
    },
    registerDebugConfigurationProvider: (type, p) => {
      log.providerType = type;
      provider = p;
      return disposable;
    },
  },
  commands: {
    registerCommand: (id, fn) => { commands[id] = fn; return disposable; },
    executeCommand: (id, ...args) => commands[id](...args),
  },
};
const load = Module._load;
Module._load = function (request, ...rest) {
  return request === "vscode" ? vscode : load.call(this, request, ...rest);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

(async () => {
  const context = { subscriptions: [] };
  require(extPath).activate(context);
  log.commands = Object.keys(commands).sort();
  log.texts.push(item.text);
  for (let i = 0; i < 100 && item.text === log.texts[0]; i++) await sleep(100);  // first poll
  log.texts.push(item.text);
  if (scenario.tick !== false) await sleep(2200);  // the countdown ticks locally
  log.texts.push(item.text);
  log.tooltip = item.tooltip;
  log.warning = item.backgroundColor ? item.backgroundColor.id : null;
  const session = (configuration) => ({ workspaceFolder: folder, configuration });
  log.adapters = [
    factory.createDebugAdapterDescriptor(session({ python: "/given/python" })),
    factory.createDebugAdapterDescriptor(session({})),
  ];
  log.resolved = provider.resolveDebugConfiguration(
    folder, { type: "loom-python", request: "launch", name: "x", program: "p.py" },
  );
  for (const action of scenario.actions) {
    if (action === "click") await vscode.commands.executeCommand("loom.sessionActions");
    else await commands[action]();
  }
  log.final = item.text;
  for (const d of context.subscriptions) d.dispose();
  process.stdout.write(JSON.stringify(log));
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
"""

# Stands in for `<python> -m loom.interactive ...`: logs its arguments, answers from files.
FAKE_PYTHON = """\
    #!/bin/sh
    here=$(dirname "$0")
    echo "$PWD | $*" >> "$here/calls.log"
    shift 2
    case "$1" in
      status) [ -f "$here/status.json" ] || { echo "no session server" >&2; exit 1; }
              cat "$here/status.json" ;;
      resume) echo "resuming..."
              echo "Traceback (most recent call last):" >&2
              echo "ImportError: cannot import name 'labl' from 'shop.helpers'" >&2
              exit 1 ;;
      abort)  echo "aborted"; exit 0 ;;
    esac
    """


def run_extension(
    tmp_path: Path, node: Path, status: dict[str, Any] | None, **scenario: Any
) -> tuple[dict[str, Any], list[str], Path]:
    tools = tmp_path / "tools"
    tools.mkdir(parents=True)
    fake = tools / "python"
    fake.write_text(textwrap.dedent(FAKE_PYTHON))
    fake.chmod(0o755)
    if status is not None:
        (tools / "status.json").write_text(json.dumps(status))
    ws = prepare_workspace(
        tmp_path / "ws", make_bundle(tmp_path / "bundle"), "shop.tasks", "total", INPUTS,
        python=fake, session=SESSION,
    )  # fmt: skip
    scenario = {"root": str(ws.root), "actions": [], **scenario}
    done = subprocess.run(
        [str(node), "-e", HARNESS, str(EXTENSION_SOURCE / "extension.js"), json.dumps(scenario)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    calls = (tools / "calls.log").read_text().splitlines() if (tools / "calls.log").exists() else []
    return json.loads(done.stdout), calls, fake


def test_extension_counts_down_to_the_idle_limit(code_server: Any, tmp_path: Path) -> None:
    status = {
        "state": "ready",
        "max_idle_seconds": 3600,
        "idle_deadline": time.time() + 3600,
        "url": "http://loom.example/sessions/s1/",
    }
    log, calls, fake = run_extension(tmp_path, code_server.node, status)
    assert log["commands"] == ["loom.abort", "loom.resume", "loom.sessionActions"]
    assert log["shown"] is True
    first, polled, later = log["texts"]
    assert re.fullmatch(r"\$\(watch\) loom: idle limit in 59:5\d", polled), polled
    assert re.fullmatch(r"\$\(watch\) loom: idle limit in 59:[45]\d", later), later
    assert later != polled
    assert "http://loom.example/sessions/s1/" in log["tooltip"]
    assert "1:00:00 without activity" in log["tooltip"]
    assert log["warning"] is None
    ws = tmp_path / "ws"
    assert calls[0] == f"{ws} | -m loom.interactive status --output json"

    # the debug adapter: debugpy's, run by the configuration's or the session's interpreter
    assert log["factoryType"] == log["providerType"] == "loom-python"
    given, fallback = log["adapters"]
    assert given["command"] == "/given/python"
    assert given["args"] == ["-m", "debugpy.adapter"]
    assert fallback["command"] == str(fake)
    assert log["resolved"]["python"] == str(fake)


@pytest.mark.parametrize(
    ("status", "text"),
    [
        ({"state": "ready", "max_idle_seconds": None, "idle_deadline": None, "url": "u"},
         "$(watch) loom: no idle limit"),
        ({"state": "ready", "max_idle_seconds": 600, "idle_deadline": 1.0, "url": "u"},
         "$(watch) loom: idle limit reached"),
        ({"state": "resuming", "max_idle_seconds": 600, "idle_deadline": None, "url": "u"},
         "$(sync~spin) loom: resuming"),
        ({"state": "ended", "max_idle_seconds": 600, "idle_deadline": None, "url": "u"},
         "$(debug-stop) loom: session ended"),
        (None, "$(warning) loom"),
    ],
)  # fmt: skip
def test_extension_status_bar_states(
    code_server: Any, tmp_path: Path, status: dict[str, Any] | None, text: str
) -> None:
    log, _, _ = run_extension(tmp_path, code_server.node, status, tick=False)
    assert log["texts"][-1] == text
    if status is None:
        assert "no session server" in log["tooltip"]


def test_resume_saves_shows_progress_and_reports_the_error(
    code_server: Any, tmp_path: Path
) -> None:
    status = {"state": "ready", "max_idle_seconds": 60, "idle_deadline": time.time() + 60}
    log, calls, _ = run_extension(tmp_path, code_server.node, status, actions=["loom.resume"])
    assert log["warning"] == "statusBarItem.warningBackground"  # under 5 minutes left
    assert log["saveAll"] == 1  # resume re-imports from disk: unsaved edits must be on it
    assert log["progress"] == ["loom: resuming the task with your code…"]
    [(kind, message)] = log["messages"]
    assert kind == "error"
    assert message.startswith("loom: resume failed: ")
    assert "ImportError: cannot import name 'labl'" in message
    assert "resuming..." in log["output"] and "(exit code 1)" in log["output"]
    assert any(c.endswith("| -m loom.interactive resume") for c in calls)


def test_abort_asks_first_and_clicking_the_status_offers_both(
    code_server: Any, tmp_path: Path
) -> None:
    status = {"state": "ready", "max_idle_seconds": None, "idle_deadline": None}
    log, calls, _ = run_extension(
        tmp_path, code_server.node, status, actions=["loom.abort"], confirm=False
    )
    assert log["messages"][0][0] == "warning" and log["messages"][0][2] == {"modal": True}
    assert len(log["messages"]) == 1
    assert not any(c.endswith(" abort") for c in calls)  # not confirmed: nothing ran

    log, calls, _ = run_extension(
        tmp_path / "again", code_server.node, status, actions=["click"], confirm=True,
        pick="loom.abort",
    )  # fmt: skip
    assert log["picks"] == ["loom.resume", "loom.abort"]
    assert log["messages"][-1] == ["info", "loom: the task was aborted; this session is ending."]
    assert any(c.endswith("| -m loom.interactive abort") for c in calls)
    assert log["saveAll"] == 0


def test_harness_sees_a_broken_extension(code_server: Any, tmp_path: Path) -> None:
    # the harness must fail when the extension cannot load, or the tests above prove nothing
    broken = tmp_path / "extension.js"
    broken.write_text("throw new Error('broken extension');\n")
    scenario = json.dumps({"root": "/", "actions": []})
    done = subprocess.run(
        [str(code_server.node), "-e", HARNESS, str(broken), scenario],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "broken extension" in done.stderr
