"""The runtime's contract with the executor that starts it: its command lines, and the
messages of the warm worker's socket and of the fork server's pipes. Both sides build and read
these, and nothing else: a change here is a change of the protocol (``tests/test_wire.py``
pins it).

Command lines of ``python -m loom.runtime`` (see :func:`parse_runtime_argv`):

- :class:`AttemptArgs`: one attempt, in a process of its own;
- :class:`WorkerArgs`: a warm worker, which runs the attempts the executor sends it;
- :data:`ZYGOTE_ARGV`: the fork server, which forks attempt processes from a warm runtime.

Each message is one JSON object per line (:func:`encode`, :func:`decode`).
"""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

#: The fork server's command line (after the runtime's command).
ZYGOTE_ARGV = ("--zygote",)

#: A warm worker keeps a ledger of the attempts it runs in this file of its working directory:
#: a line ``+MARK`` before the task's code starts, ``-MARK`` once the attempt has ended (one
#: append each, not a file per attempt: making files costs more than running a small task).
#: After a crash, the next server process reads there which worker to adopt an attempt from.
WORKER_LEDGER = ".loom-jobs"


def worker_job_marker(run: str, action: str, attempt: int) -> str:
    """The mark of that attempt in its worker's :data:`WORKER_LEDGER`."""
    return f"{run}~{action}~{attempt}"


def ledger_line(mark: str, *, running: bool) -> bytes:
    """The ledger's line saying that the attempt ``mark`` started (``running``) or ended."""
    return f"{'+' if running else '-'}{mark}\n".encode()


def ledger_running(data: bytes) -> set[str]:
    """The marks of the attempts a ledger says are running (a last line cut short by a crash
    while it was written is not read)."""
    running: set[str] = set()
    for line in data.decode(errors="replace").split("\n")[:-1]:
        if line.startswith("+"):
            running.add(line[1:])
        elif line.startswith("-"):
            running.discard(line[1:])
    return running


@dataclass(frozen=True, slots=True)
class AttemptArgs:
    """Run one attempt, then exit (its code: the attempt's outcome was reported or not)."""

    endpoint: str  # the control plane's base URL
    run: str
    action: str
    attempt: int
    #: the attempt's ``ActionSpec``, written by the executor (read, then removed by the runtime)
    spec_file: str | None = None

    def argv(self) -> list[str]:
        argv = ["--endpoint", self.endpoint, "--run", self.run, "--action", self.action]
        argv += ["--attempt", str(self.attempt)]
        if self.spec_file is not None:
            argv += ["--spec-file", self.spec_file]
        return argv


@dataclass(frozen=True, slots=True)
class WorkerArgs:
    """Serve attempts of one warm pool over the executor's Unix socket ``socket``."""

    endpoint: str
    socket: str
    worker_id: str  # its name in the executor's hello

    def argv(self) -> list[str]:
        return [
            "--endpoint", self.endpoint, "--worker", "--socket", self.socket,
            "--worker-id", self.worker_id,
        ]  # fmt: skip


class _ArgumentError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # raise, rather than exit, for the caller to say
        raise _ArgumentError(message)


@functools.cache  # (a fork server builds it once for all its children)
def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m loom.runtime", add_help=False)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--run")
    parser.add_argument("--action")
    parser.add_argument("--attempt", type=int)
    parser.add_argument("--spec-file")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--socket")
    parser.add_argument("--worker-id")
    return parser


def parse_runtime_argv(argv: list[str]) -> AttemptArgs | WorkerArgs | None:
    """What a runtime command line asks for (``None``: the fork server); ``ValueError``
    saying what is wrong with it otherwise."""
    if tuple(argv) == ZYGOTE_ARGV:
        return None
    try:
        args = _parser().parse_args(argv)
    except _ArgumentError as e:
        raise ValueError(str(e)) from None
    if args.worker:
        if not (args.socket and args.worker_id):
            raise ValueError("--worker needs --socket and --worker-id")
        return WorkerArgs(args.endpoint, args.socket, args.worker_id)
    if args.run is None or args.action is None or args.attempt is None:
        raise ValueError("--run, --action and --attempt are required")
    return AttemptArgs(args.endpoint, args.run, args.action, args.attempt, args.spec_file)


# -- a warm worker's socket -----------------------------------------------------------------


class WorkerHello(TypedDict):
    """Worker to executor, once, first."""

    hello: str  # its worker id
    pid: int


class WorkerJob(TypedDict):
    """Executor to worker: run this attempt."""

    job: str  # the executor's job id
    run: str
    action: str
    attempt: int
    log: str  # the file its output goes to
    credential: str | None  # the attempt's own: the worker holds no other
    #: the attempt's ``ActionSpec`` when the server sent it along (then the attempt starts
    #: without asking the server for it)
    spec: NotRequired[dict[str, Any]]


class WorkerCancel(TypedDict):
    """Executor to worker: cancel the attempt of job ``cancel``."""

    cancel: str


class WorkerStop(TypedDict):
    """Executor to worker: finish what runs, then exit."""

    stop: bool


class WorkerDone(TypedDict):
    """Worker to executor: the attempt of job ``done`` ended (``code``: as a process's)."""

    done: str
    code: int


class WorkerReport(TypedDict):
    """Worker to executor: results of its attempts (``wire.AttemptReport`` objects), taken as
    ``POST /attempts:finish`` takes them, without a request; answered by
    :class:`WorkerReported`. An item about an attempt that is not one of the worker's jobs is
    refused (403)."""

    report: int  # the worker's number for this batch
    items: list[dict[str, Any]]


class WorkerReported(TypedDict):
    """Executor to worker: the answers to report ``reported`` (``wire.ItemStatus`` objects,
    in order); or, with ``error``, none (the worker sends the batch over HTTP instead)."""

    reported: int
    statuses: list[dict[str, Any]]
    error: NotRequired[str]


# -- the fork server's pipes ----------------------------------------------------------------


class ZygoteReady(TypedDict):
    """Fork server to executor, once: it has imported the runtime and takes requests."""

    ready: int  # its pid


class SpawnRequest(TypedDict):
    """Executor to fork server: fork a runtime with this command line."""

    id: str
    argv: list[str]  # after the runtime's command: :class:`AttemptArgs` or :class:`WorkerArgs`
    env: dict[str, str]  # exactly the child's environment
    cwd: str
    log: str  # its stdout and stderr go there


class Spawned(TypedDict):
    """Fork server to executor: request ``id`` runs as ``pid`` (its own process group)."""

    id: str
    pid: int


class SpawnFailed(TypedDict):
    """Fork server to executor: request ``id`` could not fork."""

    id: str
    error: str


class ChildExited(TypedDict):
    """Fork server to executor: child ``exit`` ended with ``code`` (negative: a signal)."""

    exit: int
    code: int


def encode(message: Any, raw: str = "") -> bytes:
    """``message`` as its line, with ``raw`` (JSON members, already serialised: a large spec
    is not parsed and written again) added to it."""
    line = json.dumps(message)
    if raw:
        line = line[:-1] + ", " + raw + "}"
    return (line + "\n").encode()


def decode(line: bytes | str) -> dict[str, Any]:
    """A message line as its object (any of the above; tell them by their keys)."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"a runtime protocol message is a JSON object, not {line!r:.80}")
    return message
