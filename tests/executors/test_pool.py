"""Warm worker pools, with a small script standing in for ``python -m loom.runtime --worker``:
what a worker is sent, and the handle recovery would kill it by."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from loom import wire
from loom.executors import Job, JobExit, LocalProcessExecutor, process_identity

pytestmark = pytest.mark.e2e

# speaks the worker's side of the protocol: hello, then for each job write the message it got
# (and its pid) to <job log>.json and report it done; except that it never ends a job of
# action "stuck", and ignores cancels: then it is a hung worker
WORKER = """
import asyncio, json, os, sys

async def main():
    await asyncio.sleep(float(os.environ.get("SLOW_START", "0")))  # a loaded machine
    socket = sys.argv[sys.argv.index("--socket") + 1]
    worker = sys.argv[sys.argv.index("--worker-id") + 1]
    reader, writer = await asyncio.open_unix_connection(socket, limit=2**20)
    writer.write((json.dumps({"hello": worker, "pid": os.getpid()}) + "\\n").encode())
    async for line in reader:
        message = json.loads(line)
        if message.get("stop"):
            break
        if "job" in message and message["action"] != "stuck":
            with open(message["log"] + ".json", "w") as f:
                json.dump({**message, "pid": os.getpid()}, f)
            writer.write((json.dumps({"done": message["job"], "code": 0}) + "\\n").encode())
            await writer.drain()

asyncio.run(main())
"""


def _job(tmp_path: Path, action: str, spec: wire.ActionSpec | None = None) -> Job:
    return Job(
        run="r1",
        action=action,
        attempt=1,
        endpoint="http://127.0.0.1:1",
        env={"PATH": os.environ.get("PATH", "")},
        log_path=tmp_path / "logs" / "r1" / f"{action}.1.log",
        workdir=tmp_path / "work" / action,
        reuse=wire.ReuseSpec(min_replicas=1, max_replicas=1, concurrency=4, idle_ttl_s=30),
        pool="p1",
        spec=spec,
    )


def _spec(action: str) -> wire.ActionSpec:
    task = wire.TaskSpec(module="flow", attr="t", name="env.t", environment="env")
    return wire.ActionSpec(
        run="r1",
        action=action,
        attempt=1,
        project="default",
        domain="development",
        bundle="b" * 64,
        task=task,
        inputs={"x": [1, "two", None]},
        env_vars={"R": "1"},
    )


def test_a_worker_gets_the_spec_with_its_job(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    exits: list[JobExit] = []
    done = asyncio.Event()

    async def on_exit(exit: JobExit) -> None:
        exits.append(exit)
        if len(exits) == 2:
            done.set()

    async def main() -> tuple[str, str]:
        executor = LocalProcessExecutor([sys.executable, str(script)], slots=2)
        await executor.start(on_exit)
        try:
            with_spec = await executor.submit(_job(tmp_path, "a1", _spec("a1")))
            without = await executor.submit(_job(tmp_path, "a2"))
            await asyncio.wait_for(done.wait(), 30)
        finally:
            await executor.shutdown()
        return with_spec, without

    with_spec, without = asyncio.run(main())
    assert with_spec == without  # one worker
    kind, pid, identity = with_spec.split(":")
    assert kind == "worker" and identity  # recovery tells this very process from a reused pid
    assert process_identity(int(pid)) in (None, identity)
    assert sorted(e.job_id for e in exits) == ["r1/a1/1", "r1/a2/1"]
    assert all(e.returncode == 0 and e.reason == "exited" for e in exits)
    sent = json.loads((tmp_path / "logs" / "r1" / "a1.1.log.json").read_text())
    assert sent["job"] == "r1/a1/1" and sent["attempt"] == 1
    assert wire.ActionSpec.model_validate(sent["spec"]) == _spec("a1")
    plain = json.loads((tmp_path / "logs" / "r1" / "a2.1.log.json").read_text())
    assert "spec" not in plain  # the worker fetches it itself


def test_a_worker_that_does_not_cancel_gets_no_new_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loom.executors import _pool

    monkeypatch.setattr(_pool, "CANCEL_GRACE_S", 1.0)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    exits: dict[str, JobExit] = {}
    done = asyncio.Event()

    async def on_exit(exit: JobExit) -> None:
        exits[exit.job_id] = exit
        if len(exits) == 2:
            done.set()

    async def main() -> tuple[str, str]:
        executor = LocalProcessExecutor([sys.executable, str(script)], slots=2)
        await executor.start(on_exit)
        try:
            hung = await executor.submit(_job(tmp_path, "stuck"))
            await executor.cancel("r1/stuck/1")
            # the worker has room for three more, but not until it has cancelled
            later = await executor.submit(_job(tmp_path, "later"))
            await asyncio.wait_for(done.wait(), 30)
        finally:
            await executor.shutdown()
        return hung, later

    hung, later = asyncio.run(main())
    assert later == "pool:waiting"  # queued in the pool, not given to the hung worker
    assert exits["r1/stuck/1"].reason == "cancelled"
    assert exits["r1/later/1"].returncode == 0
    ran = json.loads((tmp_path / "logs" / "r1" / "later.1.log.json").read_text())
    assert str(ran["pid"]) != hung.split(":")[1]  # a new worker ran it


def test_a_job_counts_as_queued_until_its_worker_has_started(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    done = asyncio.Event()

    async def on_exit(exit: JobExit) -> None:
        done.set()

    async def main() -> tuple[str, str]:
        executor = LocalProcessExecutor([sys.executable, str(script)], slots=2)
        await executor.start(on_exit)
        job = dataclasses.replace(_job(tmp_path, "a1"), env={"SLOW_START": "2"})
        try:
            await executor.submit(job)
            # the server beats for a queued job: its worker cannot, not having started
            starting = executor.status(job.id).state
            await asyncio.wait_for(done.wait(), 30)
            return starting, executor.status(job.id).state
        finally:
            await executor.shutdown()

    starting, ended = asyncio.run(main())
    assert starting == "queued"
    assert ended == "exited"


def test_a_worker_that_says_hello_before_its_start_returns_gets_its_jobs(
    tmp_path: Path,
) -> None:
    # a fork-server worker can connect before the pool has registered it: it was turned away,
    # exited with code 0, and its jobs were lost
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    exits: list[JobExit] = []
    done = asyncio.Event()

    async def on_exit(exit: JobExit) -> None:
        exits.append(exit)
        done.set()

    async def main() -> None:
        executor = LocalProcessExecutor([sys.executable, str(script)], slots=2)
        await executor.start(on_exit)
        pools = executor._pools
        start = pools._start_process

        async def slow_to_return(*args: object) -> object:
            process = await start(*args)  # type: ignore[arg-type]
            await asyncio.sleep(1.5)  # the worker says hello meanwhile
            return process

        pools._start_process = slow_to_return  # type: ignore[assignment]
        try:
            await executor.submit(_job(tmp_path, "a1"))
            await asyncio.wait_for(done.wait(), 30)
        finally:
            await executor.shutdown()

    asyncio.run(main())
    assert [e.returncode for e in exits] == [0]
    assert (tmp_path / "logs" / "r1" / "a1.1.log.json").exists()  # the job reached the worker


# reports a result for its own job and one for an attempt it was never given, then says done
REPORTING_WORKER = """
import asyncio, json, os, sys

