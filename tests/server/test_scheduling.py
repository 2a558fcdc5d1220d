"""The scheduler packs attempts by their requests against the executor's capacity."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from loom.executors import Capacity
from loom.server._requests import Defaults, Requests, Room
from tests.server.conftest import Api, task_spec

sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

GiB = 1 << 30


@pytest.fixture
def capacity() -> Capacity:
    # no count of slots, as a server has by default: only the requests decide
    return Capacity(slots=None, cpu=2.0, memory_bytes=8 * GiB, gpu=1)


def _started(api: Api, expected: int) -> set[str]:
    """The jobs submitted, once there are ``expected`` and no more come."""
    api.wait_for(lambda: len(api.executor.jobs) >= expected)
    time.sleep(0.3)  # a scheduler pass that would start more has had its chance
    assert len(api.executor.jobs) == expected, sorted(api.executor.jobs)
    return set(api.executor.jobs)


def _done(api: Api, run: str) -> None:
    """The run's attempt reports and exits (one that exits without a report is retried)."""
    api.finish(run, "a0", 1, value=1)
    api.exit(f"{run}/a0/1")


def _calls(
    monkeypatch: pytest.MonkeyPatch, obj: Any, method: str, note: Callable[..., Any]
) -> list[Any]:
    """What ``note`` says of each call of ``obj.method`` from now on (the call still runs)."""
    seen: list[Any] = []
    real = getattr(obj, method)

    def spy(*args: Any) -> Any:
        seen.append(note(*args))
        return real(*args)

    monkeypatch.setattr(obj, method, spy)
    return seen


def _task(**resources: Any) -> dict[str, Any]:
    return task_spec(resources=resources)


@sqlite
def test_tasks_without_requests_run_wide_until_memory_runs_out(api: Api) -> None:
    # 0.01 CPU each would let 200 start on 2 CPUs; 128 MiB each fills 8 GiB at 64
    runs = [api.create_run()["name"] for _ in range(70)]
    started = _started(api, 64)
    assert started == {f"{r}/a0/1" for r in runs[:64]}  # in creation order
    _done(api, runs[0])
    api.job(runs[64], "a0", 1)


@sqlite
def test_cpu_requests_are_packed_against_the_cpus(api: Api) -> None:
    runs = [api.create_run(_task(cpu=1.0))["name"] for _ in range(3)]
    assert _started(api, 2) == {f"{runs[0]}/a0/1", f"{runs[1]}/a0/1"}
    _done(api, runs[0])
    api.job(runs[2], "a0", 1)


@sqlite
def test_a_big_request_keeps_its_place_and_is_not_starved(api: Api) -> None:
    first = api.create_run(_task(cpu=1.5))["name"]
    api.job(first, "a0", 1)
    big = api.create_run(_task(cpu=2.0))["name"]
    small = api.create_run()["name"]  # would fit beside the first, but the big one is older
    _started(api, 1)
    _done(api, first)
    api.job(big, "a0", 1)
    _started(api, 2)
    _done(api, big)
    api.job(small, "a0", 1)


@sqlite
def test_what_waits_for_a_gpu_does_not_hold_back_what_needs_none(api: Api) -> None:
    first = api.create_run(_task(gpu=1))["name"]
    api.job(first, "a0", 1)
    second = api.create_run(_task(gpu=1))["name"]
    cpu_only = api.create_run()["name"]
    api.job(cpu_only, "a0", 1)
    assert f"{second}/a0/1" not in _started(api, 2)
    _done(api, first)
    api.job(second, "a0", 1)


@sqlite
def test_warm_workers_share_their_environments_requests(api: Api) -> None:
    reuse = {"max_replicas": 1, "concurrency": 4}
    runs = [
        api.create_run(task_spec(resources={"cpu": 2.0}, reuse=reuse))["name"] for _ in range(5)
    ]
    # each holds a quarter of the worker's 2 CPUs: four fit, the fifth waits
    assert _started(api, 4) == {f"{r}/a0/1" for r in runs[:4]}


@sqlite
def test_a_warm_pool_gets_no_more_than_it_runs_at_once(api: Api) -> None:
    """A pool runs ``replicas x concurrency`` attempts at once: more would only wait in the
    pool (where a restart of the server loses them), so they wait in the queue. Another
    pool's actions, and plain ones, pass them by."""
    reuse = {"max_replicas": 2, "concurrency": 3}
    warm = [api.create_run(task_spec(reuse=reuse))["name"] for _ in range(8)]
    other = api.create_run(task_spec(environment="other", reuse=reuse))["name"]
    plain = api.create_run()["name"]
    started = _started(api, 8)
    assert started == {f"{r}/a0/1" for r in [*warm[:6], other, plain]}
    _done(api, warm[0])
    api.job(warm[6], "a0", 1)
    assert f"{warm[7]}/a0/1" not in _started(api, 9)


