"""The remote controller's child calls against a real server: many calls, few requests.

The test process plays the root action's runtime: it hosts a ``RemoteRun`` for ``a0`` (whose
own process only waits) and runs parent tasks in it; the children run on the server's warm
workers. A client that counts its requests shows how the calls were batched.
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from loom import wire
from loom._context import TaskContext
from loom._controller._remote import RemoteRun, task_spec
from loom._settings import Settings
from loom.errors import NotFoundError
from loom.remote import Client, make_bundle
from tests.conftest import ServerProcess, write_module

pytestmark = pytest.mark.e2e

FLOW = """
import asyncio

import loom

warm = loom.TaskEnvironment(
    "batching-warm", reusable=loom.ReusePolicy(replicas=2, concurrency=25, idle_ttl=30)
)
plain = loom.TaskEnvironment("batching-plain")


@plain.task
async def hold() -> None:
    await asyncio.sleep(600)  # the real root action: the test process acts for it


@warm.task
async def square(i: int) -> int:
    return i * i


@warm.task
async def refuse(i: int) -> int:
    raise KeyError(f"no {i}")


@warm.task
def sync_double(i: int) -> int:
    return 2 * i


@plain.task
async def fan_out(n: int) -> list[int]:
    return list(await asyncio.gather(*(square(i) for i in range(n))))


@plain.task
async def waves(n: int) -> list[int]:
    first = asyncio.gather(*(square(i) for i in range(n)))
    await asyncio.sleep(0.05)  # a second batch while the first is still being waited for
    second = asyncio.gather(*(square(i) for i in range(n, 2 * n)))
    return list(await first) + list(await second)


