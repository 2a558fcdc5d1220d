"""Flyte 2's task and environment options, in local runs: programs written the way Flyte 2
users write them (``import loom as flyte``), each checking what the option does in loom."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from pathlib import Path

import pytest

import loom as flyte
import loom.errors
from loom.errors import TaskDefinitionError

# -- retries paced by Backoff ------------------------------------------------------------------

backoff_env = flyte.TaskEnvironment(name="backoff_demo", resources=flyte.Resources(cpu=1))
_starts: list[float] = []


@backoff_env.task(
    retries=flyte.RetryStrategy(
        count=3,
        backoff=flyte.Backoff(base=timedelta(seconds=0.2), factor=2.0, cap=timedelta(seconds=0.5)),
    ),
)
async def flaky() -> str:
    _starts.append(time.monotonic())
    if len(_starts) < 4:
        raise RuntimeError(f"transient failure on attempt {len(_starts)}")
    return f"ok after {len(_starts)} attempts"


def test_backoff_paces_retries_min_base_times_factor_power_n_and_cap() -> None:
    _starts.clear()
    assert flyte.run(flaky).outputs() == "ok after 4 attempts"
    gaps = [b - a for a, b in zip(_starts, _starts[1:], strict=False)]
    # 0.2, 0.4, then 0.8 capped at 0.5
    for gap, expected in zip(gaps, (0.2, 0.4, 0.5), strict=True):
        assert expected <= gap < expected + 0.25, gaps


def test_backoff_numbers_are_flytes() -> None:
    b = flyte.Backoff(base=timedelta(seconds=10), factor=2.0, cap=timedelta(minutes=5))
    assert [b.compute_delay(n).total_seconds() for n in range(6)] == [10, 20, 40, 80, 160, 300]
    constant = flyte.Backoff(base=timedelta(seconds=3))  # factor 1: the same wait every time
    assert flyte.RetryStrategy(5, backoff=constant).delay(5) == 3.0
    strategy = flyte.RetryStrategy(4, backoff=b)
    assert [strategy.delay(n) for n in (1, 2, 6)] == [10.0, 20.0, 300.0]
    assert flyte.RetryStrategy(2, backoff=None).delay(1) == 0.0  # Flyte's default: at once
    # loom's own fields keep working
    assert flyte.RetryStrategy(3, backoff=0.5, backoff_factor=3, max_backoff=2).delay(2) == 1.5


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: flyte.Backoff(base=timedelta(seconds=-1)), "Backoff base must not be negative"),
        (lambda: flyte.Backoff(base=1, factor=0.5), "Backoff factor must be a number from 1"),
        (lambda: flyte.Backoff(base=1, factor=2, cap=-1), "Backoff cap must not be negative"),
        (lambda: flyte.RetryStrategy(1.5), "retries must be a whole number"),
        (lambda: flyte.Timeout(max_runtime=-1), "max_runtime must not be negative"),
        (lambda: flyte.Timeout(deadline=timedelta(seconds=-1)), "deadline must not be negative"),
    ],
)
def test_bad_time_policies_are_clear_errors(factory, message: str) -> None:
    with pytest.raises(TaskDefinitionError, match=message):
        factory()


# -- Timeout: every bound optional; each enforced --------------------------------------------

timeouts = flyte.TaskEnvironment(name="timeouts")
_sleeper_attempts: list[int] = []


@timeouts.task(retries=5, timeout=flyte.Timeout(deadline=timedelta(seconds=0.6)))
async def deadline_sleeper() -> str:
    _sleeper_attempts.append(flyte.ctx().attempt)
    await asyncio.sleep(0.25)
    raise RuntimeError("keeps failing")


@timeouts.task(timeout=flyte.Timeout(deadline=0.3))
def sync_deadline_sleeper() -> str:
    time.sleep(3)
    return "unexpected"


@timeouts.task(retries=1, timeout=flyte.Timeout(max_runtime=timedelta(seconds=0.2)))
async def runtime_sleeper() -> str:
    await asyncio.sleep(5)
    return "unexpected"


@timeouts.task(
    timeout=flyte.Timeout(
        max_runtime=timedelta(minutes=10),
        max_queued_time=timedelta(minutes=5),
        deadline=timedelta(minutes=30),
    )
)
async def bounded_work() -> str:
    await asyncio.sleep(0.05)
    return "done"


@timeouts.task
async def timeouts_main() -> list[str]:
    seen = []
    for task in (deadline_sleeper, sync_deadline_sleeper, runtime_sleeper):
        started = time.monotonic()
        try:
            await task.aio()
        except flyte.errors.TaskTimeoutError as e:
            seen.append(f"{e.code} after {time.monotonic() - started:.1f}")
    seen.append(await bounded_work())
    return seen


def test_timeout_bounds_are_enforced_locally() -> None:
    _sleeper_attempts.clear()
    seen = flyte.run(timeouts_main).outputs()
    assert seen[0] in ("DeadlineExceededError after 0.6", "DeadlineExceededError after 0.7")
    # 0.25 s, 0.1 s backoff, 0.25 s, then the deadline falls in the next backoff
    assert _sleeper_attempts == [1, 2], "the deadline ends the action whatever retries remain"
    assert seen[1] == "DeadlineExceededError after 0.3"
    assert seen[2] in ("MaxRuntimeExceededError after 0.4", "MaxRuntimeExceededError after 0.5")
    assert seen[3] == "done"


def test_timeout_fields_are_all_optional_and_zero_means_unbounded() -> None:
    assert flyte.Timeout().max_runtime is None
    env = flyte.TaskEnvironment("optional_timeouts")

    @env.task(timeout=flyte.Timeout(max_runtime=0, deadline=None))
    async def unbounded() -> int:
        return 1

    @env.task(timeout=timedelta(seconds=30))
    async def bare() -> int:
        return 1

    assert unbounded.timeout is None
    assert bare.timeout == flyte.Timeout(30.0)
    assert issubclass(loom.errors.DeadlineExceededError, loom.errors.TaskTimeoutError)
    assert issubclass(loom.errors.MaxQueuedTimeExceededError, TimeoutError)


queue_env = flyte.TaskEnvironment(name="queued")


@queue_env.task(cache=flyte.Cache("override", version_override="v1", serialize=True))
async def held(x: int) -> int:
    await asyncio.sleep(1.0)
    return x


@queue_env.task
async def queue_main() -> list[str]:
    impatient = held.override(timeout=flyte.Timeout(max_queued_time=timedelta(seconds=0.2)))

    async def second() -> str:
        await asyncio.sleep(0.1)  # the first call holds the serialized cache's computation
        started = time.monotonic()
        try:
            return str(await impatient(7))
        except flyte.errors.MaxQueuedTimeExceededError as e:
            assert time.monotonic() - started < 0.5, "it waited for the holder to finish"
            return f"{e.code}: {e}"

    first, waited = await asyncio.gather(held(7), second())
    return [str(first), waited]


def test_max_queued_time_fails_an_action_that_waited_too_long_to_start() -> None:
    first, waited = flyte.with_runcontext(overwrite_cache=True).run(queue_main).outputs()
    assert first == "7"
    assert waited.startswith("MaxQueuedTimeExceededError: task queued.held"), waited
    assert "longer than its max_queued_time of 0.2 s" in waited


# -- clone_with and Flyte's other environment keywords ----------------------------------------

reusable_env = flyte.TaskEnvironment(
    name="reusable",
    resources=flyte.Resources(memory="500Mi", cpu=1),
    reusable=flyte.ReusePolicy(replicas=(1, 4), idle_ttl=300),
    image=flyte.Image.from_debian_base().with_pip_packages("unionai-reuse"),
    env_vars={"WHERE": "workers"},
    include=("report_template.html",),
)


@reusable_env.task
async def square(x: int) -> int:
    return x**2


cloned_env = reusable_env.clone_with(name="nonreusable", reusable=None, depends_on=[reusable_env])


@cloned_env.task
async def clone_main(n: int) -> list[int]:
    return list(await asyncio.gather(*(square(x) for x in range(n))))


def test_clone_with_makes_a_new_environment_and_leaves_the_original() -> None:
    assert flyte.run(clone_main, n=4).outputs() == [0, 1, 4, 9]
    assert cloned_env.name == "nonreusable" and cloned_env.reusable is None
    assert cloned_env.depends_on == (reusable_env,)
    assert cloned_env.resources == reusable_env.resources
    assert cloned_env.env_vars == {"WHERE": "workers"}
    assert cloned_env.image == reusable_env.image
    assert reusable_env.reusable is not None, "the original is unchanged"
    assert set(reusable_env.tasks) == {"square"} and set(cloned_env.tasks) == {"clone_main"}
    assert clone_main.name == "nonreusable.clone_main" and clone_main.reusable is None
    # None keeps a value, except for reusable; cache and the rest go by keyword
    cached = reusable_env.clone_with("cached", cache="auto", env_vars=None)
    assert cached.reusable == reusable_env.reusable and cached.env_vars == {"WHERE": "workers"}
    assert cached.cache.behavior == "auto"  # type: ignore[union-attr]
    assert cached.include_paths == (str(Path(__file__).parent / "report_template.html"),)
    with pytest.raises(TypeError, match="clone_with\\(\\) got unexpected keyword arguments: bogus"):
        reusable_env.clone_with("x", bogus=1)


def test_flytes_other_environment_keywords_are_accepted() -> None:
    env = flyte.TaskEnvironment(
        name="k8s_things",
        interruptible=True,
        service_account="runner",
        pod_template="gpu-pod",
        queue="critical",
        description="what it is",
    )
    assert (env.interruptible, env.service_account, env.queue) == (True, "runner", "critical")
    env.add_dependency(reusable_env, reusable_env)
    assert env.depends_on == (reusable_env,)
    with pytest.raises(TaskDefinitionError, match="include takes a list of paths"):
        flyte.TaskEnvironment(name="bad_include", include="one.html")  # type: ignore[arg-type]


def test_task_takes_flytes_keywords() -> None:
    env = flyte.TaskEnvironment(name="hello_world")

    @env.task(entrypoint=True, queue="q", interruptible=False, links=(), triggers=())
    async def say_hello(data: str = "x") -> str:
        return f"Hello {data}"

    assert say_hello.entrypoint is True
    assert say_hello.options["queue"] == "q"
    assert flyte.run(say_hello, data="loom").outputs() == "Hello loom"
    assert say_hello.override(entrypoint=False, pod_template="p").entrypoint is False
    with pytest.raises(TypeError, match="unexpected keyword arguments: colour"):
        env.task(colour="red")


# -- max_inline_io_bytes ---------------------------------------------------------------------

inline_env = flyte.TaskEnvironment(name="large_inline_io")


@inline_env.task(max_inline_io_bytes=100 * 1024)
async def printer_task(x: str) -> str:
    return x


@inline_env.task(max_inline_io_bytes=1024)
async def inflate(n: int) -> str:
    return "A" * n


@inline_env.task
async def large_inline_io() -> list[str]:
    seen = [await printer_task("Hello, world!")]
    try:
        await printer_task("A" * 10**6)
    except flyte.errors.InlineIOMaxBytesBreached as e:
        seen.append(f"inputs: {e.code}: {e}")
    try:
        await inflate(10_000)
    except flyte.errors.InlineIOMaxBytesBreached as e:
        seen.append(f"output: {e}")
    return seen


def test_max_inline_io_bytes_bounds_inputs_and_outputs() -> None:
    small, inputs, output = flyte.run(large_inline_io).outputs()
    assert small == "Hello, world!"
    assert inputs.startswith("inputs: InlineIOMaxBytesBreached: the inputs of task large_inline_io")
    assert "over its max_inline_io_bytes of 102400" in inputs
    assert output.startswith("output: the output of task large_inline_io.inflate take 10002")
    with pytest.raises(TaskDefinitionError, match="max_inline_io_bytes must be a positive"):
        inline_env.task(max_inline_io_bytes=0)(printer_task.func)


# -- Resources, Secret(group=), Image.from_uv_script ------------------------------------------


def test_resources_take_flytes_keywords() -> None:
    r = flyte.Resources(cpu="1", memory="1Gi", shm="auto", disk="1Gi", gpu="A100 80G:8")
    assert r.shm == "auto"
    assert flyte.Resources(shm="16Gi").shm == "16Gi"
    with pytest.raises(TaskDefinitionError, match="shm must be a quantity"):
        flyte.Resources(shm="lots")


def test_secret_group_names_the_variable_as_flyte_does(monkeypatch: pytest.MonkeyPatch) -> None:
    assert flyte.Secret(key="api-key", group="openai").env_var == "OPENAI_API_KEY"
    assert flyte.Secret("db-password").env_var == "DB_PASSWORD"
    assert flyte.Secret(key="k", group="g", as_env_var="MINE").env_var == "MINE"
    mounted = flyte.Secret(group="grp", key="V2_SECRET_TEST", mount=Path("/etc/flyte/secrets"))
    assert mounted.env_var is None and mounted.mount == "/etc/flyte/secrets"
    monkeypatch.setenv("LOOM_SECRET_API_KEY", "sk-123")
    env = flyte.TaskEnvironment("secret-fun", secrets=flyte.Secret(key="api-key", group="openai"))

    @env.task
    def read() -> str:
        import os

        return os.environ["OPENAI_API_KEY"]

    assert flyte.run(read).outputs() == "sk-123"


def test_image_from_uv_script_records_the_script_header(tmp_path: Path) -> None:
    script = tmp_path / "fractal.py"
    script.write_text(
        '# /// script\n# requires-python = "==3.12"\n# dependencies = [\n'
        '#    "mashumaro",\n# ]\n# ///\nimport flyte\n'
    )
    image = flyte.Image.from_uv_script(script, registry="ghcr.io/flyteorg", name="flyte")
    assert image.pip_packages == ("mashumaro",) and image.python_version == "3.12"
    assert (image.name, image.registry, image.script) == ("flyte", "ghcr.io/flyteorg", str(script))
    plain = tmp_path / "plain.py"
    plain.write_text("print(1)\n")
    assert flyte.Image.from_uv_script(plain, name="p").pip_packages == ()
    with pytest.raises(TaskDefinitionError, match="cannot read"):
        flyte.Image.from_uv_script(tmp_path / "missing.py", name="m")
    assert flyte.Image.from_debian_base(python_version=(3, 12)).python_version == "3.12"


# -- loom.logger and Flyte's other init functions ---------------------------------------------

log_env = flyte.TaskEnvironment(name="user_logging_example")


@log_env.task
def process(name: str, iterations: int) -> str:
    flyte.logger.info("Starting process for name=%s, iterations=%d", name, iterations)
    results = []
    for i in range(iterations):
        flyte.logger.debug("Iteration %d of %d", i + 1, iterations)
        results.append(f"{name}_{i}")
    flyte.logger.info("Finished process, produced %d results", len(results))
    return ", ".join(results)


def test_logger_writes_info_to_the_tasks_log(capsys: pytest.CaptureFixture[str]) -> None:
    run = flyte.run(process, name="hello", iterations=2)
    assert run.outputs() == "hello_0, hello_1"
    err = capsys.readouterr().err
    assert f"[{run.name}][a0] INFO Starting process for name=hello, iterations=2" in err
    assert "Finished process, produced 2 results" in err
    assert "Iteration" not in err  # DEBUG is off by default, as in Flyte
    assert flyte.logger is logging.getLogger("loom.user")


def test_flytes_init_variants_map_to_init(monkeypatch: pytest.MonkeyPatch) -> None:
    flyte.init_from_api_key(api_key="k-1", project="p1", domain="staging")
    from loom._run import current_settings

    assert (current_settings().api_key, current_settings().project) == ("k-1", "p1")
    configured = flyte.init_passthrough("http://127.0.0.1:9", project="p2")
    assert configured == {
        "endpoint": "http://127.0.0.1:9",
        "project": "p2",
        "domain": "development",
    }
    assert flyte.init_in_cluster(project="p3")["project"] == "p3"
    asyncio.run(flyte.init_passthrough.aio(project="p4"))  # type: ignore[attr-defined]
    assert current_settings().project == "p4"
    flyte.init()  # back to local defaults
