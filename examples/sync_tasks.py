"""Sync tasks run in worker threads: `.aio()` fans them out concurrently."""

import asyncio
import time

import loom

env = loom.TaskEnvironment("threads")


@env.task
def blocking_io(i: int) -> int:
    time.sleep(0.2)  # e.g. a blocking HTTP call
    return i * 10


@env.task
async def main(n: int = 10) -> dict[str, float]:
    started = time.perf_counter()
    results = await asyncio.gather(*(blocking_io.aio(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    return {"total": sum(results), "seconds": round(elapsed, 2)}


if __name__ == "__main__":
    print(loom.run(main).outputs())
