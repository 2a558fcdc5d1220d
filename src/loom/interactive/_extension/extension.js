// loom's VS Code extension for interactive task sessions: a Python debugger that needs nothing
// but debugpy, the Resume/Abort commands, and a status-bar countdown to the idle limit.
"use strict";

const childProcess = require("child_process");
const fs = require("fs");
const path = require("path");
const vscode = require("vscode");

const DEBUG_TYPE = "loom-python";
const POLL_MS = 30000;
const TICK_MS = 1000;
const WARN_SECONDS = 300;

let output;
let item;
let session = null; // the last `status --output json` answer
let sessionError = null;
let polledAt = 0;
let polling = false;
let busy = null; // "resume" or "abort" while one runs

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (_) {
    return undefined;
  }
}

// The workspace folder of the session: the one with .loom/session.json.
function sessionRoot() {
  for (const folder of vscode.workspace.workspaceFolders || []) {
    const root = folder.uri.fsPath;
    if (folder.uri.scheme === "file" && fs.existsSync(path.join(root, ".loom", "session.json"))) {
      return root;
    }
  }
  return undefined;
}

// The task's interpreter: the launch configuration's, the session's, the workspace setting's.
function interpreter(root, config) {
  const given = config && config.python;
  if (Array.isArray(given) && given.length > 0) return String(given[0]);
  if (typeof given === "string" && given) return given;
  if (root) {
    for (const name of ["workspace.json", "session.json"]) {
      const data = readJson(path.join(root, ".loom", name));
      if (data && typeof data.python === "string" && data.python) return data.python;
    }
  }
  const setting = vscode.workspace.getConfiguration("python").get("defaultInterpreterPath");
  if (typeof setting === "string" && setting && setting !== "python") return setting;
  return "python3";
}

// Run `python -m loom.interactive ARGS` in the session's workspace.
function runLoom(root, args, log) {
  return new Promise((resolve) => {
    const python = interpreter(root);
    if (log) output.appendLine(`$ ${python} -m loom.interactive ${args.join(" ")}`);
    let stdout = "";
    let stderr = "";
    let child;
    try {
      child = childProcess.spawn(python, ["-m", "loom.interactive", ...args], { cwd: root });
    } catch (e) {
      resolve({ code: -1, stdout, stderr: String(e) });
      return;
    }
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
      if (log) output.append(String(chunk));
    });
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
      if (log) output.append(String(chunk));
    });
    child.on("error", (e) => resolve({ code: -1, stdout, stderr: stderr + String(e) }));
    child.on("close", (code) => {
      if (log) output.appendLine(`(exit code ${code})`);
      resolve({ code: code === null ? -1 : code, stdout, stderr });
    });
  });
}

// The message of a failed command: its last lines of stderr (a traceback ends with the error).
function failure(result) {
  const lines = (result.stderr || result.stdout).trim().split(/\r?\n/).filter((l) => l.trim());
  const text = lines.slice(-3).join(" ").trim();
  return text.length > 600 ? `${text.slice(0, 600)}…` : text || `exit code ${result.code}`;
}

async function showFailure(title, result) {
  const choice = await vscode.window.showErrorMessage(`${title}: ${failure(result)}`, "Show output");
  if (choice === "Show output") output.show(true);
}

async function sessionCommand(kind) {
  const root = sessionRoot();
  if (!root) {
    vscode.window.showErrorMessage("loom: this workspace has no interactive session (.loom/session.json).");
    return;
  }
  if (busy) {
    vscode.window.showInformationMessage(`loom: ${busy} is already in progress.`);
    return;
  }
  if (kind === "abort") {
    const answer = await vscode.window.showWarningMessage(
      "Abort the task? Its action fails and this session ends.",
      { modal: true },
      "Abort task",
    );
    if (answer !== "Abort task") return;
  } else {
    // Resume re-imports the code from disk: unsaved edits must be on it.
    await vscode.workspace.saveAll(false);
  }
  busy = kind;
  render();
  output.show(true);
  try {
    const title = kind === "resume" ? "loom: resuming the task with your code…" : "loom: aborting the task…";
    const result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title },
      () => runLoom(root, [kind], true),
    );
    if (result.code !== 0) {
      await showFailure(kind === "resume" ? "loom: resume failed" : "loom: abort failed", result);
    } else if (kind === "resume") {
      vscode.window.showInformationMessage("loom: the task succeeded; this session is ending.");
    } else {
      vscode.window.showInformationMessage("loom: the task was aborted; this session is ending.");
    }
  } finally {
    busy = null;
    poll();
  }
}

