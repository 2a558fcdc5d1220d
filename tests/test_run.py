"""Starting runs: loom.run, with_runcontext, run handles, names, ctx(), groups, traces, reports."""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import NamedTuple

import pytest

import loom
from loom.errors import ConfigError, LoomError

env = loom.TaskEnvironment("runs")


class Stats(NamedTuple):
    mean: float
    count: int


@env.task
async def stats(values: list[float]) -> Stats:
    return Stats(sum(values) / len(values), len(values))


@env.task
async def whoami() -> dict[str, str]:
    c = loom.ctx()
    assert c is not None
    return {
        "run": c.run_name,
        "action": c.action,
        "attempt": str(c.attempt),
        "project": c.project,
        "domain": c.domain,
        "task": c.task_name,
        "mode": c.mode,
    }


@env.task
async def many_whoami(n: int) -> list[dict[str, str]]:
    return list(await asyncio.gather(*(whoami() for _ in range(n))))


def test_run_returns_a_handle_with_outputs() -> None:
    run = loom.run(stats, values=[1.0, 2.0, 3.0])
    assert run.phase == "SUCCEEDED"
    assert run.outputs() == Stats(2.0, 3)
    assert run.wait() is run
    assert run.url is None and run.mode == "local"
    assert run.duration is not None and run.duration >= 0


def test_named_tuple_outputs_stay_named_tuples() -> None:
    """Flyte 2 local mode hands back a plain tuple."""
    out = loom.run(stats, values=[4.0]).outputs()
    assert type(out) is Stats
    assert out.mean == 4.0 and out.count == 1


def test_ctx_identifies_run_action_and_attempt() -> None:
    run = loom.run(many_whoami, n=5)
    infos = run.outputs()
    assert {i["run"] for i in infos} == {run.name}
    assert len({i["action"] for i in infos}) == 5, "action names must be unique per call"
    assert {i["attempt"] for i in infos} == {"1"}
    assert infos[0]["project"] == "default" and infos[0]["domain"] == "development"
    assert infos[0]["task"] == "runs.whoami" and infos[0]["mode"] == "local"
    assert loom.ctx() is None  # nothing leaks out of the run


def test_run_names_are_unique_and_readable() -> None:
    names = {loom.run(whoami).name for _ in range(20)}
    assert len(names) == 20
    for name in names:
        adjective, animal, suffix = name.split("-")
        assert adjective.isalpha() and animal.isalpha() and len(suffix) == 6


def test_with_runcontext_options() -> None:
    run = loom.with_runcontext(mode="local", name="my-run", project="p1", domain="staging").run(
        whoami
    )
    assert run.name == "my-run"
    assert run.outputs()["run"] == "my-run"
    assert run.outputs()["project"] == "p1" and run.outputs()["domain"] == "staging"


def test_remote_mode_without_a_server_says_how_to_get_one() -> None:
    with pytest.raises(ConfigError, match="start one with `loom server start`"):
        loom.with_runcontext(mode="remote").run(whoami)
    with pytest.raises(ConfigError, match="run mode must be"):
        loom.with_runcontext(mode="cloud")  # type: ignore[arg-type]


def test_run_needs_a_task() -> None:
    with pytest.raises(LoomError, match="needs a task"):
        loom.run(lambda: 1)  # type: ignore[arg-type]


def test_groups_nest_and_are_recorded() -> None:
    @env.task
    async def leaf(i: int) -> int:
        return i

    @env.task
    async def grouped() -> int:
        with loom.group("outer"):
            a = await leaf(1)
            with loom.group("inner"):
                b = await leaf(2)
        return a + b + await leaf(3)

    run = loom.run(grouped)
    groups = {a.name: a.group for a in run.actions() if a.task == "runs.leaf"}
    assert sorted(groups.values()) == [(), ("outer",), ("outer", "inner")]


