"""loom.ctx(), groups, traced helpers and HTML reports."""

import asyncio

import loom

env = loom.TaskEnvironment("observe")


@loom.trace
async def lookup(key: str) -> int:
    await asyncio.sleep(0)
    return len(key)


@env.task(report=True)
async def measure(key: str) -> int:
    c = loom.ctx()
    assert c is not None
    size = await lookup(key)
    loom.report.log(f"<p>{loom.report.escape(key)} has {size} characters</p>")
    return size


@env.task
async def main(keys: list[str] = ["alpha", "beta"]) -> dict[str, str]:
    with loom.group("measurements"):
        sizes = await asyncio.gather(*(measure(k) for k in keys))
    c = loom.ctx()
    assert c is not None
    return {"run": c.run_name, "action": c.action, "total": str(sum(sizes))}


if __name__ == "__main__":
    run = loom.run(main)
    print(run.outputs()["total"], [a.report for a in run.actions() if a.report])
