"""The CLI against a real server, as a person at a terminal (a pty) and as a script (pipes):
live output of ``loom run --remote``, Ctrl-C, exit codes, ``-o json`` on every data command,
tables that keep names whole, log filters, words instead of tracebacks."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import queue
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, run_cli, write_module

pytestmark = pytest.mark.e2e

FLOW = """
import os
import time

import loom

env = loom.TaskEnvironment("cli")


def _wait_for(path: str) -> None:
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)


@env.task
async def gated(gate: str) -> str:
    print("first line", flush=True)
    _wait_for(gate)
    print("second line", flush=True)
    return "done"


@env.task
async def inner(x: int) -> int:
    raise ValueError(f"bad {x}")


@env.task
async def fails(n: int = 1) -> int:
    print("about to fail", flush=True)
    return await inner(n)


@env.task
async def chatty(n: int = 3) -> int:
    for i in range(n):
        print(f"line {i}", flush=True)
    return n


@env.task
def opaque() -> object:
    return {1, 2}


@env.task(retries=1)
async def flaky(marker: str) -> str:
    if not os.path.exists(marker):
        open(marker, "w").close()
        print("attempt one fails", flush=True)
        raise RuntimeError("once")
    print("attempt two works", flush=True)
    return "ok"
"""

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    return write_module(tmp_path / "flow.py", FLOW)


def loom(server: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=server.env)


def loom_json(server: Any, *args: str) -> Any:
    result = loom(server, *args, "-o", "json")
    assert result.returncode == 0, result.stderr
    assert "pickled" not in result.stdout and '"data"' not in result.stdout
    return json.loads(result.stdout)


def _env(server: Any, **extra: str) -> dict[str, str]:
    return {**os.environ, **server.env, "PYTHONUNBUFFERED": "1", **extra}


class Piped:
    """``loom ARGS`` without a terminal, one of its streams read line by line as it comes:
    standard error (where ``loom run --remote`` streams logs), or ``stdout``."""

    def __init__(self, server: Any, *args: str, stdout: bool = False) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loom.cli", *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=_env(server), cwd=REPO,
        )  # fmt: skip
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._followed = self.process.stdout if stdout else self.process.stderr
        self._other = self.process.stderr if stdout else self.process.stdout
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self._followed is not None
        for line in self._followed:
            self._queue.put(line)
        self._queue.put(None)

    def read_until(self, predicate: Callable[[str], bool], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"not seen in time; stderr so far: {self.lines}")

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """The exit status, and all of the other stream and of the followed one."""
        assert self._other is not None
        code = self.process.wait(timeout)
        other = self._other.read()
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return code, other, "".join(self.lines)


class Terminal:
    """``loom ARGS`` on a pseudo-terminal of ``columns`` columns, as a person runs it."""

    def __init__(self, server: Any, *args: str, columns: int = 80) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        env = _env(server, TERM="xterm", COLUMNS=str(columns))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loom.cli", *args], stdin=slave, stdout=slave, stderr=slave,
            env=env, cwd=REPO, start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self.text = ""

    def read_until(self, needle: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while needle not in ANSI.sub("", self.text):
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not seen; screen: {ANSI.sub('', self.text)!r}")
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.text += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the process exited and closed the terminal
                    break
        return ANSI.sub("", self.text)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.text += os.read(self.master, 65536).decode(errors="replace")
                except OSError:
                    break
        code = self.process.wait(5)
        os.close(self.master)
        return code, ANSI.sub("", self.text)


def _phase(server: Any, run: str) -> str:
    return str(loom_json(server, "get", "run", run)["run"]["phase"])


def _wait_phase(server: Any, run: str, phases: set[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while (phase := _phase(server, run)) not in phases:
        assert time.monotonic() < deadline, f"run {run} still {phase}"
        time.sleep(0.2)
    return phase


# -- loom run --remote: live output, Ctrl-C, exit codes --------------------------------------


def test_the_root_actions_output_streams_live_with_timestamps_without_a_terminal(
    server: Any, flow: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    run = Piped(server, "run", "--remote", str(flow), "gated", "--gate", str(gate))
    first = run.read_until(lambda line: "first line" in line)
    # printed while the task still waits: live, stamped, named
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} a0 \| first line$", first.strip())
    gate.touch()
    code, out, err = run.finish()
    assert code == 0, err
    assert out == "done\n"  # the result alone on stdout, for `x=$(loom run --remote ...)`
    lines = err.splitlines()
    first_at = [i for i, line in enumerate(lines) if "first line" in line]
    second_at = [i for i, line in enumerate(lines) if "second line" in line]
    done_at = [i for i, line in enumerate(lines) if "succeeded in" in line]
    assert len(first_at) == len(second_at) == len(done_at) == 1, err
    assert first_at < second_at < done_at  # the whole log comes before the outcome


def test_follow_all_prefixes_every_actions_lines(server: Any, flow: Path) -> None:
    result = loom(server, "run", "--remote", "--follow-all", str(flow), "fails")
    assert result.returncode == 1
    assert re.search(r"a0 \| about to fail", result.stderr)
    assert re.search(r"inner-\w+ \| .*ValueError: bad 1", result.stderr)


def test_ctrl_c_without_a_terminal_detaches_and_says_how_to_abort(
    server: Any, flow: Path, tmp_path: Path
) -> None:
    run = Piped(server, "run", "--remote", str(flow), "gated", "--gate", str(tmp_path / "g"))
    run.read_until(lambda line: "first line" in line)
    run.process.send_signal(signal.SIGINT)
    code, _, err = run.finish()
    assert code == 4, err
    name = re.search(r"loom abort run (\S+)", err)
    assert name, err
    assert _phase(server, name.group(1)) == "RUNNING"  # it goes on on the server
    loom(server, "abort", "run", name.group(1))


def test_ctrl_c_on_a_terminal_asks_and_aborts_on_yes(
    server: Any, flow: Path, tmp_path: Path
) -> None:
    term = Terminal(server, "run", "--remote", str(flow), "gated", "--gate", str(tmp_path / "g"))
    term.read_until("first line")
    os.killpg(term.process.pid, signal.SIGINT)  # what Ctrl-C does: the foreground group
    screen = term.read_until("[y/N]")
    run = re.search(r"abort the run (\S+)\?", screen)
    assert run, screen
    term.type(b"y\n")
    code, screen = term.finish()
    assert code == 3, screen
    assert _phase(server, run.group(1)) == "ABORTED"


def test_a_second_ctrl_c_on_a_terminal_aborts(server: Any, flow: Path, tmp_path: Path) -> None:
    term = Terminal(server, "run", "--remote", str(flow), "gated", "--gate", str(tmp_path / "g"))
    term.read_until("first line")
    os.killpg(term.process.pid, signal.SIGINT)
    screen = term.read_until("[y/N]")
    os.killpg(term.process.pid, signal.SIGINT)
    code, screen = term.finish()
    assert code == 3, screen
    run = re.search(r"abort the run (\S+)\?", screen)
    assert run and _phase(server, run.group(1)) == "ABORTED"


def test_no_on_a_terminal_detaches(server: Any, flow: Path, tmp_path: Path) -> None:
    term = Terminal(server, "run", "--remote", str(flow), "gated", "--gate", str(tmp_path / "g"))
    term.read_until("first line")
    os.killpg(term.process.pid, signal.SIGINT)
    term.read_until("[y/N]")
    term.type(b"\n")
    code, screen = term.finish()
    assert code == 4, screen
    run = re.search(r"loom abort run (\S+)", screen)
    assert run and _phase(server, run.group(1)) == "RUNNING"
    loom(server, "abort", "run", run.group(1))


def test_exit_codes_say_how_the_run_ended(server: Any, flow: Path, tmp_path: Path) -> None:
    assert loom(server, "run", "--remote", str(flow), "chatty").returncode == 0
    assert loom(server, "run", "--remote", str(flow), "fails").returncode == 1
    detached = loom(server, "run", "--remote", "--detach", str(flow), "gated", "--gate", "x")
    assert detached.returncode == 0
    run = Piped(server, "run", "--remote", str(flow), "gated", "--gate", str(tmp_path / "g"))
    run.read_until(lambda line: "first line" in line)
    loom(server, "abort", "run", detached.stdout.strip())
    runs = loom_json(server, "get", "run", "--phase", "RUNNING")
    for r in runs:
        loom(server, "abort", "run", r["name"])
    code, _, err = run.finish()
    assert code == 3, err
    unreachable = run_cli(
        "run", "--remote", str(flow), "chatty",
        env={**server.env, "LOOM_ENDPOINT": "http://127.0.0.1:9"},
    )  # fmt: skip
    assert unreachable.returncode == 5 and "Traceback" not in unreachable.stderr


def test_a_remote_failure_shows_each_traceback_once_without_loom_frames(
    server: Any, flow: Path
) -> None:
    result = loom(server, "run", "--remote", str(flow), "fails")
    assert result.returncode == 1
    err = result.stderr
    assert len(re.findall(r"line \d+, in inner", err)) == 1
    assert len(re.findall(r"line \d+, in fails", err)) == 1
    assert err.count("[loom] raised by task cli.inner") == 1
    assert "/loom/" not in err and "asyncio" not in err
    assert len([line for line in err.splitlines() if line.strip()]) < 30


def test_json_of_a_run_has_no_pickles(server: Any, flow: Path) -> None:
    ran = run_cli("run", "--remote", "-o", "json", str(flow), "opaque", env=server.env)
    doc = json.loads(ran.stdout)
    assert doc["outputs"] == {"__loom__": "pickle", "repr": "{1, 2}"}
    failed = run_cli("run", "--remote", "-o", "json", str(flow), "fails", env=server.env)
    assert failed.returncode == 1 and "pickled" not in failed.stdout
    assert json.loads(failed.stdout)["error"]["type"] == "ValueError"
    as_yaml = run_cli("run", "--remote", "-o", "yaml", str(flow), "chatty", env=server.env)
    assert yaml.safe_load(as_yaml.stdout)["outputs"] == 3


# -- -o json on every data command; tables that keep names whole ---------------------------


def test_every_data_command_prints_json_and_yaml(server: Any, flow: Path) -> None:
    name = "a-run-name-long-enough-to-be-cut-at-eighty-columns-0123456789"
    assert loom(server, "run", "--remote", "--name", name, str(flow), "fails").returncode == 1
    assert loom_json(server, "get", "run")[0]["name"] == name
    shown = loom_json(server, "get", "run", name)
    assert shown["run"]["error"] and "pickled" not in json.dumps(shown)
    assert len(loom_json(server, "get", "action", name)) == 2
    assert loom_json(server, "get", "action", name, "a0")["phase"] == "FAILED"
    assert loom_json(server, "get", "project")[0]["name"] == "default"
    assert loom_json(server, "create", "project", "analytics")["name"] == "analytics"
    assert loom_json(server, "create", "secret", "token", "--value", "v")["key"] == "token"
    assert "value" not in json.dumps(loom_json(server, "get", "secret"))
    assert loom_json(server, "delete", "secret", "token")["deleted"] == "secret"
    created = loom_json(server, "create", "api-key", "bot", "--project", "default")
    assert created["name"] == "bot"
    assert any(k["name"] == "bot" for k in loom_json(server, "get", "api-key"))
    assert loom_json(server, "delete", "api-key", "bot")["name"] == "bot"
    logs = loom(server, "get", "logs", name, "-o", "json")
    assert all(json.loads(line)["run"] == name for line in logs.stdout.splitlines())
    assert loom_json(server, "abort", "run", name)["phase"] == "FAILED"  # over already
    status = loom_json(server, "server", "status")
    assert status["up"] is True and status["endpoint"] == server.endpoint
    as_yaml = loom(server, "get", "run", name, "-o", "yaml")
    assert yaml.safe_load(as_yaml.stdout)["run"]["name"] == name


def test_names_are_never_cut_without_a_terminal_or_at_80_columns(server: Any, flow: Path) -> None:
    name = "a-run-name-long-enough-to-be-cut-at-eighty-columns-0123456789"
    assert loom(server, "run", "--remote", "--name", name, str(flow), "chatty").returncode == 0
    piped = loom(server, "get", "run")
    assert name in piped.stdout and "cli.chatty" in piped.stdout and "…" not in piped.stdout
    actions = loom(server, "get", "action", name)
    assert "a0" in actions.stdout and "…" not in actions.stdout
    term = Terminal(server, "get", "run", columns=80)
    code, screen = term.finish()
    assert code == 0 and name in screen and "cli.chatty" in screen and "…" not in screen


# -- logs ----------------------------------------------------------------------------------


def test_log_filters(server: Any, flow: Path, tmp_path: Path) -> None:
    doc = json.loads(
        run_cli("run", "--remote", "-o", "json", str(flow), "chatty", "--n", "5",
                env=server.env).stdout
    )  # fmt: skip
    run = doc["run"]
    grep = loom(server, "get", "logs", run, "--grep", r"line [13]")
    assert grep.stdout.splitlines() == ["line 1", "line 3"]
    lines = [
        json.loads(x)
        for x in loom(server, "get", "logs", run, "-o", "json").stdout.split("\n")
        if x
    ]
    assert [x["line"] for x in lines if x["line"].startswith("line ")] == [
        f"line {i}" for i in range(5)
    ]
    assert {x["attempt"] for x in lines} == {1} and all(x["action"] == "a0" for x in lines)
    assert loom(server, "get", "logs", run, "--since", "1h").stdout.count("line ") == 5
    future = loom(server, "get", "logs", run, "--since", "2999-01-01T00:00:00")
    assert future.stdout == "" and "no log lines since" in future.stderr
    bad = loom(server, "get", "logs", run, "--since", "yesterday")
    assert bad.returncode == 2 and "30s, 5m" in bad.stderr
    bad_grep = loom(server, "get", "logs", run, "--grep", "(")
    assert bad_grep.returncode == 2 and "not a regular expression" in bad_grep.stderr
    # retries: each attempt by number, the latest by default
    marker = tmp_path / "marker"
    flaky = json.loads(
        run_cli("run", "--remote", "-o", "json", str(flow), "flaky", "--marker", str(marker),
                env=server.env).stdout
    )  # fmt: skip
    first = loom(server, "get", "logs", flaky["run"], "--attempt", "1").stdout
    assert "attempt one fails" in first and "attempt two works" not in first
    assert "attempt two works" in loom(server, "get", "logs", flaky["run"]).stdout


def test_following_logs_stamps_the_lines_that_come(server: Any, flow: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    detached = loom(server, "run", "--remote", "--detach", str(flow), "gated", "--gate", str(gate))
    run = detached.stdout.strip()
    follow = Piped(server, "get", "logs", run, "--follow", "--timestamps", stdout=True)
    follow.read_until(lambda line: "first line" in line)
    gate.touch()
    second = follow.read_until(lambda line: "second line" in line)
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} second line$", second.strip())
    assert follow.finish()[0] == 0


def test_a_failed_attempts_log_ends_with_its_trimmed_traceback(server: Any, flow: Path) -> None:
    doc = json.loads(run_cli("run", "--remote", "-o", "json", str(flow), "fails",
                             env=server.env).stdout)  # fmt: skip
    log = loom(server, "get", "logs", doc["run"]).stdout.rstrip().splitlines()
    assert "about to fail" in log
    assert log[-1].startswith("ValueError: bad 1") or "ValueError: bad 1" in log[-4:]
    assert any('flow.py", line' in line and "in fails" in line for line in log)
    assert not any("/loom/" in line for line in log)


# -- empty states and errors in words --------------------------------------------------------


def test_an_empty_listing_says_what_matched_nothing(server: Any, flow: Path) -> None:
    assert loom(server, "run", "--remote", str(flow), "chatty").returncode == 0
    filtered = loom(server, "get", "run", "--phase", "FAILED")
    assert filtered.returncode == 0 and "no runs yet" not in filtered.stderr
    assert "phase FAILED" in filtered.stderr and "drop --phase" in filtered.stderr
    staging = loom(server, "get", "run", "--domain", "staging")
    assert "domain staging" in staging.stderr and "--domain development" in staging.stderr
    unknown = loom(server, "get", "run", "--domain", "qa")
    assert unknown.returncode == 2 and "development, staging, production" in unknown.stderr
    assert loom(server, "get", "secret").stderr.startswith("no secrets")


def test_validation_errors_are_words_and_commands(server: Any, flow: Path) -> None:
    bad = loom(server, "create", "project", "Bad_Name")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "'Bad_Name' is not a project name" in bad.stderr
    nope = loom(server, "run", "--remote", "--project", "nope", str(flow), "chatty")
    assert nope.returncode == 5 and "Traceback" not in nope.stderr
    assert "loom create project nope" in nope.stderr and "POST /" not in nope.stderr
    key = loom(server, "create", "api-key", "bad key", "--admin")
    assert key.returncode == 2 and "is not an API key name" in key.stderr
    run = loom(server, "run", "--remote", "--name", "Bad_Run", str(flow), "chatty")
    assert (
        run.returncode == 2 and "is not a run name" in run.stderr and "pydantic" not in run.stderr
    )


# -- shell completion -----------------------------------------------------------------------


def test_shell_completion_offers_commands_and_run_names(server: Any, flow: Path) -> None:
    name = "completed-run-for-the-shell"
    assert loom(server, "run", "--remote", "--name", name, str(flow), "chatty").returncode == 0

    def complete(words: str) -> list[str]:
        result = run_cli(env={
            **server.env, "_LOOM_COMPLETE": "bash_complete", "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split(" ")) - 1),
        })  # fmt: skip
        return [item.split(",", 1)[1] for item in result.stdout.split()]

    assert "logs" in complete("loom get ")
    assert complete("loom get logs comp") == [name]
    assert complete("loom get run --task cli.") == ["cli.chatty"]
    script = loom(server, "completion", "bash")
    assert script.returncode == 0 and "_LOOM_COMPLETE" in script.stdout