def test_sync_root_task_can_call_sync_and_async_children() -> None:
    @env.task
    def double(x: int) -> int:
        return 2 * x

    @env.task
    async def triple(x: int) -> int:
        return 3 * x

    @env.task
    def sync_root(x: int) -> int:
        return double(x) + asyncio.run(triple(x))

    run = loom.run(sync_root, x=2)
    assert run.outputs() == 10
    assert sorted(a.task for a in run.actions()) == ["runs.double", "runs.sync_root", "runs.triple"]


def test_run_works_inside_a_running_event_loop() -> None:
    async def notebook_cell() -> Stats:
        return loom.run(stats, values=[2.0]).outputs()

    assert asyncio.run(notebook_cell()) == Stats(2.0, 1)


def test_run_aio() -> None:
    async def main() -> Stats:
        run = await loom.run.aio(stats, values=[3.0])
        return run.outputs()

    assert asyncio.run(main()) == Stats(3.0, 1)


def test_trace_records_helper_calls() -> None:
    @loom.trace
    async def fetch(x: int) -> int:
        return x + 1

    @loom.trace
    def parse(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x

    @env.task
    async def traced() -> int:
        try:
            parse(-1)
        except ValueError:
            pass
        return parse(await fetch(1))

    run = loom.run(traced)
    assert run.outputs() == 2
    assert [(t.name.rsplit(".", 1)[-1], t.error) for t in run.traces()] == [
        ("parse", "ValueError: negative"),
        ("fetch", None),
        ("parse", None),
    ]
    assert asyncio.run(fetch(1)) == 2  # plain call outside a run


def test_reports_are_kept_on_the_action() -> None:
    @env.task(report=True)
    async def reporting() -> None:
        loom.report.log("<h1>Title</h1>")
        loom.report.log(f"<p>{loom.report.escape('<x>')}</p>")

    @env.task
    async def not_reporting() -> None:
        loom.report.log("nope")

    run = loom.run(reporting)
    assert run.actions()[0].report == "<h1>Title</h1>\n<p>&lt;x&gt;</p>"
    with pytest.raises(LoomError, match="report=True"):
        loom.run(not_reporting)


def test_local_runs_leave_nothing_in_tmp() -> None:
    secret_env = loom.TaskEnvironment("tmp-check", secrets=[loom.Secret("tok", mount="/s")])

    @secret_env.task
    def uses_secret() -> str:
        c = loom.ctx()
        assert c is not None
        return c.secrets.path("tok").read_text()

    @env.task
    async def fan(n: int) -> list[str]:
        return list(await asyncio.gather(*(uses_secret.aio() for _ in range(n))))

    before = set(os.listdir(tempfile.gettempdir()))
    os.environ["LOOM_SECRET_TOK"] = "s3cret"
    try:
        loom.init()
        assert loom.run(fan, n=3).outputs() == ["s3cret"] * 3
    finally:
        del os.environ["LOOM_SECRET_TOK"]
    assert set(os.listdir(tempfile.gettempdir())) - before == set()


def test_init_and_init_from_config(tmp_path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("project: from-file\ndomain: production\n")
    loom.init_from_config(config)
    assert loom.run(whoami).outputs()["project"] == "from-file"
    loom.init(project="explicit", config=config)
    out = loom.run(whoami).outputs()
    assert (out["project"], out["domain"]) == ("explicit", "production")
    with pytest.raises(ConfigError, match="does not exist"):
        loom.init_from_config(tmp_path / "missing.yaml")
    config.write_text("projekt: typo\n")
    with pytest.raises(ConfigError, match=r"unknown keys \['projekt'\]"):
        loom.init_from_config(config)


def test_runs_stay_local_unless_initialised_for_a_server(tmp_path, monkeypatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("endpoint: http://127.0.0.1:9\napi_key: k\n")
    monkeypatch.setenv("LOOM_CONFIG", str(config))
    assert loom.run(whoami).mode == "local"  # a config file alone does not send runs away
    loom.init_from_config()
    with pytest.raises(loom.errors.ServerUnreachableError, match="cannot reach the server"):
        loom.run(whoami)