async function poll() {
  const root = sessionRoot();
  if (!root || polling) return;
  polling = true;
  polledAt = Date.now();
  let result;
  try {
    result = await runLoom(root, ["status", "--output", "json"], false);
  } finally {
    polling = false;
  }
  if (result.code === 0) {
    try {
      session = JSON.parse(result.stdout);
      sessionError = null;
    } catch (e) {
      sessionError = `unreadable status: ${e}`;
    }
  } else {
    sessionError = failure(result);
  }
  render();
}

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, "0");
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

function render() {
  if (!item) return;
  let text;
  let warn = false;
  const tooltip = ["loom interactive session: click to resume or abort the task."];
  if (busy) {
    text = `$(sync~spin) loom: ${busy === "resume" ? "resuming" : "aborting"}`;
  } else if (sessionError && !session) {
    text = "$(warning) loom";
    tooltip.push(`Status unavailable: ${sessionError}`);
  } else if (!session) {
    text = "$(watch) loom";
  } else if (session.state === "ended") {
    text = "$(debug-stop) loom: session ended";
  } else if (session.state === "resuming") {
    text = "$(sync~spin) loom: resuming";
  } else if (session.max_idle_seconds === null || session.idle_deadline === null) {
    text = "$(watch) loom: no idle limit";
  } else {
    const left = session.idle_deadline - Date.now() / 1000;
    warn = left <= WARN_SECONDS;
    text = left > 0 ? `$(watch) loom: idle limit in ${clock(left)}` : "$(watch) loom: idle limit reached";
    tooltip.push(`The session ends after ${clock(session.max_idle_seconds)} without activity.`);
  }
  if (session && session.url) tooltip.push(session.url);
  if (sessionError && session) tooltip.push(`Last status check failed: ${sessionError}`);
  item.text = text;
  item.tooltip = tooltip.join("\n");
  item.backgroundColor = warn ? new vscode.ThemeColor("statusBarItem.warningBackground") : undefined;
}

async function sessionActions() {
  const picked = await vscode.window.showQuickPick(
    [
      { label: "$(debug-continue) Resume task", detail: "Run the task for real with your code", id: "loom.resume" },
      { label: "$(debug-stop) Abort task", detail: "Fail the task's action and end the session", id: "loom.abort" },
    ],
    { placeHolder: "loom interactive session" },
  );
  if (picked) await vscode.commands.executeCommand(picked.id);
}

// The Python debugger: debugpy's adapter, run by the task's interpreter.
const adapterFactory = {
  createDebugAdapterDescriptor(debugSession) {
    const folder = debugSession.workspaceFolder;
    const root = folder ? folder.uri.fsPath : sessionRoot();
    const python = interpreter(root, debugSession.configuration);
    return new vscode.DebugAdapterExecutable(python, ["-m", "debugpy.adapter"], root ? { cwd: root } : {});
  },
};

const configurationProvider = {
  resolveDebugConfiguration(folder, config) {
    // F5 without a launch.json: debug the file in the editor.
    if (!config.type && !config.request && !config.name) {
      const editor = vscode.window.activeTextEditor;
      if (!editor || editor.document.languageId !== "python") return config;
      Object.assign(config, {
        type: DEBUG_TYPE,
        name: "Python (loom): current file",
        request: "launch",
        program: "${file}",
        console: "integratedTerminal",
        justMyCode: false,
      });
    }
    // debugpy runs the program with the interpreter it is told, else with its own.
    if (!config.python) config.python = interpreter(folder ? folder.uri.fsPath : sessionRoot(), config);
    return config;
  },
};

function activate(context) {
  output = vscode.window.createOutputChannel("loom");
  context.subscriptions.push(
    output,
    vscode.debug.registerDebugAdapterDescriptorFactory(DEBUG_TYPE, adapterFactory),
    vscode.debug.registerDebugConfigurationProvider(DEBUG_TYPE, configurationProvider),
    vscode.commands.registerCommand("loom.resume", () => sessionCommand("resume")),
    vscode.commands.registerCommand("loom.abort", () => sessionCommand("abort")),
    vscode.commands.registerCommand("loom.sessionActions", sessionActions),
  );
  if (!sessionRoot()) return;
  item = vscode.window.createStatusBarItem("loom.session", vscode.StatusBarAlignment.Left, 100);
  item.name = "loom session";
  item.command = "loom.sessionActions";
  render();
  item.show();
  context.subscriptions.push(item);
  poll();
  // Poll the server now and then; count down locally every second in between.
  const timer = setInterval(() => {
    if (!busy && Date.now() - polledAt >= POLL_MS && !(session && session.state === "ended")) poll();
    render();
  }, TICK_MS);
  context.subscriptions.push({ dispose: () => clearInterval(timer) });
}

function deactivate() {}

module.exports = { activate, deactivate, clock, failure };
