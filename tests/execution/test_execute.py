"""Executing actions: retries, timeouts, exceptions, sync concurrency, output checks."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import loom
from loom.errors import InputError, OutputTypeError, TaskTimeoutError

env = loom.TaskEnvironment("execute")
attempts_seen: list[int] = []


@env.task(retries=loom.RetryStrategy(3, backoff=0.01))
async def flaky(fail_times: int) -> int:
    ctx = loom.ctx()
    assert ctx is not None
    attempts_seen.append(ctx.attempt)
    if ctx.attempt <= fail_times:
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return ctx.attempt


@env.task
async def call_flaky(fail_times: int) -> int:
    return await flaky(fail_times)


def test_retries_run_again_and_expose_the_attempt_number() -> None:
    attempts_seen.clear()
    run = loom.run(call_flaky, fail_times=2)
    assert run.outputs() == 3
    assert attempts_seen == [1, 2, 3]
    record = next(a for a in run.actions() if a.task == "execute.flaky")
    assert record.attempts == 3 and record.phase == "SUCCEEDED"


def test_retries_give_up_with_the_original_exception() -> None:
    attempts_seen.clear()
    with pytest.raises(ConnectionError, match="attempt 4 failed"):
        loom.run(call_flaky, fail_times=10)
    assert attempts_seen == [1, 2, 3, 4]


def test_override_retries_zero_disables_retries() -> None:
    attempts_seen.clear()
    no_retry = flaky.override(retries=0)

    @env.task
    async def parent() -> int:
        return await no_retry(1)

    with pytest.raises(ConnectionError, match="attempt 1 failed"):
        loom.run(parent)
    assert attempts_seen == [1]


def test_retry_backoff_grows() -> None:
    strategy = loom.RetryStrategy(5, backoff=0.1, backoff_factor=2, max_backoff=0.3)
    assert [strategy.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]


def test_sync_retries_with_backoff_wait_between_attempts() -> None:
    stamps: list[float] = []

    @env.task(retries=loom.RetryStrategy(2, backoff=0.2, backoff_factor=1))
    def sync_flaky() -> str:
        stamps.append(time.monotonic())
        if len(stamps) < 3:
            raise RuntimeError("not yet")
        return "ok"

    assert loom.run(sync_flaky).outputs() == "ok"
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert len(gaps) == 2 and all(g >= 0.18 for g in gaps)


@env.task(timeout=0.3)
async def slow_async(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


@env.task(timeout=0.3)
def slow_sync(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


@pytest.mark.parametrize("task", [slow_async, slow_sync], ids=["async", "sync"])
def test_timeouts_are_enforced(task) -> None:
    started = time.monotonic()
    with pytest.raises(TaskTimeoutError, match="exceeded its timeout of 0.3 s") as info:
        loom.run(task, seconds=5)
    assert time.monotonic() - started < 2.0
    assert isinstance(info.value, TimeoutError)  # plain `except TimeoutError` works too
    assert loom.run(task, seconds=0.01).outputs() == "done"


def test_timeouts_are_retried() -> None:
    calls: list[int] = []

    @env.task(timeout=0.2, retries=loom.RetryStrategy(1, backoff=0))
    async def slow_then_fast() -> int:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(5)
        return len(calls)

    assert loom.run(slow_then_fast).outputs() == 2


def test_a_timed_out_sync_attempt_is_stopped() -> None:
    progress: list[int] = []

    @env.task(timeout=0.2)
    def busy() -> None:
        for i in range(100):
            progress.append(i)
            time.sleep(0.05)

    with pytest.raises(TaskTimeoutError):
        loom.run(busy)
    time.sleep(0.3)
    seen = len(progress)
    time.sleep(0.3)
    assert len(progress) == seen < 100, "the abandoned attempt kept running"


class QuotaError(Exception):
    pass


@env.task
def child_raises(kind: str) -> int:
    if kind == "value":
        raise ValueError("bad value")
    raise QuotaError("over quota")


@env.task
async def parent_catches(kind: str) -> str:
    try:
        child_raises(kind)
    except ValueError as e:
        return f"caught ValueError: {e}"
    except QuotaError as e:
        return f"caught QuotaError: {e}"
    return "nothing raised"


def test_child_exceptions_keep_their_type_and_message() -> None:
    """Flyte 2 turns a child's ValueError into a generic error; loom keeps the type."""
    assert loom.run(parent_catches, kind="value").outputs() == "caught ValueError: bad value"
    assert loom.run(parent_catches, kind="quota").outputs() == "caught QuotaError: over quota"


def test_uncaught_child_exception_reaches_the_caller_with_traceback() -> None:
    @env.task
    async def parent() -> int:
        return child_raises("value")

    with pytest.raises(ValueError, match="bad value") as info:
        loom.run(parent)
    frames = [f.name for f in __import__("traceback").extract_tb(info.value.__traceback__)]
    assert "child_raises" in frames and "parent" in frames
    assert any("child_raises" in n and "execute.child_raises" in n for n in info.value.__notes__)


def test_sync_fan_out_runs_concurrently() -> None:
    threads: set[str] = set()

    @env.task
    def sleepy(i: int) -> int:
        threads.add(threading.current_thread().name)
        time.sleep(0.3)
        return i

    @env.task
    async def fan_out(n: int) -> list[int]:
        return list(await asyncio.gather(*(sleepy.aio(i) for i in range(n))))

    started = time.monotonic()
    assert loom.run(fan_out, n=20).outputs() == list(range(20))
    assert time.monotonic() - started < 3.0, "20 x 0.3 s sync tasks ran one after another"
    assert len(threads) > 1


def test_async_fan_out_shares_one_event_loop() -> None:
    loops: set[int] = set()

    @env.task
    async def which_loop(i: int) -> int:
        loops.add(id(asyncio.get_running_loop()))
        await asyncio.sleep(0.01)
        return i

    @env.task
    async def fan_out(n: int) -> int:
        return sum(await asyncio.gather(*(which_loop(i) for i in range(n))))

    assert loom.run(fan_out, n=50).outputs() == sum(range(50))
    assert len(loops) == 1


def test_inputs_are_validated_with_a_clear_error() -> None:
    @env.task
    async def takes_int(n: int) -> int:
        return n

    @env.task
    async def parent() -> int:
        return await takes_int("three")  # type: ignore[arg-type]

    with pytest.raises(InputError, match=r"input 'n' expects int, got str \('three'\)"):
        loom.run(parent)
    with pytest.raises(InputError, match="missing required input"):
        loom.run(takes_int)


def test_outputs_are_checked_against_the_annotation() -> None:
    @env.task
    async def lies() -> int:
        return "not an int"  # type: ignore[return-value]

    with pytest.raises(OutputTypeError, match="declared to return int but returned str"):
        loom.run(lies)


def test_optional_output_may_be_none() -> None:
    @env.task
    async def maybe(flag: bool) -> int | None:
        return 1 if flag else None

    assert loom.run(maybe, flag=False).outputs() is None
    assert loom.run(maybe, flag=True).outputs() == 1


def test_failed_actions_are_recorded() -> None:
    run = None

    @env.task
    async def parent() -> str:
        try:
            await flaky.override(retries=0)(5)
        except ConnectionError:
            return "handled"
        return "no"

    run = loom.run(parent)
    assert run.outputs() == "handled"
    record = next(a for a in run.actions() if a.task == "execute.flaky")
    assert record.phase == "FAILED"
    assert record.error == "ConnectionError: attempt 1 failed"