@plain.task
async def some_fail(n: int) -> list[str]:
    calls = [square(i) if i % 2 else refuse(i) for i in range(n)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    return [type(r).__name__ if isinstance(r, BaseException) else str(r) for r in results]


@plain.task
def sync_parent(n: int) -> list[int]:
    return [sync_double(i) for i in range(n)]


@plain.task
async def chain(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await square(x) + 1
    return x
"""


class CountingClient(Client):
    """A client that counts its requests by method and what the path ends with, and the
    most long-polls it had out at once (as ``"most waits at once"``)."""

    def __init__(self, endpoint: str, api_key: str | None) -> None:
        super().__init__(endpoint, api_key)
        self.calls: collections.Counter[str] = collections.Counter()
        self._waits = 0

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        what = f"{method} {path.rsplit('/', 1)[-1]}"
        self.calls[what] += 1
        if what != "POST actions:wait":
            return await super()._request(method, path, **kwargs)
        self._waits += 1
        self.calls["most waits at once"] = max(self.calls["most waits at once"], self._waits)
        try:
            return await super()._request(method, path, **kwargs)
        finally:
            self._waits -= 1


@pytest.fixture
def flow(tmp_path: Path) -> Iterator[ModuleType]:
    source = tmp_path / "src"
    source.mkdir()
    write_module(source / "batchflow.py", FLOW)
    sys.path.insert(0, str(source))
    try:
        yield importlib.import_module("batchflow")
    finally:
        sys.path.remove(str(source))
        sys.modules.pop("batchflow", None)


@pytest.fixture
def root(server: ServerProcess, flow: ModuleType) -> Iterator[wire.ActionSpec]:
    """A run whose root action is up (and idle): the test acts for it."""

    async def start() -> wire.ActionSpec:
        async with Client(server.endpoint, server.api_key) as client:
            bundle = make_bundle(Path(flow.__file__).parent)
            await client.upload_bundle(bundle.digest, bundle.data)
            run = await client.create_run(
                wire.RunCreate(
                    bundle=bundle.digest,
                    root=wire.ActionCreate(name="a0", task=task_spec(flow.hold, {})),
                )
            )
            while (await client.get_action(run.name, "a0")).phase != "RUNNING":
                await asyncio.sleep(0.05)
            return await client.get_spec(run.name, "a0")

    spec = asyncio.run(start())
    try:
        yield spec
    finally:

        async def stop() -> None:
            async with Client(server.endpoint, server.api_key) as client:
                await client.abort_run(spec.run)

        asyncio.run(stop())


def _run(server: ServerProcess, spec: wire.ActionSpec, task: Any, **inputs: Any) -> Any:
    """Run ``task`` as the root action's body; its value and the client's request counts."""

    async def go() -> tuple[Any, collections.Counter[str]]:
        client = CountingClient(server.endpoint, server.api_key)
        try:
            host = RemoteRun(client, spec, Settings.load())
            return await host.execute(task, inputs), client.calls
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_a_gather_of_many_calls_makes_a_few_requests(
    server: ServerProcess, root: wire.ActionSpec, flow: ModuleType
) -> None:
    n = 120
    value, calls = _run(server, root, flow.fan_out, n=n)
    assert value == [i * i for i in range(n)]
    creates = calls["POST actions:batch"]
    waits = calls["POST actions:wait"]
    assert creates == 1, calls  # one turn of the loop, one request
    assert calls["POST actions"] == 0 and calls["GET outputs"] == 0, calls
    assert waits < n / 4, calls
    assert calls["most waits at once"] == 1, calls  # one long-poll for all the children
    assert sum(calls.values()) < n / 3, calls


def test_later_calls_are_waited_for_alongside_earlier_ones(
    server: ServerProcess, root: wire.ActionSpec, flow: ModuleType
) -> None:
    n = 40
    value, calls = _run(server, root, flow.waves, n=n)
    assert value == [i * i for i in range(2 * n)]
    assert calls["POST actions:batch"] == 2, calls
    assert calls["POST actions:wait"] < n, calls
    assert calls["most waits at once"] <= 3, calls  # the two batches' polls merge


def test_failures_keep_their_type_one_by_one(
    server: ServerProcess, root: wire.ActionSpec, flow: ModuleType
) -> None:
    value, calls = _run(server, root, flow.some_fail, n=10)
    assert value == ["KeyError" if i % 2 == 0 else str(i * i) for i in range(10)]
    assert calls["POST actions:batch"] == 1, calls


def test_sequential_and_sync_calls_still_work(
    server: ServerProcess, root: wire.ActionSpec, flow: ModuleType
) -> None:
    value, calls = _run(server, root, flow.chain, n=5)
    assert value == 677  # 0, 1, 2, 5, 26, 677
    assert calls["POST actions:batch"] == 5, calls  # one request per call: nothing to batch
    assert calls["POST actions"] == 0 and calls["GET outputs"] == 0, calls
    value, _ = _run(server, root, flow.sync_parent, n=4)
    assert value == [0, 2, 4, 6]


def test_a_child_that_cannot_be_created_fails_only_its_call(
    server: ServerProcess, root: wire.ActionSpec, flow: ModuleType
) -> None:
    async def go() -> tuple[list[Any], collections.Counter[str]]:
        client = CountingClient(server.endpoint, server.api_key)
        try:
            host = RemoteRun(client, root, Settings.load())
            host.loop = asyncio.get_running_loop()
            # one call in the batch names a parent that does not exist: the server refuses it
            ghost = TaskContext(host, "ghost", flow.square, (), None)
            calls = [
                host._prepare(flow.square, None, (3,), {})(),
                host._prepare(flow.square, ghost, (4,), {})(),
                host._prepare(flow.square, None, (5,), {})(),
            ]
            return list(await asyncio.gather(*calls, return_exceptions=True)), client.calls
        finally:
            await client.aclose()

    (three, ghost, five), calls = asyncio.run(go())
    assert (three, five) == (9, 25)
    assert isinstance(ghost, NotFoundError) and "'ghost'" in str(ghost)
    assert calls["POST actions:batch"] == 1, calls