def report(run, action):
    return {"run": run, "action": action, "attempt": 1, "result": {"outputs": {"value": 7}}}

async def main():
    socket = sys.argv[sys.argv.index("--socket") + 1]
    worker = sys.argv[sys.argv.index("--worker-id") + 1]
    reader, writer = await asyncio.open_unix_connection(socket, limit=2**20)
    writer.write((json.dumps({"hello": worker, "pid": os.getpid()}) + "\\n").encode())
    async for line in reader:
        message = json.loads(line)
        if message.get("stop"):
            break
        if "job" in message:
            items = [report(message["run"], message["action"]), report("other", "theirs")]
            writer.write((json.dumps({"report": 1, "items": items}) + "\\n").encode())
        elif "reported" in message:
            with open(os.environ["ANSWER"], "w") as f:
                json.dump(message, f)
            writer.write((json.dumps({"done": "r1/a1/1", "code": 0}) + "\\n").encode())
        await writer.drain()

asyncio.run(main())
"""


def test_a_worker_reports_results_through_its_socket_for_its_own_jobs_only(
    tmp_path: Path,
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(REPORTING_WORKER))
    answer = tmp_path / "answer.json"
    recorded: list[wire.AttemptReport] = []
    done = asyncio.Event()

    async def on_exit(exit: JobExit) -> None:
        done.set()

    async def on_report(reports: list[wire.AttemptReport]) -> list[wire.ItemStatus]:
        recorded.extend(reports)
        return [wire.ItemStatus(status=200) for _ in reports]

    async def main() -> None:
        executor = LocalProcessExecutor([sys.executable, str(script)], slots=2)
        await executor.start(on_exit, on_report)
        try:
            job = _job(tmp_path, "a1")
            await executor.submit(dataclasses.replace(job, env={**job.env, "ANSWER": str(answer)}))
            await asyncio.wait_for(done.wait(), 30)
        finally:
            await executor.shutdown()

    asyncio.run(main())
    # the executor recorded the result of the worker's own job, and refused the other
    assert [(r.run, r.action, r.attempt) for r in recorded] == [("r1", "a1", 1)]
    assert recorded[0].result.outputs is not None and recorded[0].result.outputs.value == 7
    sent = json.loads(answer.read_text())
    assert sent["reported"] == 1 and "error" not in sent
    assert [s["status"] for s in sent["statuses"]] == [200, 403]


def test_jobs_submitted_at_once_start_no_more_workers_than_replicas(tmp_path: Path) -> None:
    # (before: each submit that found no free worker started one while the first was still
    # starting, once launches came from more than one task at a time)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    exits: list[JobExit] = []
    done = asyncio.Event()

    async def on_exit(exit: JobExit) -> None:
        exits.append(exit)
        if len(exits) == 6:
            done.set()

    async def main() -> set[str]:
        executor = LocalProcessExecutor([sys.executable, str(script)], slots=8)
        await executor.start(on_exit)
        pools = executor._pools
        start = pools._start_process

        async def slow_to_start(*args: object) -> object:
            await asyncio.sleep(0.3)  # as forking from the fork server takes a moment
            return await start(*args)  # type: ignore[arg-type]

        pools._start_process = slow_to_start  # type: ignore[assignment]
        try:
            jobs = [_job(tmp_path, f"a{i}") for i in range(6)]
            handles = await asyncio.gather(*(executor.submit(j) for j in jobs))
            await asyncio.wait_for(done.wait(), 30)
        finally:
            await executor.shutdown()
        return {h for h in handles if h != "pool:waiting"}

    workers = asyncio.run(main())
    assert len(workers) == 1  # max_replicas=1: one worker ran them all
    assert sorted(e.job_id for e in exits) == [f"r1/a{i}/1" for i in range(6)]
    pids = {json.loads((tmp_path / "logs" / "r1" / f"a{i}.1.log.json").read_text())["pid"]
            for i in range(6)}  # fmt: skip
    assert len(pids) == 1
