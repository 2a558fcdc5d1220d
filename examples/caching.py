"""Caching that persists across processes under ~/.loom/cache.

Run it twice: the second run returns instantly from the cache. Use
`loom run --overwrite-cache examples/caching.py main` to recompute.
"""

import time

import loom

env = loom.TaskEnvironment("caching-demo")


@env.task(cache="auto")  # the version follows the function's source
def expensive(n: int) -> int:
    time.sleep(1)
    return sum(i * i for i in range(n))


@env.task(cache=loom.Cache("override", version_override="v1", serialize=True))
def shared(n: int) -> int:
    """With serialize=True identical concurrent calls run once and share the result."""
    time.sleep(0.5)
    return n * 2


@env.task
async def main(n: int = 1000) -> dict[str, int]:
    import asyncio

    doubled = await asyncio.gather(*(shared.aio(n) for _ in range(4)))
    return {"sum_of_squares": expensive(n), "doubled": doubled[0]}


if __name__ == "__main__":
    print(loom.run(main).outputs())
