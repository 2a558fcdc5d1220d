"""The smallest useful workflow: fan out over inputs, gather the results."""

import asyncio

import loom

env = loom.TaskEnvironment("hello")


@env.task
async def greet(name: str) -> str:
    """Greet one person."""
    return f"Hello, {name}!"


@env.task
async def main(names: list[str] = ["Ada", "Grace", "Linus"]) -> list[str]:
    """Greet everyone concurrently, one action per name."""
    with loom.group("greetings"):
        return list(await asyncio.gather(*(greet(n) for n in names)))


if __name__ == "__main__":
    print(loom.run(main).outputs())
