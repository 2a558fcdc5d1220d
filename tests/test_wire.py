"""The runtime's contract with the executor (``loom.wire._runtime``), pinned: a change to any
of these is a change of the protocol between processes, which both sides must make together."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loom import wire


def test_an_attempts_command_line_round_trips() -> None:
    args = wire.AttemptArgs("http://127.0.0.1:1", "r1", "a0", 3, "/tmp/spec.json")
    assert args.argv() == [
        "--endpoint", "http://127.0.0.1:1", "--run", "r1", "--action", "a0",
        "--attempt", "3", "--spec-file", "/tmp/spec.json",
    ]  # fmt: skip
    assert wire.parse_runtime_argv(args.argv()) == args
    plain = wire.AttemptArgs("http://127.0.0.1:1", "r1", "a0", 1)
    assert "--spec-file" not in plain.argv()
    assert wire.parse_runtime_argv(plain.argv()) == plain


def test_a_workers_and_the_fork_servers_command_lines_round_trip() -> None:
    worker = wire.WorkerArgs("http://127.0.0.1:1", "/tmp/loom-workers-x/s", "w1")
    assert worker.argv() == [
        "--endpoint", "http://127.0.0.1:1", "--worker", "--socket", "/tmp/loom-workers-x/s",
        "--worker-id", "w1",
    ]  # fmt: skip
    assert wire.parse_runtime_argv(worker.argv()) == worker
    assert wire.ZYGOTE_ARGV == ("--zygote",)
    assert wire.parse_runtime_argv(list(wire.ZYGOTE_ARGV)) is None


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--run", "r1"], "--endpoint"),
        (["--endpoint", "http://x", "--run", "r1"], "--run, --action and --attempt"),
        (["--endpoint", "http://x", "--worker"], "--socket and --worker-id"),
        (["--endpoint", "http://x", "--attempt", "one"], "--attempt"),
    ],
)
def test_a_bad_command_line_says_what_is_wrong(argv: list[str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        wire.parse_runtime_argv(argv)


def test_the_runtime_refuses_a_bad_command_line_with_its_usage() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loom.runtime", "--endpoint", "http://x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--run, --action and --attempt are required" in done.stderr


def test_the_messages_keys_are_pinned() -> None:
    keys = {
        wire.WorkerHello: {"hello", "pid"},
        wire.WorkerJob: {"job", "run", "action", "attempt", "log", "credential", "spec"},
        wire.WorkerCancel: {"cancel"},
        wire.WorkerStop: {"stop"},
        wire.WorkerDone: {"done", "code"},
        wire.WorkerReport: {"report", "items"},
        wire.WorkerReported: {"reported", "statuses", "error"},
        wire.ZygoteReady: {"ready"},
        wire.SpawnRequest: {"id", "argv", "env", "cwd", "log"},
        wire.Spawned: {"id", "pid"},
        wire.SpawnFailed: {"id", "error"},
        wire.ChildExited: {"exit", "code"},
    }
    for message, expected in keys.items():
        assert set(message.__annotations__) == expected, message.__name__


def test_a_message_is_one_line_of_json_and_a_spec_goes_along_unparsed() -> None:
    job = wire.WorkerJob(job="r/a/1", run="r", action="a", attempt=1, log="/l", credential=None)
    line = wire.encode(job, '"spec": {"run": "r"}')
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert wire.decode(line) == {**job, "spec": {"run": "r"}}
    assert json.loads(wire.encode(wire.WorkerDone(done="r/a/1", code=0))) == {
        "done": "r/a/1",
        "code": 0,
    }
    with pytest.raises(ValueError, match="JSON object"):
        wire.decode(b"[1, 2]")


def test_a_worker_ledger_says_what_runs() -> None:
    one, two = wire.worker_job_marker("r", "a", 1), wire.worker_job_marker("r", "b", 1)
    ledger = (
        wire.ledger_line(one, running=True)
        + wire.ledger_line(two, running=True)
        + wire.ledger_line(one, running=False)
    )
    assert wire.ledger_running(ledger) == {two}
    # a line cut short by a crash as it was written is not read
    assert wire.ledger_running(ledger + wire.ledger_line(one, running=True)[:-1]) == {two}
    assert wire.ledger_running(b"") == set()
