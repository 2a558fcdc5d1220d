"""The local process executor, with small scripts standing in for the runtime."""

from __future__ import annotations

import asyncio
import dataclasses
import glob
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from loom import wire
from loom.executors import (
    Job,
    JobExit,
    JobStartError,
    LocalProcessExecutor,
    machine_capacity,
    process_identity,
)

pytestmark = pytest.mark.e2e


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "runtime.py"
    path.write_text("import os, sys, time, subprocess\n" + textwrap.dedent(body))
    return [sys.executable, str(path)]


def _job(tmp_path: Path, attempt: int = 1, timeout_s: float | None = None, **env: str) -> Job:
    return Job(
        run="r1",
        action="a0",
        attempt=attempt,
        endpoint="http://127.0.0.1:1",
        env={"PATH": os.environ.get("PATH", ""), "LOOM_API_KEY": "k", **env},
        log_path=tmp_path / "logs" / f"{attempt}.log",
        workdir=tmp_path / "work" / str(attempt),
        timeout_s=timeout_s,
    )


class Recorder:
    def __init__(self) -> None:
        self.exits: list[JobExit] = []
        self.event = asyncio.Event()

    async def __call__(self, exit: JobExit) -> None:
        self.exits.append(exit)
        self.event.set()

    async def wait(self, n: int = 1, timeout: float = 20) -> list[JobExit]:
        async with asyncio.timeout(timeout):
            while len(self.exits) < n:
                self.event.clear()
                await self.event.wait()
        return self.exits


def _alive(pid: int) -> bool:
    state = process_identity(pid)
    if state is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_job_runs_with_its_arguments_env_and_log(tmp_path: Path) -> None:
    command = _script(
        tmp_path,
        """
        print("args", sys.argv[1:])
        print("key", os.environ["LOOM_API_KEY"], "extra", os.environ.get("EXTRA"))
        print("cwd", os.getcwd())
        print("to stderr", file=sys.stderr)
        print("pgid==pid", os.getpgid(0) == os.getpid())
        sys.exit(5)
        """,
    )

    async def main() -> None:
        executor = LocalProcessExecutor(command, slots=3)
        recorder = Recorder()
        await executor.start(recorder)
        job = _job(tmp_path, EXTRA="x")
        handle = await executor.submit(job)
        assert handle.startswith("pid:")
        assert executor.status(job.id).state == "running"
        (exit,) = await recorder.wait()
        assert exit == JobExit("r1/a0/1", 5, "exited")
        assert executor.status(job.id).state == "exited"
        assert executor.status(job.id).returncode == 5
        assert executor.status("nope").state == "unknown"

    asyncio.run(main())
    log = (tmp_path / "logs" / "1.log").read_text()
    assert (
        "args ['--endpoint', 'http://127.0.0.1:1', '--run', 'r1', '--action', 'a0', "
        "'--attempt', '1']" in log
    )
    assert "key k extra x" in log and "to stderr" in log and "pgid==pid True" in log
    assert f"cwd {tmp_path / 'work' / '1'}" in log
    assert not (tmp_path / "work" / "1").exists()  # the work directory is removed


def test_a_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    command = _script(
        tmp_path,
        f"""
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        time.sleep(60)
        """,
    )

    async def main() -> None:
        executor = LocalProcessExecutor(command)
        recorder = Recorder()
        await executor.start(recorder)
        started = time.monotonic()
        await executor.submit(_job(tmp_path, timeout_s=1.0))
        (exit,) = await recorder.wait()
        assert exit.reason == "timeout" and exit.returncode == -9
        assert 1.0 <= time.monotonic() - started < 10

    asyncio.run(main())
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child):
        assert time.monotonic() < deadline, "the job's child survived the timeout"
        time.sleep(0.05)


def test_cancel(tmp_path: Path) -> None:
    command = _script(tmp_path, "time.sleep(60)\n")

    async def main() -> None:
        executor = LocalProcessExecutor(command)
        recorder = Recorder()
        await executor.start(recorder)
        job = _job(tmp_path)
        await executor.submit(job)
        await executor.cancel(job.id)
        (exit,) = await recorder.wait()
        assert exit.reason == "cancelled"
        await executor.cancel(job.id)  # gone already: a no-op

    asyncio.run(main())


