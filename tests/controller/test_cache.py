"""The local cache: persisted across processes, keyed by task, version and inputs."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
from pathlib import Path
from typing import NamedTuple

import pytest

import loom
from tests.conftest import run_cli, write_module

env = loom.TaskEnvironment("caching")
calls: list[str] = []


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Pair(NamedTuple):
    left: str
    right: str


@env.task(cache="auto")
async def cached_square(x: int) -> int:
    calls.append(f"square {x}")
    return x * x


@env.task(cache=loom.Cache("override", version_override="v1"))
async def versioned(x: int) -> Pair:
    calls.append(f"versioned {x}")
    return Pair(str(x), str(-x))


@env.task(cache=loom.Cache("auto", ignored_inputs=("verbose",)))
async def with_ignored(p: Point, verbose: bool = False) -> Point:
    calls.append(f"ignored {p}")
    return Point(p.y, p.x)


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


def test_cache_hits_on_the_same_inputs_and_misses_on_others() -> None:
    assert loom.run(cached_square, x=3).outputs() == 9
    run = loom.run(cached_square, x=3)
    assert run.outputs() == 9
    assert run.actions()[0].cache == "hit"
    assert loom.run(cached_square, x=4).outputs() == 16
    assert calls == ["square 3", "square 4"]


def test_override_behaviour_hits_and_keeps_named_tuples() -> None:
    """Flyte 2 local mode never hits with Cache(behavior='override')."""
    first = loom.run(versioned, x=2).outputs()
    second = loom.run(versioned, x=2).outputs()
    assert first == second == Pair("2", "-2")
    assert type(second) is Pair
    assert calls == ["versioned 2"]
    bumped = versioned.override(cache=loom.Cache("override", version_override="v2"))
    loom.run(bumped, x=2)
    assert calls == ["versioned 2", "versioned 2"]


def test_ignored_inputs_do_not_change_the_key() -> None:
    assert loom.run(with_ignored, p=Point(1, 2)).outputs() == Point(2, 1)
    assert loom.run(with_ignored, p=Point(1, 2), verbose=True).outputs() == Point(2, 1)
    assert len(calls) == 1


def test_overwrite_cache_recomputes_and_replaces() -> None:
    loom.run(cached_square, x=5)
    run = loom.with_runcontext(overwrite_cache=True).run(cached_square, x=5)
    assert run.actions()[0].cache == "overwritten"
    assert calls == ["square 5", "square 5"]
    loom.run(cached_square, x=5)
    assert len(calls) == 2


def test_disabled_cache_always_runs() -> None:
    uncached = cached_square.override(cache="disable")
    loom.run(uncached, x=1)
    loom.run(uncached, x=1)
    assert calls == ["square 1", "square 1"]


def test_cache_only_stores_successes() -> None:
    attempts: list[int] = []

    @env.task(cache="auto")
    async def fails_once(x: int) -> int:
        attempts.append(x)
        if len(attempts) == 1:
            raise RuntimeError("first call fails")
        return x

    with pytest.raises(RuntimeError):
        loom.run(fails_once, x=1)
    assert loom.run(fails_once, x=1).outputs() == 1
    assert loom.run(fails_once, x=1).outputs() == 1
    assert attempts == [1, 1]


def test_serialize_runs_identical_concurrent_calls_once() -> None:
    running = threading.Lock()
    overlaps: list[int] = []

    @env.task(cache=loom.Cache("auto", serialize=True))
    def expensive(x: int) -> int:
        if not running.acquire(blocking=False):
            overlaps.append(x)
        else:
            import time

            time.sleep(0.2)
            running.release()
        calls.append(f"expensive {x}")
        return x + 1

    @env.task
    async def fan() -> list[int]:
        return list(await asyncio.gather(*(expensive.aio(7) for _ in range(6))))

    assert loom.run(fan).outputs() == [8] * 6
    assert calls == ["expensive 7"]
    assert overlaps == []


def test_without_serialize_concurrent_calls_all_run() -> None:
    @env.task(cache="auto")
    async def quick(x: int) -> int:
        calls.append("quick")
        await asyncio.sleep(0.05)
        return x

    @env.task
    async def fan() -> list[int]:
        return list(await asyncio.gather(*(quick(1) for _ in range(3))))

    loom.run(fan)
    assert calls == ["quick"] * 3


def test_file_outputs_are_copied_into_the_cache(tmp_path: Path) -> None:
    @env.task(cache="auto")
    def make_file(text: str) -> loom.io.File:
        path = tmp_path / "out.txt"
        path.write_text(text)
        return loom.io.File.from_local_sync(path)

    first = loom.run(make_file, text="hello").outputs()
    (tmp_path / "out.txt").unlink()
    second = loom.run(make_file, text="hello").outputs()
    assert second.path != first.path
    assert Path(second.download_sync()).read_text() == "hello"


def test_cache_is_shared_between_processes(tmp_path: Path, loom_home: Path) -> None:
    counter = tmp_path / "counter"
    module = write_module(
        tmp_path / "cached_flow.py",
        f"""
        import loom

        env = loom.TaskEnvironment("xproc")

        @env.task(cache="auto")
        async def slow_add(a: int, b: int) -> int:
            with open({str(counter)!r}, "a") as f:
                f.write("x")
            return a + b
        """,
    )
    for _ in range(2):
        result = run_cli(
            "run",
            str(module),
            "slow_add",
            "--a",
            "2",
            "--b",
            "3",
            env={"LOOM_HOME": str(loom_home)},
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "5"
    assert counter.read_text() == "x"
    assert (loom_home / "cache" / "cache.db").exists()


def test_editing_the_function_invalidates_auto_cache(tmp_path: Path, loom_home: Path) -> None:
    source = """
    import loom

    env = loom.TaskEnvironment("edits")

    @env.task(cache="auto")
    async def value() -> int:
        return {n}
    """
    module = tmp_path / "edited.py"
    outputs = []
    for n in (1, 1, 2):
        write_module(module, source.format(n=n))
        result = run_cli("run", str(module), "value", env={"LOOM_HOME": str(loom_home)})
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout.strip())
    assert outputs == ["1", "1", "2"]


def test_unreadable_cache_dir_gives_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    if sys.platform != "linux":
        pytest.skip("linux only")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("LOOM_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(loom.errors.ConfigError, match="LOOM_CACHE_DIR"):
        loom.run(cached_square, x=1)
