"""Retries with backoff and timeouts, both honoured in local mode."""

import asyncio

import loom

env = loom.TaskEnvironment("resilience")


@env.task(retries=loom.RetryStrategy(3, backoff=0.05))
async def flaky_fetch(url: str) -> str:
    """Fails twice, then succeeds: each attempt is visible through loom.ctx().attempt."""
    attempt = loom.ctx().attempt  # type: ignore[union-attr]
    if attempt < 3:
        raise ConnectionError(f"{url} unreachable (attempt {attempt})")
    return f"{url} fetched on attempt {attempt}"


@env.task(timeout=0.5)
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "finished"


@env.task
async def main() -> list[str]:
    fetched = await flaky_fetch("https://example.invalid/data")
    try:
        await slow(5)
        timed = "no timeout?"
    except TimeoutError as e:  # loom.errors.TaskTimeoutError is a TimeoutError
        timed = f"timed out: {e}"
    # override() can switch retries off again, which Flyte 2 cannot
    try:
        await flaky_fetch.override(retries=0)("https://example.invalid/other")
        single = "no error?"
    except ConnectionError as e:
        single = f"no retries: {e}"
    return [fetched, timed, single]


if __name__ == "__main__":
    for line in loom.run(main).outputs():
        print(line)
