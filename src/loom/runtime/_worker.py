"""A warm worker: one process that runs many attempts of a reusable environment.

``python -m loom.runtime --worker --endpoint URL --socket PATH --worker-id ID`` connects to the
executor's Unix socket and runs the attempts it is given, up to the environment's
``concurrency`` at once (the executor keeps count), each as an asyncio task over one shared API
client. It pays for start-up, imports and the task module once instead of once per action.

Protocol (``loom.wire``), one JSON object per line: the worker says ``WorkerHello`` once, then
``WorkerReport`` with attempts' results and ``WorkerDone`` as each attempt ends; the executor
sends ``WorkerJob`` (with the attempt's ``wire.ActionSpec`` when the server sent it along: then
the attempt starts without a request), ``WorkerReported`` (the answers to a report),
``WorkerCancel``, and ``WorkerStop`` (finish what runs, then exit).

The worker holds no key of its own: each attempt talks to the server with its own runtime
credential ``C``, valid while that attempt runs, and the batched reports and heartbeats carry
each attempt's credential along.

Results go to the server in batches: those ready in the same turn of the loop, or while the
previous batch is on its way, share one message and one transaction. They go over the
executor's socket, which is already open and costs no HTTP request; when it is not (the server
stopped or restarted, or could not record them), over ``POST /attempts:finish``, which waits
for a server to be back.
Heartbeats too: one request for all the attempts running, every ``LOOM_HEARTBEAT_INTERVAL``
seconds, from a thread of the worker's own (see ``_heartbeat``).

What each attempt prints goes to its own log file: ``sys.stdout`` and ``sys.stderr`` are routed
by a context variable that the attempt's task (and the threads it starts through asyncio) carry.
Output that belongs to no attempt, such as a C library writing to fd 2, lands in the worker's
own log. When the socket closes, the executor is gone: the worker finishes the attempts it
runs, delivers their results (to the next server process, if need be) and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TextIO, cast

from .. import wire
from .._settings import Settings
from ..remote import Client
from ._heartbeat import Heartbeats
from ._process import attempt_with

#: Results per report request, and about how many bytes of them (outputs can be large).
_REPORT_BATCH = 500
_REPORT_BYTES = 8 * 1024 * 1024

#: Once the ledger holds this many bytes and no attempt runs, it starts again from empty.
_LEDGER_BYTES = 1 << 20


class _AttemptLog:
    """An attempt's log file, made on its first write: most attempts of a warm worker print
    nothing, and making a file costs more than running a small task."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, path: str) -> None:
        self._path = path
        self._file: TextIO | None = None

    def _opened(self) -> TextIO:
        if self._file is None:
            self._file = open(self._path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        return self._file

    def write(self, text: str) -> int:
        return self._opened().write(text)

    def writelines(self, lines: Any) -> None:
        self._opened().writelines(lines)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


_attempt_log: contextvars.ContextVar[_AttemptLog | None] = contextvars.ContextVar(
    "loom_attempt_log", default=None
)


class _RoutedStream:
    """A text stream that writes to the current attempt's log, or to ``fallback``."""

    def __init__(self, fallback: TextIO) -> None:
        self._fallback = fallback

    def _target(self) -> TextIO | _AttemptLog:
        return _attempt_log.get() or self._fallback

    def write(self, text: str) -> int:
        return self._target().write(text)

    def writelines(self, lines: Any) -> None:
        self._target().writelines(lines)

    def flush(self) -> None:
        self._target().flush()

    def fileno(self) -> int:
        return self._fallback.fileno()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:  # encoding, errors, buffer...
        return getattr(self._fallback, name)


#: Sends reports (their JSON) through the executor; ``None`` if it cannot take them.
_ReportHere = Callable[[list[bytes]], Awaitable[list[wire.ItemStatus] | None]]


class _Reports:
    """Sends attempts' results, many per message: one at a time, carrying whatever finished
    since the last one went out; through the executor (``here``) when it takes them, else
    over HTTP."""

    def __init__(self, client: Client, here: _ReportHere | None = None) -> None:
        self._client = client
        self._here = here
        # (the report, its attempt's credential, who waits for the answer)
        self._queue: list[tuple[bytes, str | None, asyncio.Future[wire.ItemStatus]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def report(self, item: wire.AttemptReport) -> wire.ItemStatus:
        future: asyncio.Future[wire.ItemStatus] = asyncio.get_running_loop().create_future()
        self._queue.append((item.model_dump_json().encode(), item.credential, future))
        if self._sender is None:  # it starts next turn: results of this one go along
            self._sender = asyncio.ensure_future(self._send())
        return await future

    async def _send(self) -> None:
        try:
            while self._queue:
                count, size = 0, 0
                for data, _, _ in self._queue:
                    if count and (count >= _REPORT_BATCH or size + len(data) > _REPORT_BYTES):
                        break
                    count += 1
                    size += len(data)
                batch, self._queue = self._queue[:count], self._queue[count:]
                try:
                    statuses = None
                    if self._here is not None:
                        statuses = await self._here([d for d, _, _ in batch])
                    if statuses is None:
                        statuses = await self._client.finish_attempts_json(
                            [d for d, _, _ in batch], batch[0][1]
                        )
                    if len(statuses) != len(batch):
                        raise ValueError(f"{len(statuses)} answers to {len(batch)} reports")
                except Exception as e:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for (_, _, future), status in zip(batch, statuses, strict=True):
                    if not future.done():  # (an attempt cancelled meanwhile has gone)
                        future.set_result(status)
        finally:
            self._sender = None


class _Worker:
    def __init__(
        self,
        client: Client,
        settings: Settings,
        writer: asyncio.StreamWriter,
        ledger: int,
    ) -> None:
        self._client = client
        self._ledger = ledger  # (a file descriptor, opened for appending)
        self._ledger_bytes = 0
        self._settings = settings
        self._writer = writer
        self._running: dict[str, asyncio.Task[None]] = {}
        self._attempts: dict[str, wire.AttemptRef] = {}  # by job, while they run
        self._reports = _Reports(client, self._report_here)
        # reports sent through the executor, by number, until it answers
        self._reported: dict[int, asyncio.Future[wire.WorkerReported]] = {}
        self._report_numbers = itertools.count(1)
        self._connected = True

    def _send(self, message: wire.WorkerHello | wire.WorkerDone) -> None:
        self._writer.write(wire.encode(message))

    async def _report_here(self, items: list[bytes]) -> list[wire.ItemStatus] | None:
        """Send results (their JSON) through the executor's socket; their answers, or
        ``None`` if it did not take them (then they go over HTTP)."""
        if not self._connected or self._writer.is_closing():
            return None
        number = next(self._report_numbers)
        future: asyncio.Future[wire.WorkerReported] = asyncio.get_running_loop().create_future()
        self._reported[number] = future
        raw = '"items": [' + ",".join(item.decode() for item in items) + "]"
        try:
            self._writer.write(wire.encode({"report": number}, raw))
            answer = await future
        except ConnectionError:
            return None
        finally:
            self._reported.pop(number, None)
        if "error" in answer or len(answer["statuses"]) != len(items):
            return None
        return [wire.ItemStatus.model_validate(s) for s in answer["statuses"]]

    def reported(self, answer: wire.WorkerReported) -> None:
        """The executor answered report ``answer["reported"]``."""
        future = self._reported.get(answer["reported"])
        if future is not None and not future.done():
            future.set_result(answer)

    def disconnected(self) -> None:
        """The executor reads no more: reports under way, and later ones, go over HTTP (one
        the server recorded already is answered 409 there, as the attempt has ended)."""
        self._connected = False
        for future in self._reported.values():
            if not future.done():
                future.set_exception(ConnectionError("the executor's socket closed"))

    def start(self, message: wire.WorkerJob) -> None:
        job = message["job"]
        ref = wire.AttemptRef(
            run=message["run"],
            action=message["action"],
            attempt=message["attempt"],
            credential=message.get("credential") or None,
        )
        self._attempts[job] = ref
        # before its code starts: a restarted server adopts the attempt from this worker
        mark = wire.worker_job_marker(ref.run, ref.action, ref.attempt)
        self._note(wire.ledger_line(mark, running=True))
        self._running[job] = asyncio.create_task(
            self._attempt(message, mark), name=f"attempt {job}"
        )

    def _note(self, line: bytes) -> None:
        """Append ``line`` to the ledger; an empty one starts again when nothing runs."""
        with contextlib.suppress(OSError):
            if not self._running and self._ledger_bytes > _LEDGER_BYTES:
                os.ftruncate(self._ledger, 0)
                self._ledger_bytes = 0
            self._ledger_bytes += os.write(self._ledger, line)

    def running(self) -> list[wire.AttemptRef]:
        """The attempts running now (called from the heartbeat thread: a copy is atomic)."""
        return list(self._attempts.copy().values())

    async def _attempt(self, message: wire.WorkerJob, mark: str) -> None:
        code = 1
        log = _AttemptLog(message["log"])
        try:
            _attempt_log.set(log)  # this task's context only, and the threads it starts
            spec = message.get("spec")
            code = await attempt_with(
                self._client.with_key(message.get("credential") or self._client.api_key),
                self._settings,
                message["run"],
                message["action"],
                message["attempt"],
                shared=True,
                spec=None if spec is None else wire.ActionSpec.model_validate(spec),
                report=self._reports.report,
                heartbeat=False,
            )
        except asyncio.CancelledError:
            code = -15  # reported as cancelled; the server already decided the outcome
        except Exception as e:  # the executor must hear that this attempt ended, whatever it was
            print(f"[loom] worker: attempt failed to run: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            log.close()
            self._running.pop(message["job"], None)
            self._attempts.pop(message["job"], None)
            self._note(wire.ledger_line(mark, running=False))
            self._send(wire.WorkerDone(done=message["job"], code=code))

    def cancel(self, job: str) -> None:
        task = self._running.get(job)
        if task is not None:
            task.cancel()

    async def drain(self) -> None:
        """Wait for the running attempts to end."""
        tasks = list(self._running.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def _serve(reader: asyncio.StreamReader, worker: _Worker) -> None:
    """Take the executor's messages until it says stop or goes away."""
    while True:
        try:
            line = await reader.readline()
        except ConnectionError:
            # the server died with our reports unread (a Unix socket then says "reset", not
            # end of file): gone all the same
            return
        if not line:
            return
        message = wire.decode(line)
        if "job" in message:
            if reader.at_eof():
                # sent just before the executor went away: a restarted server finds no
                # mark of it here and runs it again, so it must not run here too
                continue
            worker.start(cast(wire.WorkerJob, message))
        elif "reported" in message:
            worker.reported(cast(wire.WorkerReported, message))
        elif "cancel" in message:
            worker.cancel(message["cancel"])
        elif message.get("stop"):
            return


async def serve_worker(endpoint: str, socket_path: str, worker_id: str) -> int:
    """Run attempts for the executor until it says stop or goes away."""
    sys.stdout = _RoutedStream(sys.stdout)
    sys.stderr = _RoutedStream(sys.stderr)
    settings = Settings.load()
    reader, writer = await asyncio.open_unix_connection(socket_path, limit=2**20)
    async with Client(endpoint, settings.api_key, patience_s=settings.server_patience_s) as client:
        # the ledger is in the worker's own directory (a task may change the cwd)
        ledger = os.open(wire.WORKER_LEDGER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        worker = _Worker(client, settings, writer, ledger)
        worker._send(wire.WorkerHello(hello=worker_id, pid=os.getpid()))
        beats = Heartbeats(
            endpoint, settings.api_key, settings.heartbeat_interval_s, worker.running
        )
        beats.start()
        await _serve(reader, worker)
        worker.disconnected()
        # stop, or EOF (the server stopped or crashed): the running attempts finish, and
        # deliver their results to the server (waiting for it to be back if need be), which
        # adopts this worker after a restart; nothing new comes
        await worker.drain()
        beats.stop()
        os.close(ledger)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
    return 0
