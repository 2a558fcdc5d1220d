"""The batch endpoints (``actions:batch``, ``actions:wait``, ``attempts:finish``) and the
batched work behind them (specs handed to warm workers, handles and exits recorded many at a
time), driven through the API with a fake executor."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import select

from loom import wire
from loom.executors import Capacity
from loom.server._models import Attempt
from tests.server.conftest import Api, error_info, task_spec

WARM = {"min_replicas": 1, "max_replicas": 1, "concurrency": 10}


@pytest.fixture
def capacity() -> Capacity:
    return Capacity(slots=8, cpu=2.0, memory_bytes=8 << 30)


def _create(api: Api, run: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = api.client.post(f"/api/v1/runs/{run}/actions:batch", json=bodies)
    assert r.status_code == 200, r.text
    answers: list[dict[str, Any]] = r.json()
    assert len(answers) == len(bodies)
    return answers


def _child(name: str, parent: str = "a0", **kwargs: Any) -> dict[str, Any]:
    return {"name": name, "parent": parent, "task": kwargs.pop("task", task_spec()), **kwargs}


def _wait(
    api: Api, run: str, names: list[str], timeout: float = 5, after: int | None = None
) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = _waited(api, run, names, timeout, after)["actions"]
    return actions


def _waited(
    api: Api, run: str, names: list[str], timeout: float = 5, after: int | None = None
) -> dict[str, Any]:
    body = {"names": names, "timeout": timeout, "after": after}
    r = api.client.post(f"/api/v1/runs/{run}/actions:wait", json=body)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    assert set(answer) == {"actions", "seq"}
    return answer


def _finish(api: Api, reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = api.client.post("/api/v1/attempts:finish", json=reports)
    assert r.status_code == 200, r.text
    statuses: list[dict[str, Any]] = r.json()
    assert len(statuses) == len(reports)
    return statuses


def _report(run: str, action: str, attempt: int = 1, value: Any = None, **result: Any) -> Any:
    return {
        "run": run,
        "action": action,
        "attempt": attempt,
        "result": result or {"outputs": {"value": value}},
    }


def _running_parent(api: Api, **kwargs: Any) -> str:
    name: str = api.create_run(**kwargs)["name"]
    api.job(name, "a0", 1)
    return name


# -- actions:batch --------------------------------------------------------------------------


def test_batch_create_answers_in_order_and_is_idempotent_per_name(api: Api) -> None:
    run = _running_parent(api)
    bodies = [_child(f"c{i}", inputs={"i": i}) for i in range(5)]
    first = _create(api, run, bodies)
    assert [a["action"]["name"] for a in first] == [f"c{i}" for i in range(5)]
    assert all(a["error"] is None and a["action"]["phase"] == "QUEUED" for a in first)
    # the same batch again (a retried request, a restarted parent): the same actions
    again = _create(api, run, [_child(f"c{i}", inputs={"i": 99}) for i in range(5)])
    assert [a["action"]["created_at"] for a in again] == [a["action"]["created_at"] for a in first]
    actions = api.client.get(f"/api/v1/runs/{run}/actions").json()
    assert [a["name"] for a in actions] == ["a0"] + [f"c{i}" for i in range(5)]
    spec = api.client.get(f"/api/v1/runs/{run}/actions/c3/spec").json()
    assert spec["inputs"] == {"i": 3}
    # the one-action endpoint agrees
    assert api.create_child(run, "c2")["created_at"] == first[2]["action"]["created_at"]
    # a name twice in one batch is one action
    twice = _create(api, run, [_child("d", inputs={"x": 1}), _child("d", inputs={"x": 2})])
    assert twice[0]["action"] == twice[1]["action"]
    assert api.client.get(f"/api/v1/runs/{run}").json()["actions"] == 7


def test_one_refused_item_leaves_the_others_alone(api: Api) -> None:
    run = _running_parent(api)
    big = {"blob": "x" * (wire.MAX_INLINE_BYTES + 1)}
    answers = _create(
        api,
        run,
        [
            _child("ok-1"),
            _child("orphan", parent="ghost"),
            _child("too-big", inputs=big),
            _child("no-parent", parent=None),
            _child("ok-2"),
            _child("grandchild", parent="ok-2"),  # its parent is earlier in the same batch
        ],
    )
    status = [a["error"]["status"] if a["error"] else 200 for a in answers]
    assert status == [200, 404, 413, 400, 200, 200]
    assert "'ghost'" in answers[1]["error"]["detail"]
    names = [a["name"] for a in api.client.get(f"/api/v1/runs/{run}/actions").json()]
    assert names == ["a0", "ok-1", "ok-2", "grandchild"]
    # no new children for an ended parent, nor in an ended run; an existing one still answers
    api.finish(run, "a0", 1, value=1)
    answers = _create(api, run, [_child("late"), _child("ok-1")])
    assert answers[0]["error"]["status"] == 409 and answers[1]["action"]["name"] == "ok-1"
    r = api.client.post("/api/v1/runs/nope/actions:batch", json=[_child("x")])
    assert r.status_code == 404 and "'nope'" in r.json()["detail"]


def test_batch_create_is_limited(api: Api) -> None:
    run = _running_parent(api)
    bodies = [_child(f"c{i}") for i in range(wire.MAX_BATCH + 1)]
    r = api.client.post(f"/api/v1/runs/{run}/actions:batch", json=bodies)
    assert r.status_code == 400 and "MAX_BATCH" in r.json()["detail"]


def test_a_batch_queues_in_request_order_with_cache_hits_and_misfits_in_place(
    api: Api,
) -> None:
    run = _running_parent(api)
    cached = task_spec("env.cached", cache={"key": "k1"})
    done = api.create_child(run, "first", task=cached)
    api.job(run, "first", 1)
    api.finish(run, "first", 1, value="cached value")
    huge = task_spec("env.huge", resources={"cpu": 64})
    answers = _create(
        api,
        run,
        [
            _child("b0"),
            _child("hit", task=cached),
            _child("misfit", task=huge),
            _child("b1"),
            _child("miss", task=task_spec("env.cached", cache={"key": "k2"})),
            _child("b2"),
        ],
    )
    phases = [a["action"]["phase"] for a in answers]
    assert phases == ["QUEUED", "SUCCEEDED", "FAILED", "QUEUED", "QUEUED", "QUEUED"]
    assert answers[1]["action"]["cache"] == "hit" and done["name"] == "first"
    actions = api.client.get(f"/api/v1/runs/{run}/actions").json()
    assert [a["name"] for a in actions] == [
        "a0",
        "first",
        "b0",
        "hit",
        "misfit",
        "b1",
        "miss",
        "b2",
    ]
    # the scheduler takes them in creation order
    api.job(run, "b2", 1)
    started = [job.action for job in api.executor.jobs.values()]
    assert started == ["a0", "first", "b0", "b1", "miss", "b2"]


# -- actions:wait ---------------------------------------------------------------------------


def test_wait_returns_the_ended_ones_with_outputs_in_the_order_asked(api: Api) -> None:
    run = _running_parent(api)
    _create(api, run, [_child(n) for n in ("x", "y", "z")])
    for name in ("x", "y", "z"):
        api.job(run, name, 1)
    assert _wait(api, run, ["x", "y", "z"], timeout=0) == []
    api.finish(run, "z", 1, value={"z": [1]})
    api.finish(run, "x", 1, error=error_info("x broke"))
    outcomes = _wait(api, run, ["x", "y", "z"])
    assert [o["name"] for o in outcomes] == ["x", "z"]
    assert outcomes[0]["phase"] == "FAILED" and outcomes[0]["outputs"] is None
    assert outcomes[0]["error"]["message"] == "x broke"
    assert outcomes[1] == {
        "name": "z",
        "phase": "SUCCEEDED",
        "error": None,
        "outputs": {"value": {"z": [1]}},
    }
    # None is a value like any other
    api.finish(run, "y", 1, value=None)
    (y,) = _wait(api, run, ["y"])
    assert y["outputs"] == {"value": None}


def test_wait_blocks_until_one_ends(api: Api) -> None:
    run = _running_parent(api)
    _create(api, run, [_child("slow"), _child("quick")])
    api.job(run, "slow", 1)
    api.job(run, "quick", 1)
    timer = threading.Timer(0.5, lambda: api.finish(run, "quick", 1, value=7))
    timer.start()
    started = time.monotonic()
    try:
        outcomes = _wait(api, run, ["slow", "quick"], timeout=10)
    finally:
        timer.join()
    assert 0.3 < time.monotonic() - started < 8
    assert [(o["name"], o["outputs"]) for o in outcomes] == [("quick", {"value": 7})]
    # nothing ends: back empty-handed at the timeout
    started = time.monotonic()
    assert _wait(api, run, ["slow"], timeout=0.5) == []
    assert 0.4 < time.monotonic() - started < 5


def test_a_wait_gets_a_childs_outputs_with_the_news_of_its_end_without_a_query(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (before: every wake-up of a long-poll read what had ended from the database again)
    run = _running_parent(api)
    _create(api, run, [_child("slow"), _child("quick"), _child("big")])
    for name in ("slow", "quick", "big"):
        api.job(run, name, 1)
    looks: list[int | None] = []
    real = api.plane.runs.ended_json

    def counted(run_name: str, names: Any, *, after: int | None = None, check: bool = True) -> Any:
        looks.append(after)
        return real(run_name, names, after=after, check=check)

    monkeypatch.setattr(api.plane.runs, "ended_json", counted)
    report = _report(run, "quick", value={"n": 7})
    timer = threading.Timer(0.5, lambda: _finish(api, [report]))
    timer.start()
    try:
        answer = _waited(api, run, ["slow", "quick"], timeout=10)
    finally:
        timer.join()
    assert answer["actions"] == [
        {"name": "quick", "phase": "SUCCEEDED", "error": None, "outputs": {"value": {"n": 7}}}
    ]
    assert looks == [None]  # the first look only
    # the seq it answers with is one by which the others had not ended: nothing is missed
    assert _waited(api, run, ["slow"], timeout=0, after=answer["seq"])["actions"] == []
    # outputs too big to come with the news are looked up, as before
    big = "x" * (70 * 1024)
    timer = threading.Timer(0.5, lambda: _finish(api, [_report(run, "big", value=big)]))
    timer.start()
    try:
        (outcome,) = _wait(api, run, ["slow", "big"], timeout=10, after=answer["seq"])
    finally:
        timer.join()
    assert outcome["name"] == "big" and outcome["outputs"] == {"value": big}


def test_wait_after_a_seq_looks_only_at_what_ended_since(api: Api) -> None:
    run = _running_parent(api)
    _create(api, run, [_child(n) for n in ("p", "q", "r")])
    for name in ("p", "q", "r"):
        api.job(run, name, 1)
    api.finish(run, "p", 1, value="p")
    first = _waited(api, run, ["p", "q", "r"])
    assert [o["name"] for o in first["actions"]] == ["p"]
    seq = first["seq"]
    # q and r had not ended by seq: waiting after it needs no look-up of them
    assert _waited(api, run, ["q", "r"], timeout=0, after=seq) == {"actions": [], "seq": seq}
    api.finish(run, "r", 1, value="r")
    later = _waited(api, run, ["q", "r"], after=seq)
    assert [(o["name"], o["outputs"]) for o in later["actions"]] == [("r", {"value": "r"})]
    assert later["seq"] > seq
    # what ended before `after` is the caller's to know: it is not reported again
    assert _wait(api, run, ["p", "q"], timeout=0, after=later["seq"]) == []
    # names are not looked up after a seq, but the run is
    r = api.client.post("/api/v1/runs/nope/actions:wait", json={"names": ["a0"], "after": seq})
    assert r.status_code == 404


def test_wait_for_unknown_names_is_404(api: Api) -> None:
    run = _running_parent(api)
    _create(api, run, [_child("known")])
    r = api.client.post(f"/api/v1/runs/{run}/actions:wait", json={"names": ["known", "ghost"]})
    assert r.status_code == 404 and "'ghost'" in r.json()["detail"]
    r = api.client.post("/api/v1/runs/nope/actions:wait", json={"names": ["a0"]})
    assert r.status_code == 404


def test_wait_leaves_large_outputs_to_get_outputs(api: Api) -> None:
    run = _running_parent(api)
    _create(api, run, [_child(f"big{i}") for i in range(3)])
    blob = "y" * (wire.MAX_INLINE_OUTPUTS // 2 + 10)
    for i in range(3):
        api.job(run, f"big{i}", 1)
        api.finish(run, f"big{i}", 1, value=blob)
    outcomes = _wait(api, run, ["big0", "big1", "big2"])
    assert [o["phase"] for o in outcomes] == ["SUCCEEDED"] * 3
    inline = [o for o in outcomes if o["outputs"] is not None]
    assert len(inline) == 1 and inline[0]["outputs"]["value"] == blob  # the rest: too much
    for o in outcomes:
        r = api.client.get(f"/api/v1/runs/{run}/actions/{o['name']}/outputs")
        assert r.json()["value"] == blob


# -- attempts:finish ------------------------------------------------------------------------


def test_finish_takes_each_report_as_the_one_attempt_endpoint_would(api: Api) -> None:
    run = _running_parent(api)
    flaky = task_spec("env.flaky", retries={"count": 1, "backoff_s": 60})
    _create(
        api,
        run,
        [_child("ok"), _child("bad"), _child("retry", task=flaky), _child("aborted")],
    )
    for name in ("ok", "bad", "retry", "aborted"):
        api.job(run, name, 1)
    api.client.post(f"/api/v1/runs/{run}/actions/aborted/abort")
    statuses = _finish(
        api,
        [
            _report(run, "ok", value=[1, 2]),
            _report(run, "bad", error=error_info("bad")),
            _report(run, "retry", error=error_info("again")),
            _report(run, "aborted", value=1),  # the server ended it first
            _report(run, "ok", attempt=2, value=1),  # no such attempt
            _report(run, "ghost", value=1),
            _report("nope", "ok", value=1),
            _report(run, "ok", value=1, outputs={"value": 1}, error=error_info()),
            _report(run, "ok", value=[9]),  # a repeat in the same batch: as the first went
        ],
    )
    codes = [st["status"] for st in statuses]
    assert codes == [200, 200, 200, 409, 404, 404, 404, 400, 200]
    assert "already ended (ABORTED" in statuses[3]["detail"]
    assert "'ghost'" in statuses[5]["detail"] and "'nope'" in statuses[6]["detail"]
    phases = {a["name"]: a["phase"] for a in api.client.get(f"/api/v1/runs/{run}/actions").json()}
    assert phases == {
        "a0": "RUNNING",
        "ok": "SUCCEEDED",
        "bad": "FAILED",
        "retry": "RETRYING",
        "aborted": "ABORTED",
    }
    assert api.client.get(f"/api/v1/runs/{run}/actions/ok/outputs").json() == {"value": [1, 2]}
    # a repeated report of accepted results is ignored; a late one for a stale attempt is not
    again = _finish(api, [_report(run, "ok", value=[3]), _report(run, "bad", value=1)])
    assert [st["status"] for st in again] == [200, 200]
    assert api.client.get(f"/api/v1/runs/{run}/actions/ok/outputs").json() == {"value": [1, 2]}
    # events record every change, in order
    events = [
        (e.action, e.phase)
        for e in api.plane.runs.events_after(0, run)
        if e.kind == "action" and e.action == "ok"
    ]
    assert events == [("ok", "QUEUED"), ("ok", "RUNNING"), ("ok", "SUCCEEDED")]


@pytest.mark.parametrize("reported_first", [True, False])
def test_a_batch_mixing_repeats_and_new_reports(api: Api, reported_first: bool) -> None:
    run = _running_parent(api)
    done, new = ("m1", "m2") if reported_first else ("m2", "m1")
    _create(api, run, [_child("m1"), _child("m2")])
    api.job(run, "m1", 1)
    api.job(run, "m2", 1)
    api.finish(run, done, 1, value="first")
    statuses = _finish(api, [_report(run, done, value="again"), _report(run, new, value="new")])
    assert [st["status"] for st in statuses] == [200, 200]
    outputs = {
        name: api.client.get(f"/api/v1/runs/{run}/actions/{name}/outputs").json()["value"]
        for name in (done, new)
    }
    assert outputs == {done: "first", new: "new"}  # the repeat ignored, the new one taken


def test_finish_of_a_timed_out_attempt_is_409_and_a_size_refusal_is_413(api: Api) -> None:
    run = _running_parent(api)
    _create(api, run, [_child("late"), _child("huge")])
    api.job(run, "late", 1)
    api.job(run, "huge", 1)
    api.exit(f"{run}/late/1", None, "timeout")
    big = "z" * (wire.MAX_INLINE_BYTES + 1)
    statuses = _finish(api, [_report(run, "late", value=1), _report(run, "huge", value=big)])
    assert [st["status"] for st in statuses] == [409, 413]
    assert "already ended (FAILED" in statuses[0]["detail"]
    assert "exceeded its timeout" in statuses[0]["detail"]
    assert api.action(run, "huge")["phase"] == "RUNNING"


def test_finishing_the_last_child_lets_the_parent_go_on(api: Api) -> None:
    run = _running_parent(api)
    _create(api, run, [_child("c"), _child("g", parent="c")])
    api.job(run, "c", 1)
    api.job(run, "g", 1)
    # a child whose own child is still going: ending it aborts the grandchild
    (st,) = _finish(api, [_report(run, "c", value=1)])
    assert st["status"] == 200
    assert api.action(run, "g")["phase"] == "ABORTED"
    assert f"{run}/g/1" in api.executor.cancelled


def test_heartbeats_of_many_attempts_in_one_request(api: Api) -> None:
    run = _running_parent(api)
    _create(api, run, [_child("h1"), _child("h2")])
    api.job(run, "h1", 1)
    api.job(run, "h2", 1)
    api.finish(run, "h2", 1, value=1)
    refs = [
        {"run": run, "action": "h1", "attempt": 1},
        {"run": run, "action": "h2", "attempt": 1},  # over
        {"run": run, "action": "ghost", "attempt": 1},
        {"run": run, "action": "h1", "attempt": 1},
    ]
    r = api.client.post("/api/v1/attempts:heartbeat", json=refs)
    assert r.status_code == 200, r.text
    assert [st["status"] for st in r.json()] == [200, 409, 404, 200]
    with api.plane.db.read() as s:
        beats = list(s.scalars(select(Attempt.heartbeat_at)))
    assert sum(1 for at in beats if at is not None) == 1  # h1's


# -- what the scheduler and executor see ----------------------------------------------------


def test_every_attempt_gets_its_spec_with_the_job(api: Api) -> None:
    run = _running_parent(api, env_vars={"R": "1"})
    warm = task_spec("env.warm", reuse=WARM)
    interactive = task_spec("env.ide", reuse=WARM, interactive={"kind": "vscode"})
    _create(
        api,
        run,
        [
            _child("w", task=warm, inputs={"x": [1, 2]}),
            _child("plain", inputs={"y": 1}),
            _child("ide", task=interactive),
        ],
    )
    job = api.job(run, "w", 1)
    assert job.reuse is not None and job.spec is not None
    assert job.spec.run == run and job.spec.action == "w" and job.spec.attempt == 1
    assert job.spec.inputs == {"x": [1, 2]} and job.spec.env_vars == {"R": "1"}
    assert job.spec.project == "default" and job.spec.domain == "development"
    assert job.spec.bundle == api.bundle.removeprefix("sha256:")
    assert job.spec.task.name == "env.warm"
    # the same as the runtime would fetch
    fetched = wire.ActionSpec.model_validate(
        api.client.get(f"/api/v1/runs/{run}/actions/w/spec").json()
    )
    assert job.spec.model_dump() == fetched.model_dump()
    # a process of its own gets it too (in a file: see the executor)
    plain = api.job(run, "plain", 1)
    assert plain.reuse is None and plain.spec is not None and plain.spec.inputs == {"y": 1}
    api.finish(run, "w", 1, value=1)
    ide = api.job(run, "ide", 1)
    assert ide.reuse is None  # an interactive attempt owns its process
    assert ide.spec is not None and ide.spec.task.interactive is not None


def test_handles_are_recorded_for_crash_recovery(api: Api) -> None:
    """The scheduler records the executor's handles of one pass's launches in the next
    pass's transaction (a pass that launched something is always followed by another)."""
    run = _running_parent(api)
    _create(api, run, [_child(f"h{i}") for i in range(3)])
    for i in range(3):
        api.job(run, f"h{i}", 1)

    def handles() -> list[str | None]:
        with api.plane.db.read() as s:
            return list(s.scalars(select(Attempt.handle).order_by(Attempt.id)))

    expected = [f"fake:{run}/{name}/1" for name in ("a0", "h0", "h1", "h2")]
    api.wait_for(lambda: handles() == expected)


def test_exits_reported_together_are_recorded_together(api: Api) -> None:
    run = _running_parent(api, task=task_spec(retries={"count": 0}))
    names = [f"e{i}" for i in range(2)]
    _create(
        api, run, [_child(n, task=task_spec(retries={"count": 1, "backoff_s": 60})) for n in names]
    )
    jobs = [api.job(run, n, 1) for n in names]
    api.finish(run, names[0], 1, value=0)  # reported, then exits: only the log changes

    async def both() -> None:
        import asyncio

        await asyncio.gather(api.executor.exit(jobs[0].id, 0), api.executor.exit(jobs[1].id, -9))

    assert api.client.portal is not None
    api.client.portal.call(both)
    assert api.action(run, names[0])["phase"] == "SUCCEEDED"
    lost = api.action(run, names[1])
    # retried at once from the server's allowance (a loss is not the task's fault)
    assert lost["phase"] in ("RETRYING", "RUNNING") and len(lost["attempts"]) in (1, 2)
    assert lost["attempts"][0]["error"]["kind"] == "worker_lost"
    assert "signal 9" in lost["attempts"][0]["error"]["message"]