def test_a_job_cancelled_before_it_is_submitted_never_starts(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    command = _script(tmp_path, f"open({str(marker)!r}, 'w').close()\n")

    async def main() -> None:
        executor = LocalProcessExecutor(command)
        recorder = Recorder()
        await executor.start(recorder)
        job = _job(tmp_path)
        await executor.cancel(job.id)  # an abort that overtook the scheduler's launch
        assert await executor.submit(job) == "cancelled"
        (exit,) = await recorder.wait()
        assert exit == JobExit(job.id, None, "cancelled")
        assert executor.status(job.id).state == "exited"

    asyncio.run(main())
    assert not marker.exists()


def test_the_spec_goes_along_in_a_private_file(tmp_path: Path) -> None:
    command = _script(
        tmp_path,
        """
        path = sys.argv[sys.argv.index("--spec-file") + 1]
        print("mode", oct(os.stat(path).st_mode & 0o777))
        print("spec", open(path).read())
        """,
    )
    task = wire.TaskSpec(module="flow", attr="t", name="env.t", environment="env")
    spec = wire.ActionSpec(
        run="r1", action="a0", attempt=1, project="default", domain="development",
        bundle="b" * 64, task=task, inputs={"x": 1}, env_vars={},
    )  # fmt: skip

    async def main() -> None:
        executor = LocalProcessExecutor(command, spec_files=True)
        recorder = Recorder()
        await executor.start(recorder)
        await executor.submit(dataclasses.replace(_job(tmp_path), spec=spec))
        await recorder.wait()

    asyncio.run(main())
    log = (tmp_path / "logs" / "1.log").read_text()
    assert "mode 0o600" in log
    sent = log.split("spec ", 1)[1].strip()
    assert wire.ActionSpec.model_validate_json(sent) == spec


def test_shutdown_kills_jobs_without_reporting(tmp_path: Path) -> None:
    command = _script(tmp_path, "print(os.getpid(), flush=True); time.sleep(60)\n")

    async def main() -> int:
        executor = LocalProcessExecutor(command)
        recorder = Recorder()
        await executor.start(recorder)
        job = _job(tmp_path)
        handle = await executor.submit(job)
        await executor.shutdown()
        assert recorder.exits == []
        with pytest.raises(JobStartError):
            await executor.submit(_job(tmp_path, attempt=2))
        return int(handle.split(":")[1])

    pid = asyncio.run(main())
    assert not _alive(pid)


def test_a_missing_command_is_a_job_start_error(tmp_path: Path) -> None:
    async def main() -> None:
        executor = LocalProcessExecutor([str(tmp_path / "no-such-runtime")])
        await executor.start(Recorder())
        with pytest.raises(JobStartError, match="no-such-runtime"):
            await executor.submit(_job(tmp_path))

    asyncio.run(main())


def test_reclaim_kills_only_the_process_it_started(tmp_path: Path) -> None:
    def orphan() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
        )

    victim, bystander = orphan(), orphan()
    try:
        time.sleep(0.1)
        identity = process_identity(victim.pid)
        assert identity

        async def main() -> None:
            executor = LocalProcessExecutor()
            await executor.reclaim(f"pid:{victim.pid}:{identity}")
            # a reused pid (different start time) is somebody else's process: left alone
            await executor.reclaim(f"pid:{bystander.pid}:12345")
            await executor.reclaim("garbage")

        asyncio.run(main())
        assert victim.wait(5) == -9
        assert bystander.poll() is None
    finally:
        for p in (victim, bystander):
            p.kill()
            p.wait()


def test_machine_capacity(tmp_path: Path) -> None:
    capacity = machine_capacity()
    assert capacity.slots is None and capacity.cpu >= 1  # no count: requests decide
    assert capacity.memory_bytes > 0
    assert capacity.gpu == len(glob.glob("/dev/nvidia[0-9]*")) and capacity.disk_bytes is None
    # the file system of the data directory, which need not exist yet
    on_disk = machine_capacity(disk_path=tmp_path / "not" / "yet")
    assert on_disk.disk_bytes == shutil.disk_usage(tmp_path).total
    assert machine_capacity(slots=7).slots == 7 and machine_capacity(gpus=3).gpu == 3
    assert LocalProcessExecutor(slots=5).capacity().slots == 5