@sqlite
def test_room_freed_with_nothing_waiting_costs_no_scheduling_pass(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes = _calls(monkeypatch, api.plane.scheduler.claims, "claim", lambda *_: 1)
    runs = [api.create_run()["name"] for _ in range(5)]
    _started(api, 5)
    before = len(passes)
    for run in runs:  # each end frees room, but nothing waits for it
        _done(api, run)
        api.wait_phase(run, "a0", "SUCCEEDED")
    time.sleep(0.3)
    assert passes[before:] == []
    waiting = api.create_run()["name"]  # what is queued is looked at at once
    api.job(waiting, "a0", 1)


@sqlite
def test_room_freed_starts_what_waited_for_it(api: Api) -> None:
    runs = [api.create_run(_task(cpu=2.0))["name"] for _ in range(3)]
    for i, run in enumerate(runs):
        api.job(run, "a0", 1)
        assert len(api.executor.jobs) == i + 1
        _done(api, run)


def test_requests_fill_in_defaults_and_split_by_concurrency() -> None:
    from loom import wire

    defaults = Defaults(cpu=0.05, memory_bytes=100)
    plain = wire.TaskSpec.model_validate(task_spec())
    assert Requests.of(plain, defaults) == Requests(1.0, 0.05, 100.0, 0.0)
    pooled = wire.TaskSpec.model_validate(
        task_spec(resources={"gpu": 1, "memory_bytes": 1000}, reuse={"concurrency": 4})
    )
    assert Requests.of(pooled, defaults) == Requests(0.25, 0.0125, 250.0, 0.25)
    room = Room.left(Capacity(slots=None, cpu=1.0, memory_bytes=1000), Requests(0, 0, 0, 0))
    assert room.fits(Requests.of(plain, defaults)) and not room.fits(Requests.of(pooled, defaults))
    assert room.minus(Requests(1, 1, 0, 0)).full


@sqlite
def test_the_transaction_that_queues_an_action_starts_it_without_a_pass(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (before: every queued action waited for a wake-up, a pass of the scheduler's and a
    # transaction of its own before its job went to the executor)
    passes = _calls(monkeypatch, api.plane.scheduler.claims, "claim", lambda *_: 1)
    time.sleep(0.3)  # (a pass at start-up may still be under way)
    before = len(passes)
    for _ in range(3):
        run = api.create_run()["name"]
        api.job(run, "a0", 1)
        _done(api, run)
        api.wait_phase(run, "a0", "SUCCEEDED")
    time.sleep(0.3)
    assert passes[before:] == []


@sqlite
def test_handles_go_with_the_next_claim_not_in_a_transaction_of_their_own(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import select

    from loom.server._models import Attempt

    claims = api.plane.scheduler.claims
    alone = _calls(monkeypatch, claims, "record_handles", lambda: 1)
    runs = []
    for _ in range(5):  # one after the other, as a chain's steps come
        runs.append(api.create_run()["name"])
        api.job(runs[-1], "a0", 1)
    with api.plane.db.read() as s:  # each claim recorded the previous one's handle...
        recorded = s.scalars(select(Attempt.handle).where(Attempt.handle.is_not(None))).all()
    assert len(recorded) >= 4
    assert alone == []
    # ...and the last one's, with no claim to follow, soon gets a transaction of its own
    api.wait_for(lambda: alone == [1], timeout=5)


def test_a_slow_launch_does_not_hold_up_the_next_pass() -> None:
    # (before: the loop launched a pass's attempts before its next pass, so one waiting for
    # its image's environment to be built held up every attempt claimed after it)
    import asyncio

    from loom import wire
    from loom.server._runs import Launch
    from loom.server._scheduler import Pass, Scheduler

    task = wire.TaskSpec(module="flow", attr="t", name="env.t", environment="env")
    slow, fast = Launch("r", "slow", 1, task, {}), Launch("r", "fast", 1, task, {})

    class Claims:
        def __init__(self) -> None:
            self.passes = [[slow], [fast]]

        def claim(self) -> Pass:
            return Pass(self.passes.pop(0) if self.passes else [], None, False)

        def add_handles(self, handles: Any) -> None:
            pass

        def handles_due(self) -> None:
            return None

    async def scenario() -> list[str]:
        launched: list[str] = []

        async def launch(what: Launch) -> None:
            if what is slow:
                await asyncio.sleep(30)  # an environment's build
            launched.append(what.action)

        scheduler = Scheduler(Claims(), launch)  # type: ignore[arg-type]
        scheduler.start()
        try:
            await asyncio.sleep(0.2)  # the first pass: the slow one
            scheduler.wake()
            for _ in range(50):
                if launched:
                    break
                await asyncio.sleep(0.05)
            return launched
        finally:
            await scheduler.stop()

    assert asyncio.run(scenario()) == ["fast"]
