"""Flyte 2's task and environment options with a runtime effect, as ``python script.py``
locally and against a real server: Backoff, every Timeout bound (the server enforces
``deadline`` and ``max_queued_time`` remotely), ``max_inline_io_bytes``, ``clone_with`` and
``loom.logger``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.e2e.test_flyte_compat import check, mode, run_script, shared_server

pytestmark = pytest.mark.e2e

__all__ = ["mode", "shared_server"]  # fixtures, used by name

TIMEOUTS = """
    import asyncio
    import time
    from datetime import timedelta

    import loom as flyte

    env = flyte.TaskEnvironment(name="retries_with_timeouts")


    @env.task(
        retries=flyte.RetryStrategy(
            count=2,
            backoff=flyte.Backoff(base=timedelta(seconds=1), factor=2.0, cap=timedelta(seconds=5)),
        ),
    )
    async def flaky() -> int:
        if flyte.ctx().attempt < 3:
            raise RuntimeError(f"transient failure on attempt {flyte.ctx().attempt}")
        return flyte.ctx().attempt


    @env.task
    async def long_child(idx: int) -> str:
        await asyncio.sleep(600)
        return f"child {idx} unexpectedly completed"


    @env.task(retries=5, timeout=flyte.Timeout(deadline=timedelta(seconds=4)))
    async def deadline_with_retries() -> list[str]:
        return list(await asyncio.gather(long_child(idx=0), long_child(idx=1)))


    @env.task(retries=1, timeout=flyte.Timeout(max_runtime=timedelta(seconds=2)))
    async def max_runtime_with_retries() -> str:
        await asyncio.sleep(600)
        return "unexpected"


    @env.task(cache=flyte.Cache("override", version_override="q1", serialize=True))
    async def held(x: int) -> int:
        await asyncio.sleep(8)
        return 7


    @env.task
    async def main() -> list[str]:
        seen = []
        started = time.monotonic()
        attempt = await flaky()
        seen.append(f"flaky: attempt {attempt}, waited {time.monotonic() - started >= 3.0}")
        for task in (deadline_with_retries, max_runtime_with_retries):
            started = time.monotonic()
            try:
                await task()
            except flyte.errors.TaskTimeoutError as e:
                seen.append(f"{task.short_name}: {e.code} within {time.monotonic() - started < 12}")
        nonce = time.time_ns()  # a fresh cache key: both calls compute it, one at a time
        impatient = held.override(timeout=flyte.Timeout(max_queued_time=timedelta(seconds=2)))

        async def second() -> str:
            await asyncio.sleep(1)  # the first call holds the serialized cache's computation
            started = time.monotonic()
            try:
                return f"held: {await impatient(nonce)}"
            except flyte.errors.MaxQueuedTimeExceededError as e:
                return f"held: {e.code} within {time.monotonic() - started < 6}"

        seen.extend(map(str, await asyncio.gather(held(nonce), second())))
        return seen


    if __name__ == "__main__":
        flyte.init_from_config()
        run = flyte.run(main)
        run.wait()
        for line in run.outputs():
            print("SEEN", line)
"""


def test_backoff_and_every_timeout_bound(
    mode: str, shared_server: ServerProcess, tmp_path: Path
) -> None:
    check(
        run_script(mode, shared_server, tmp_path, TIMEOUTS, timeout=180),
        "SEEN flaky: attempt 3, waited True",
        "SEEN deadline_with_retries: DeadlineExceededError within True",
        "SEEN max_runtime_with_retries: MaxRuntimeExceededError within True",
        "SEEN 7",
        "SEEN held: MaxQueuedTimeExceededError within True",
    )


OPTIONS = """
    import asyncio
    import os

    import loom as flyte

    env = flyte.TaskEnvironment(
        name="reusable",
        resources=flyte.Resources(memory="500Mi", cpu=1, shm="auto"),
        reusable=flyte.ReusePolicy(replicas=(1, 2), idle_ttl=60),
        image=flyte.Image.from_uv_script(__file__, name="options"),
        env_vars={"WHERE": "workers"},
    )


    @env.task
    async def square(x: int) -> int:
        flyte.logger.info("squaring %d", x)
        return x**2


    cloned_env = env.clone_with(name="nonreusable", reusable=None, depends_on=[env])


    @cloned_env.task(max_inline_io_bytes=10 * 1024)
    async def printer_task(x: str) -> str:
        return x


    @cloned_env.task(entrypoint=True, queue="default")
    async def main(n: int) -> list[str]:
        flyte.logger.info("main starts n=%d in %s", n, os.environ["WHERE"])
        seen = [str(sum(await asyncio.gather(*(square(x) for x in range(n)))))]
        seen.append(await printer_task("Hello, world!"))
        try:
            await printer_task("A" * 10**5)
        except flyte.errors.InlineIOMaxBytesBreached as e:
            seen.append(f"{e.code}: {str(e)[:40]}")
        flyte.logger.debug("not shown")
        return seen


    if __name__ == "__main__":
        flyte.init_from_config()
        run = flyte.run(main, n=4)
        run.wait()
        for line in run.outputs():
            print("SEEN", line)
        if "LOOM_CONFIG" in os.environ:  # remote: the lines are in the action's log
            for line in flyte.remote.Run.get(run.name).get_logs():
                print("LOG", line)
"""


def test_clone_with_inline_io_limit_and_logger(
    mode: str, shared_server: ServerProcess, tmp_path: Path
) -> None:
    result = run_script(mode, shared_server, tmp_path, OPTIONS, timeout=180)
    out = check(
        result,
        "SEEN 14",
        "SEEN Hello, world!",
        "SEEN InlineIOMaxBytesBreached: the inputs of task nonreusable.printer",
    )
    logged = out if mode == "remote" else result.stderr
    assert "INFO main starts n=4 in workers" in logged, logged
    assert "not shown" not in logged
    if mode == "local":
        assert "INFO squaring 3" in logged
