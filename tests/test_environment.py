"""TaskEnvironment, the @env.task decorator, override() and the value objects."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

import loom
from loom.errors import TaskDefinitionError

env = loom.TaskEnvironment(
    "authoring",
    resources=loom.Resources(cpu=2, memory="4Gi", gpu=1, disk="10Gi"),
    image=loom.Image.from_debian_base().with_pip_packages("pandas").with_apt_packages("ffmpeg"),
    cache="auto",
    secrets=[loom.Secret("db-password", as_env_var="DB_PASSWORD")],
    env_vars={"MODE": "test"},
    reusable=loom.ReusePolicy(replicas=(1, 2), idle_ttl=60, concurrency=10, scaledown_ttl=60),
    description="tasks used by the authoring tests",
)


@env.task
def bare(x: int) -> int:
    return x + 1


@env.task(cache="disable", retries=3, timeout=5, report=True, short_name="with-args")
async def with_args(x: int) -> int:
    return x * 2


def test_bare_and_parameterised_decorators_make_tasks() -> None:
    assert isinstance(bare, loom.TaskTemplate)
    assert isinstance(with_args, loom.TaskTemplate)
    assert bare.name == "authoring.bare" and not bare.is_async
    assert with_args.is_async and with_args.short_name == "with-args"
    assert env.tasks == {"bare": bare, "with-args": with_args}


def test_calling_a_task_outside_a_run_just_calls_the_function() -> None:
    assert bare(1) == 2
    assert asyncio.run(with_args(4)) == 8
    assert asyncio.run(bare.aio(1)) == 2  # aio turns a sync task into an awaitable
    assert asyncio.run(with_args.aio(1)) == 2
    assert bare.__doc__ is None and bare.__name__ == "bare"


def test_environment_settings_flow_into_tasks() -> None:
    assert bare.cache.behavior == "auto"  # from the environment
    assert with_args.cache.behavior == "disable"  # the task's own wins
    assert bare.env_vars == {"MODE": "test"}
    assert bare.secrets == (loom.Secret("db-password", as_env_var="DB_PASSWORD"),)
    assert bare.resources == loom.Resources(cpu=2, memory="4Gi", gpu=1, disk="10Gi")
    assert with_args.retries.count == 3
    assert with_args.timeout == loom.Timeout(5.0)


def test_override_can_reset_values_to_zero_and_none() -> None:
    """Flyte 2 cannot set retries back to 0 with override(); loom must."""
    plain = with_args.override(retries=0, timeout=None, cache="disable", report=False)
    assert plain.retries.count == 0
    assert plain.timeout is None
    assert plain.report is False
    assert with_args.retries.count == 3, "override must not mutate the original"
    assert with_args.override(retries=None).retries.count == 0
    assert with_args.override(env_vars=None).env_vars == {}
    assert with_args.override(resources=None).resources is None
    unchanged = with_args.override()
    assert (unchanged.retries, unchanged.timeout, unchanged.report) == (
        with_args.retries,
        with_args.timeout,
        with_args.report,
    )


def test_override_takes_new_values() -> None:
    t = bare.override(
        retries=loom.RetryStrategy(2, backoff=0.5),
        timeout=timedelta(seconds=3),
        resources=loom.Resources(cpu="500m"),
        env_vars={"A": "1"},
    )
    assert t.retries.count == 2 and t.retries.delay(2) == 1.0
    assert t.timeout == loom.Timeout(3.0)
    assert t.resources == loom.Resources(cpu="500m")
    assert t.env_vars == {"A": "1"}
    assert t(1) == 2


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: loom.TaskEnvironment("bad name!"), "TaskEnvironment name"),
        (lambda: loom.TaskEnvironment("e", env_vars={"A": 1}), "env_vars must map str to str"),
        (lambda: loom.Resources(memory="lots"), "memory must look like"),
        (lambda: loom.Resources(cpu=0), "cpu must be positive"),
        (lambda: loom.Resources(gpu="many"), "gpu must be a count or a device"),
        (lambda: loom.Cache("override"), "needs version_override"),
        (lambda: loom.Cache("sometimes"), "Cache behavior must be"),
        (lambda: loom.ReusePolicy(concurrency=0), "concurrency must be at least 1"),
        (lambda: loom.Secret(""), "must not be empty"),
        (lambda: loom.Secret("k", as_env_var="1BAD"), "not a valid variable name"),
        (lambda: loom.RetryStrategy(-1), "must not be negative"),
    ],
)
def test_bad_declarations_are_rejected_clearly(factory, message: str) -> None:
    with pytest.raises(TaskDefinitionError, match=message):
        factory()


def test_task_signature_restrictions() -> None:
    e = loom.TaskEnvironment("sig")

    @e.task
    async def star(*args: int) -> int:
        return 0

    @e.task
    async def main() -> int:
        return await star(1)

    with pytest.raises(TaskDefinitionError, match="named parameters"):
        loom.run(main)


def test_image_is_an_immutable_declarative_spec(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text("c==1\n")
    base = loom.Image.from_debian_base(python_version="3.12")
    image = (
        base.with_pip_packages("a", "b")
        .with_apt_packages("c")
        .with_requirements(tmp_path / "r.txt")
    )
    assert base.pip_packages == ()
    assert image.pip_packages == ("a", "b")
    assert image.apt_packages == ("c",)
    assert image.requirements == (str(tmp_path / "r.txt"),)
    assert image.python_version == "3.12"


def test_secret_default_env_var_name() -> None:
    assert loom.Secret("openai-api-key").env_var == "OPENAI_API_KEY"
    assert loom.Secret("k", as_env_var="X").env_var == "X"
    assert loom.Secret("k", mount="/etc/secrets").env_var is None