def test_a_restarted_executor_adopts_what_a_warm_worker_marked_and_nothing_else(
    tmp_path: Path,
) -> None:
    """A warm worker of a crashed server runs on. The next executor adopts the attempts the
    worker marks as running (whatever the handle says), and not one it does not mark, even
    under the worker's handle: that one ended unreported or never began. The worker, which
    runs others, is not killed for it."""
    scratch = tmp_path / "scratch"
    worker_dir = scratch / "loom-workers-crashed" / "w1"
    worker_dir.mkdir(parents=True)
    marked = dataclasses.replace(_job(tmp_path, attempt=1), workdir=tmp_path / "work" / "1")
    unmarked = dataclasses.replace(_job(tmp_path, attempt=2), workdir=tmp_path / "work" / "2")
    # attempt 2 ran there, and ended; attempt 1 runs; a third's line was cut short by a kill
    (worker_dir / wire.WORKER_LEDGER).write_bytes(
        wire.ledger_line(wire.worker_job_marker("r1", "a0", 2), running=True)
        + wire.ledger_line(wire.worker_job_marker("r1", "a0", 1), running=True)
        + wire.ledger_line(wire.worker_job_marker("r1", "a0", 2), running=False)
        + wire.ledger_line(wire.worker_job_marker("r1", "a0", 3), running=True)[:-1]
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        cwd=worker_dir,
        start_new_session=True,
    )
    try:
        time.sleep(0.2)
        handle = f"worker:{worker.pid}:{process_identity(worker.pid)}"

        async def main() -> tuple[bool, bool, bool]:
            executor = LocalProcessExecutor(scratch_dir=scratch)
            await executor.start(Recorder())
            try:
                # it waited in the pool when the server recorded it: the mark tells
                adopted = await executor.adopt(marked, "pool:waiting")
                lost = await executor.adopt(unmarked, handle)
                return adopted, lost, executor.status(marked.id).state == "running"
            finally:
                await executor.shutdown(keep=True)

        adopted, lost, watched = asyncio.run(main())
        assert adopted and watched
        assert not lost
        assert worker.poll() is None  # the worker runs on
    finally:
        worker.kill()
        worker.wait()


def test_an_image_environments_fork_server_starts_on_demand_and_stops_when_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loom.executors import _process

    monkeypatch.setattr(_process, "ENV_ZYGOTE_IDLE_S", 1.0)
    # an image's interpreter: any Python with the loom runtime (here, this one)
    python = sys.executable

    async def scenario() -> tuple[bool, int | None, bool, bool]:
        recorder = Recorder()
        executor = LocalProcessExecutor()
        await executor.start(recorder)
        try:
            first = dataclasses.replace(_job(tmp_path, 1, LOOM_SERVER_PATIENCE="0"), python=python)
            await executor.submit(first)
            started = python in executor._env_zygotes  # (asked for by the submit)
            zygote, starting = executor._env_zygotes[python]
            await asyncio.wait_for(recorder.event.wait(), 60)
            await asyncio.wait_for(starting, 60)  # (it is up)
            for _ in range(100):  # idle, no child left: it stops
                if python not in executor._env_zygotes and not zygote.alive:
                    break
                await asyncio.sleep(0.1)
            stopped = python not in executor._env_zygotes and not zygote.alive
            recorder.event.clear()
            await executor.submit(dataclasses.replace(first, attempt=2))
            again = python in executor._env_zygotes  # the next attempt starts another
            await asyncio.wait_for(recorder.event.wait(), 60)
            return started, recorder.exits[0].returncode, stopped, again
        finally:
            await executor.shutdown()

    started, code, stopped, again = asyncio.run(scenario())
    assert started and code == 2  # (no server at that endpoint: the runtime's "no spec" code)
    assert (stopped, again) == (True, True)
