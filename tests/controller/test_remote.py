"""The remote controller's pure parts: task specs, child names, portable errors."""

from __future__ import annotations

import asyncio

import pytest

import loom
from loom import wire
from loom._context import TaskContext
from loom._controller._remote import RemoteRun, error_info, rebuild_error, task_spec
from loom._settings import Settings
from loom.errors import RemoteTaskError, RuntimeUserError
from loom.remote import Client

env = loom.TaskEnvironment(
    "remote-spec",
    resources=loom.Resources(cpu="500m", memory="1Gi"),
    env_vars={"A": "1"},
    secrets=[loom.Secret("tok", as_env_var="TOKEN")],
)


@env.task(cache="auto", retries=loom.RetryStrategy(2, backoff=0.5), timeout=30)
async def spec_me(x: int, y: str = "a") -> str:
    return y * x


class Custom(Exception):
    pass


def test_task_spec_describes_where_and_how_to_run() -> None:
    spec = task_spec(spec_me, {"x": 2, "y": "b"})
    assert (spec.module, spec.attr, spec.name) == (__name__, "spec_me", "remote-spec.spec_me")
    assert spec.resources == wire.ResourceSpec(cpu=0.5, memory_bytes=2**30)
    assert spec.env_vars == {"A": "1"}
    assert spec.secrets == [wire.SecretRef(key="tok", env_var="TOKEN")]
    assert spec.retries.count == 2 and spec.retries.backoff_s == 0.5
    assert spec.timeout_s == 30
    assert spec.cache is not None
    assert task_spec(spec_me, {"x": 2, "y": "b"}).cache == spec.cache
    other = task_spec(spec_me, {"x": 3, "y": "b"}).cache
    assert other is not None and other.key != spec.cache.key
    assert task_spec(spec_me.override(cache="disable"), {"x": 1}).cache is None


def test_errors_survive_the_trip_with_their_type() -> None:
    try:
        raise Custom("quota exceeded")
    except Custom as e:
        info = error_info(e)
    assert info.type == f"{__name__}.Custom" and info.message == "quota exceeded"
    assert "raise Custom" in info.traceback
    rebuilt = rebuild_error(info, "child-1")
    assert isinstance(rebuilt, Custom) and str(rebuilt) == "quota exceeded"
    assert type(rebuilt).__name__ == "Custom" and isinstance(rebuilt, RuntimeUserError)
    assert rebuilt.code == "Custom"
    assert any("remote traceback of action child-1" in n for n in rebuilt.__notes__)


def test_unrebuildable_errors_keep_type_name_and_message() -> None:
    info = wire.ErrorInfo(type="gone.Missing", message="boom", traceback="tb", pickled="!!")
    rebuilt = rebuild_error(info, "a1")
    assert isinstance(rebuilt, RemoteTaskError)
    assert str(rebuilt) == "gone.Missing: boom" and rebuilt.type_name == "gone.Missing"
    assert isinstance(rebuilt, RuntimeUserError) and rebuilt.code == "Missing"


def _remote_host() -> RemoteRun:
    spec = wire.ActionSpec(
        run="r1", action="a0", attempt=1, project="default", domain="development",
        bundle="d", task=task_spec(spec_me, {"x": 1}), inputs={"x": 1}, env_vars={},
    )  # fmt: skip
    return RemoteRun(Client("http://127.0.0.1:9", None), spec, Settings.load())


def test_child_names_are_deterministic_by_parent_task_inputs_and_order() -> None:
    def names() -> list[str]:
        host = _remote_host()
        parent = TaskContext(host, "a0", spec_me, (), None)
        bodies = []
        for x in (1, 1, 2):
            make = host._prepare(spec_me, parent, (x,), {})
            coro = make()
            bodies.append(coro.cr_frame.f_locals["body"].name)
            coro.close()
        return bodies

    first, second = names(), names()
    assert first == second  # a restarted parent asks for the same children
    assert len(set(first)) == 3  # same inputs twice are still two calls
    assert all(n.startswith("spec_me-") for n in first)


def test_child_inputs_are_validated_at_call_time() -> None:
    host = _remote_host()
    parent = TaskContext(host, "a0", spec_me, (), None)
    with pytest.raises(loom.errors.InputError, match="expects int"):
        host._prepare(spec_me, parent, ("x",), {})
    asyncio.run(host.client.aclose())
