"""A fork server for action processes: imports the runtime once, then forks one child per attempt.

Starting ``python -m loom.runtime`` from scratch costs most of a second of imports (pydantic,
httpx, the type engine). The executor instead keeps one ``python -m loom.runtime --zygote``
process that has paid for them; each attempt is a ``fork()`` of it, ready in milliseconds.

Protocol, one JSON object per line:

- stdin, from the executor: ``wire.SpawnRequest``;
- stdout, to the executor: ``wire.ZygoteReady`` once, ``wire.Spawned`` once a child runs
  (or ``wire.SpawnFailed``), and ``wire.ChildExited`` when a child ends (its code negative
  for a signal, like ``subprocess``).

Each child leads its own process group (so the executor can kill it whole; the zygote sets it
before it reports the pid, so there is no window without it), gets
exactly the environment and working directory asked for, and writes stdout and stderr to its
log file. The zygote stays single-threaded, so forking it is safe.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
import sys
from typing import Any, cast

from .. import wire


def _preload() -> None:
    # what every attempt imports anyway; the children inherit it already imported
    import anyio._backends._asyncio  # noqa: F401  (httpx loads these on its first request)
    import cloudpickle  # noqa: F401
    import h11  # noqa: F401
    import httpcore._async.http11
    import httpcore._backends.anyio  # noqa: F401

    import loom.io
    import loom.runtime.__main__
    import loom.runtime._process
    import loom.types  # noqa: F401
    from loom.remote import warm_up

    warm_up()  # and what the children build first, once for all of them
    wire.parse_runtime_argv(["--endpoint", "http://127.0.0.1", "--worker", "--socket", "s",
                             "--worker-id", "w"])  # fmt: skip


def _child(request: wire.SpawnRequest, protocol_fds: tuple[int, ...]) -> None:
    """In the forked child: become the attempt's process, run it, never return."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group, so the executor can kill it whole
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        for fd in (log, devnull, *protocol_fds):
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        from .__main__ import main

        code = main(request["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _line(message: Any) -> str:
    return wire.encode(message).decode()


def _reap(out: Any) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        out.write(_line(wire.ChildExited(exit=pid, code=code)))
        out.flush()


def serve() -> int:
    """Read spawn requests until stdin closes; then wait for the children that remain."""
    _preload()
    # what the imports made is never garbage: out of the collector's sight, the children's
    # collections do not walk it (tens of ms each) nor copy its pages by touching them
    gc.collect()
    gc.freeze()
    stdin, out = sys.stdin.buffer, sys.stdout
    protocol_fds = (stdin.fileno(), out.fileno())
    out.write(_line(wire.ZygoteReady(ready=os.getpid())))
    out.flush()
    pending = b""
    while True:
        readable, _, _ = select.select([stdin.fileno()], [], [], 0.05)
        _reap(out)
        if not readable:
            continue
        chunk = os.read(stdin.fileno(), 65536)
        if not chunk:
            break
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = cast(wire.SpawnRequest, wire.decode(line))
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                pid = os.fork()
            except OSError as e:
                out.write(_line(wire.SpawnFailed(id=request["id"], error=str(e))))
                out.flush()
                continue
            if pid == 0:
                _child(request, protocol_fds)
            with contextlib.suppress(OSError):  # also here: no window where the group is missing
                os.setpgid(pid, pid)
            out.write(_line(wire.Spawned(id=request["id"], pid=pid)))
            out.flush()
    while True:  # stdin closed: the executor is gone or shutting down
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        out.write(_line(wire.ChildExited(exit=pid, code=os.waitstatus_to_exitcode(status))))
        out.flush()
