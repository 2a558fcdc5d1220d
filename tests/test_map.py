"""loom.map as Flyte 2 users call it: over tasks and partials, sync and async, bounded,
with exceptions returned or raised; every mapped call an action of the run."""

from __future__ import annotations

import asyncio
import functools
import threading
import time

import pytest

import loom

env = loom.TaskEnvironment("maps")


@env.task
async def double(x: int) -> int:
    return 2 * x


@env.task
def add(x: int, y: int) -> int:
    return x + y


@env.task
async def picky(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


@env.task
def greet(greeting: str, name: str, punct: str = "!") -> str:
    return f"{greeting} {name}{punct}"


def test_outside_a_run_the_calls_are_plain_calls() -> None:
    assert list(loom.map(double, [1, 2, 3])) == [2, 4, 6]
    assert list(loom.map(add, [1, 2], [10, 20])) == [11, 22]
    assert list(loom.map(double, [])) == []


def test_async_map_makes_one_action_per_item_in_its_group() -> None:
    @env.task
    async def main(n: int) -> list[int]:
        return [r async for r in loom.map.aio(double, range(n))]  # type: ignore[misc]

    run = loom.run(main, n=5)
    assert run.outputs() == [0, 2, 4, 6, 8]
    children = [a for a in run.actions() if a.task == "maps.double"]
    assert len(children) == 5
    assert {a.group for a in children} == {("maps.double_map",)}
    assert [a.inputs["x"] for a in children] == [0, 1, 2, 3, 4]  # started in item order


def test_group_name_and_enclosing_groups() -> None:
    @env.task
    async def main() -> list[int]:
        with loom.group("outer"):
            got = [r async for r in loom.map.aio(double, [1], group_name="g")]
        await double(5)  # after the map: not in its group
        return got  # type: ignore[return-value]

    run = loom.run(main)
    groups = [a.group for a in run.actions() if a.task == "maps.double"]
    assert groups == [("outer", "maps.double_g"), ()]


def test_concurrency_bounds_the_calls_running_at_once() -> None:
    running = peak = 0

    @env.task
    async def slow(x: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        return x

    @env.task
    async def main(limit: int) -> list[int]:
        return [r async for r in loom.map.aio(slow, range(9), concurrency=limit)]  # type: ignore[misc]

    assert loom.run(main, limit=3).outputs() == list(range(9))
    assert peak == 3
    peak = 0
    loom.run(main, limit=0)
    assert peak == 9  # 0: no bound


def test_results_come_in_order_whatever_order_calls_end() -> None:
    @env.task
    async def late(x: int) -> int:
        await asyncio.sleep(0.02 * (5 - x))
        return x

    @env.task
    async def main() -> list[int]:
        return [r async for r in loom.map.aio(late, range(5), concurrency=2)]  # type: ignore[misc]

    assert loom.run(main).outputs() == [0, 1, 2, 3, 4]


def test_return_exceptions_yields_them_in_place() -> None:
    @env.task
    async def main() -> list[str]:
        out = []
        async for r in loom.map.aio(picky, range(4)):  # the default, as in Flyte
            out.append(type(r).__name__ if isinstance(r, Exception) else str(r))
        return out

    assert loom.run(main).outputs() == ["0", "ValueError", "2", "ValueError"]


def test_without_return_exceptions_the_first_failure_raises_and_the_rest_stop() -> None:
    started: list[int] = []

    @env.task
    async def fail_first(x: int) -> int:
        started.append(x)
        if x == 0:
            raise ValueError("first")
        await asyncio.sleep(10)
        return x

    @env.task
    async def main() -> list[int]:
        got = []
        try:
            async for r in loom.map.aio(
                fail_first, range(6), concurrency=2, return_exceptions=False
            ):
                got.append(r)
        except ValueError as e:
            assert str(e) == "first"
            return got
        raise AssertionError("not raised")

    t0 = time.monotonic()
    run = loom.run(main)
    assert run.outputs() == []
    assert time.monotonic() - t0 < 5  # the sleeping call was cancelled
    assert len(started) <= 3  # nothing new started after the failure


def test_sync_map_from_a_sync_task_runs_calls_concurrently() -> None:
    threads: set[int] = set()

    @env.task
    def nap(x: int) -> int:
        threads.add(threading.get_ident())
        time.sleep(0.3)
        return x

    @env.task
    def main() -> list[int]:
        return list(loom.map(nap, range(4), return_exceptions=False))

    t0 = time.monotonic()
    run = loom.run(main)
    assert run.outputs() == [0, 1, 2, 3]
    assert time.monotonic() - t0 < 1.0
    assert len([a for a in run.actions() if a.task.endswith(".nap")]) == 4


def test_sync_map_yields_exceptions_or_raises() -> None:
    @env.task
    def main(raise_: bool) -> list[str]:
        if raise_:
            try:
                list(loom.map(picky, range(3), return_exceptions=False))
            except ValueError as e:
                return [f"raised {e}"]
        return [repr(r) for r in loom.map(picky, range(3))]

    assert loom.run(main, raise_=False).outputs() == ["0", "ValueError('odd 1')", "2"]
    assert loom.run(main, raise_=True).outputs() == ["raised odd 1"]


def test_async_task_maps_a_sync_task() -> None:
    @env.task
    async def main() -> list[int]:
        return [r async for r in loom.map.aio(add, [1, 2, 3], [1, 1, 1])]  # type: ignore[misc]

    assert loom.run(main).outputs() == [2, 3, 4]


def test_partials_bind_arguments_and_map_the_next_positional_input() -> None:
    hello = functools.partial(greet, "hello", punct="?")

    @env.task
    def main() -> list[str]:
        return list(loom.map(hello, ["ann", "bob"], return_exceptions=False))

    run = loom.run(main)
    assert run.outputs() == ["hello ann?", "hello bob?"]
    calls = [a for a in run.actions() if a.task == "maps.greet"]
    assert [a.inputs for a in calls] == [
        {"greeting": "hello", "name": "ann", "punct": "?"},
        {"greeting": "hello", "name": "bob", "punct": "?"},
    ]
    assert list(loom.map(functools.partial(greet, name="x"), ["hi"])) == ["hi x!"]


def test_a_partial_whose_mapped_input_is_bound_by_keyword_is_a_type_error() -> None:
    bad = functools.partial(greet, greeting="hi")  # mapped items would go to greeting again
    with pytest.raises(TypeError, match="greeting"):
        loom.map(bad, ["x"])
    with pytest.raises(TypeError, match="positional"):
        loom.map(double, [1], [2])
    with pytest.raises(TypeError, match="task"):
        loom.map(lambda x: x, [1])  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="concurrency"):
        loom.map(double, [1], concurrency=-1)


def test_stopping_early_cancels_the_calls_still_running() -> None:
    finished: list[int] = []

    @env.task
    async def maybe_slow(x: int) -> int:
        if x:
            await asyncio.sleep(5)
        finished.append(x)
        return x

    @env.task
    async def main() -> int:
        stream = loom.map.aio(maybe_slow, range(4))
        async for r in stream:
            await stream.aclose()
            return r  # type: ignore[return-value]
        return -1

    t0 = time.monotonic()
    assert loom.run(main).outputs() == 0
    assert time.monotonic() - t0 < 3
    assert finished == [0]


def test_map_is_exported_and_cheap_to_import() -> None:
    assert "map" in loom.__all__
    assert repr(loom.map) == "loom.map"
