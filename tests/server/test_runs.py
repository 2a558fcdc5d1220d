"""Runs, actions and the state machine, driven through the API with a fake executor."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from loom import wire
from loom.executors import Capacity
from tests.server.conftest import Api, error_info, task_spec

#: A run whose root missed the cache: it waits to start, or started at once.
_MISSED = ("QUEUED", "RUNNING")


def test_create_run_starts_its_root_action(api: Api) -> None:
    run = api.create_run(
        task_spec(env_vars={"A": "task", "B": "task"}), inputs={"x": 1}, env_vars={"B": "run"}
    )
    # with room for it, the root starts in the very transaction that creates the run
    assert run["phase"] == "RUNNING" and run["task"] == "env.main" and run["actions"] == 1
    assert run["created_by"] == "admin" and run["project"] == "default"
    name = run["name"]
    job = api.job(name, "a0", 1)
    assert job.env["A"] == "task" and job.env["B"] == "run"  # the run's variables win
    # no key in the shared environment: the attempt's own credential comes with the job
    assert "LOOM_API_KEY" not in job.env
    assert api.plane.auth.attempts.parse(job.credential) == (name, "a0", 1)
    assert job.env["LOOM_ENDPOINT"] == api.plane.endpoint
    action = api.wait_phase(name, "a0", "RUNNING")
    assert action["parent"] is None and action["attempts"][0]["number"] == 1
    # the runtime's key works for the runtime's calls
    runtime = {"Authorization": f"Bearer {job.credential}"}
    spec = api.anon.get(f"/api/v1/runs/{name}/actions/a0/spec", headers=runtime).json()
    assert spec["inputs"] == {"x": 1} and spec["attempt"] == 1
    assert spec["bundle"] == api.bundle.removeprefix("sha256:")
    assert spec["env_vars"] == {"B": "run"} and spec["task"]["env_vars"]["A"] == "task"
    assert api.client.get(f"/api/v1/runs/{name}").json()["phase"] == "RUNNING"


def test_run_names(api: Api) -> None:
    run = api.create_run(name="my-run")
    assert run["name"] == "my-run"
    body = {"bundle": api.bundle, "name": "my-run", "root": {"name": "x", "task": task_spec()}}
    r = api.client.post("/api/v1/runs", json=body)
    assert r.status_code == 409 and "'my-run'" in r.json()["detail"]


def test_unknown_bundle_is_400_saying_to_upload_it(api: Api) -> None:
    body = {"bundle": "sha256:" + "0" * 64, "root": {"name": "x", "task": task_spec()}}
    r = api.client.post("/api/v1/runs", json=body)
    assert r.status_code == 400 and "upload it first" in r.json()["detail"]


def test_unknown_domain_is_400(api: Api) -> None:
    body = {"bundle": api.bundle, "domain": "qa", "root": {"name": "x", "task": task_spec()}}
    r = api.client.post("/api/v1/runs", json=body)
    assert r.status_code == 400 and "development" in r.json()["detail"]


def test_success_records_outputs_and_ends_the_run(api: Api) -> None:
    name = api.create_run()["name"]
    api.job(name, "a0", 1)
    r = api.client.post(f"/api/v1/runs/{name}/actions/a0/attempts/1/started")
    assert r.status_code == 200 and r.json()["phase"] == "RUNNING"
    assert api.client.get(f"/api/v1/runs/{name}/actions/a0/outputs").status_code == 409
    r = api.finish(name, "a0", 1, value={"answer": [1, 2]})
    assert r.status_code == 200 and r.json()["phase"] == "SUCCEEDED"
    assert api.client.get(f"/api/v1/runs/{name}/actions/a0/outputs").json() == {
        "value": {"answer": [1, 2]}
    }
    run = api.client.get(f"/api/v1/runs/{name}").json()
    assert run["phase"] == "SUCCEEDED" and run["ended_at"] is not None
    api.exit(f"{name}/a0/1", 0)  # the process exits after reporting: nothing changes
    assert api.action(name, "a0")["phase"] == "SUCCEEDED"


def test_duplicate_finished_is_ignored_and_stale_attempts_get_409(api: Api) -> None:
    name = api.create_run(task_spec(retries={"count": 1, "backoff_s": 0}))["name"]
    api.job(name, "a0", 1)
    first = api.finish(name, "a0", 1, error=error_info("first"))
    assert first.status_code == 200 and first.json()["phase"] == "RETRYING"
    again = api.finish(name, "a0", 1, error=error_info("first"))  # a retried request
    assert again.status_code == 200
    assert [a["error"]["message"] for a in again.json()["attempts"] if a["error"]] == ["first"]
    api.job(name, "a0", 2)
    ok = api.finish(name, "a0", 2, value=5)
    assert ok.json()["phase"] == "SUCCEEDED"
    assert api.finish(name, "a0", 2, value=6).status_code == 200  # duplicate: ignored
    assert api.client.get(f"/api/v1/runs/{name}/actions/a0/outputs").json()["value"] == 5


def test_finished_for_an_attempt_the_server_ended_is_409(api: Api) -> None:
    name = api.create_run(task_spec(retries={"count": 1, "backoff_s": 0}))["name"]
    api.job(name, "a0", 1)
    api.exit(f"{name}/a0/1", 1)  # lost before reporting
    api.job(name, "a0", 2)
    r = api.finish(name, "a0", 1, value=1)  # the lost attempt's late report
    assert r.status_code == 409 and "stale" in r.json()["detail"]
    r = api.client.post(f"/api/v1/runs/{name}/actions/a0/attempts/1/started")
    assert r.status_code == 409


def test_a_result_needs_exactly_one_of_outputs_and_error(api: Api) -> None:
    name = api.create_run()["name"]
    api.job(name, "a0", 1)
    r = api.client.post(f"/api/v1/runs/{name}/actions/a0/attempts/1/finished", json={})
    assert r.status_code == 400


def test_child_actions_are_idempotent_per_name(api: Api) -> None:
    name = api.create_run()["name"]
    first = api.create_child(name, "a0-1", inputs={"x": 1})
    again = api.create_child(name, "a0-1", inputs={"x": 999}, task=task_spec("env.other"))
    same = ("name", "parent", "task", "created_at")
    assert {k: again[k] for k in same} == {k: first[k] for k in same}  # (phase may move on)
    spec = api.client.get(f"/api/v1/runs/{name}/actions/a0-1/spec").json()
    assert spec["inputs"] == {"x": 1} and spec["task"]["name"] == "env.main"
    actions = api.client.get(f"/api/v1/runs/{name}/actions").json()
    assert [a["name"] for a in actions] == ["a0", "a0-1"]
    assert api.client.get(f"/api/v1/runs/{name}").json()["actions"] == 2


def test_child_needs_a_known_parent(api: Api) -> None:
    name = api.create_run()["name"]
    body = {"name": "c", "parent": "ghost", "task": task_spec()}
    r = api.client.post(f"/api/v1/runs/{name}/actions", json=body)
    assert r.status_code == 404 and "'ghost'" in r.json()["detail"]
    body = {"name": "c", "task": task_spec()}
    assert api.client.post(f"/api/v1/runs/{name}/actions", json=body).status_code == 400
    r = api.client.post("/api/v1/runs/nope/actions", json=body)
    assert r.status_code == 404 and "'nope'" in r.json()["detail"]


def test_retries_with_exponential_backoff(api: Api) -> None:
    retries = {"count": 2, "backoff_s": 0.3, "backoff_factor": 2.0, "max_backoff_s": 0.5}
    name = api.create_run(task_spec(retries=retries))["name"]
    api.job(name, "a0", 1)
    failed_at = time.monotonic()
    api.finish(name, "a0", 1, error=error_info("one"))
    # (a loaded machine may take the backoff to get here)
    assert api.action(name, "a0")["phase"] == "RETRYING" or time.monotonic() - failed_at >= 0.3
    api.job(name, "a0", 2)
    assert time.monotonic() - failed_at >= 0.3
    failed_at = time.monotonic()
    api.exit(f"{name}/a0/2", None, "timeout")
    api.job(name, "a0", 3)
    assert time.monotonic() - failed_at >= 0.5  # 0.6 capped at max_backoff_s
    api.finish(name, "a0", 3, error=error_info("three"))
    action = api.wait_phase(name, "a0", "FAILED")
    assert [a["phase"] for a in action["attempts"]] == ["FAILED"] * 3
    assert action["attempts"][1]["error"]["kind"] == "timeout"
    assert action["error"]["message"] == "three"  # the last attempt's error
    run = api.client.get(f"/api/v1/runs/{name}").json()
    assert run["phase"] == "FAILED" and run["error"]["message"] == "three"


def test_system_errors_are_not_retried(api: Api) -> None:
    name = api.create_run(task_spec(retries={"count": 3, "backoff_s": 0}))["name"]
    api.job(name, "a0", 1)
    r = api.finish(name, "a0", 1, error=error_info("bad input", kind="system", type="InputError"))
    assert r.json()["phase"] == "FAILED" and len(r.json()["attempts"]) == 1


def test_timeout_fails_the_attempt_as_timeout(api: Api) -> None:
    name = api.create_run(task_spec(timeout_s=1.5))["name"]
    job = api.job(name, "a0", 1)
    assert job.timeout_s == 1.5
    api.exit(job.id, -9, "timeout")
    action = api.wait_phase(name, "a0", "FAILED")
    error = action["error"]
    assert error["kind"] == "timeout" and error["type"] == "MaxRuntimeExceededError"
    assert "1.5s" in error["message"]


def test_a_process_that_exits_without_reporting_is_lost(api: Api) -> None:
    name = api.create_run(task_spec())["name"]  # lost attempts are retried all the same
    api.exit(api.job(name, "a0", 1).id, 3)
    api.exit(api.job(name, "a0", 2).id, -9)
    api.exit(api.job(name, "a0", 3).id, 0)
    api.exit(api.job(name, "a0", 4).id, 3)
    action = api.wait_phase(name, "a0", "FAILED")
    errors = [a["error"] for a in action["attempts"]]
    assert [e["kind"] for e in errors] == ["worker_lost"] * 4
    assert errors[0]["message"] == "worker lost: process exited with code 3"
    assert errors[1]["message"].startswith("worker lost: process exited with code -9")
    assert errors[2]["message"].endswith("without reporting its result")


def test_abort_run_kills_everything_still_going(api: Api) -> None:
    name = api.create_run()["name"]
    api.job(name, "a0", 1)
    api.create_child(name, "c1")
    api.create_child(name, "c2")
    api.job(name, "c1", 1)
    api.finish(name, "c1", 1, value=1)
    api.job(name, "c2", 1)
    r = api.client.post(f"/api/v1/runs/{name}/abort")
    assert r.status_code == 200 and r.json()["phase"] == "ABORTED"
    phases = {a["name"]: a["phase"] for a in api.client.get(f"/api/v1/runs/{name}/actions").json()}
    assert phases == {"a0": "ABORTED", "c1": "SUCCEEDED", "c2": "ABORTED"}
    api.wait_for(lambda: {f"{name}/a0/1", f"{name}/c2/1"} <= set(api.executor.cancelled))
    c2 = api.action(name, "c2")
    assert c2["error"]["kind"] == "aborted" and c2["attempts"][0]["phase"] == "ABORTED"
    # aborting again is a no-op; the run takes no new actions; late reports are refused
    assert api.client.post(f"/api/v1/runs/{name}/abort").json()["phase"] == "ABORTED"
    body = {"name": "c3", "parent": "a0", "task": task_spec()}
    assert api.client.post(f"/api/v1/runs/{name}/actions", json=body).status_code == 409
    assert api.finish(name, "c2", 1, value=1).status_code == 409


def test_an_ended_parent_aborts_its_open_children(api: Api) -> None:
    name = api.create_run()["name"]
    api.job(name, "a0", 1)
    api.create_child(name, "c1")
    api.create_child(name, "c1-1", parent="c1")
    api.finish(name, "a0", 1, error=error_info("parent gave up"))
    for child in ("c1", "c1-1"):
        action = api.action(name, child)
        assert action["phase"] == "ABORTED" and "'a0'" in action["error"]["message"]


def test_parents_waiting_on_children_hold_no_slot(api: Api) -> None:
    # 2 slots: the root and its children would deadlock if the root counted while it waits
    name = api.create_run()["name"]
    api.job(name, "a0", 1)
    for i in range(3):
        api.create_child(name, f"c{i}")
    api.job(name, "c0", 1)
    api.job(name, "c1", 1)
    time.sleep(0.3)
    assert f"{name}/c2/1" not in api.executor.jobs  # both slots are taken by c0 and c1
    api.finish(name, "c0", 1, value=0)
    api.job(name, "c2", 1)  # a slot freed: the next in creation order starts


def test_queued_actions_start_in_creation_order(api: Api) -> None:
    runs = [api.create_run()["name"] for _ in range(4)]
    api.job(runs[0], "a0", 1)
    api.job(runs[1], "a0", 1)
    time.sleep(0.2)
    assert len(api.executor.jobs) == 2
    api.finish(runs[1], "a0", 1, value=1)
    api.job(runs[2], "a0", 1)
    assert f"{runs[3]}/a0/1" not in api.executor.jobs


@pytest.mark.parametrize(
    "resources,needle",
    [
        ({"cpu": 64}, "requests 64 CPUs but the largest worker has 2"),
        ({"memory_bytes": 1 << 50}, "of memory but the largest worker has 8.0 GiB"),
        ({"gpu": 1}, "requests 1 GPU but the largest worker has none"),
        ({"disk_bytes": 1 << 40}, "1.0 TiB of disk but the largest worker has 100.0 GiB"),
    ],
)
def test_an_action_too_big_for_any_worker_fails_at_once(
    api: Api, resources: dict[str, int], needle: str
) -> None:
    run = api.create_run(task_spec(resources=resources))
    assert run["phase"] == "FAILED"
    error = api.action(run["name"], "a0")["error"]
    assert error["kind"] == "system" and needle in error["message"]
    assert "lower Resources(" in error["message"]


def test_the_executor_failing_to_start_a_job_fails_the_action(api: Api) -> None:
    api.executor.fail_submit = "no such runtime"
    name = api.create_run(task_spec(retries={"count": 2}))["name"]
    action = api.wait_phase(name, "a0", "FAILED")
    assert action["error"]["kind"] == "system" and "no such runtime" in action["error"]["message"]


def test_attempts_not_heard_from_are_declared_lost_and_killed(api: Api) -> None:
    silent = api.create_run(task_spec(retries={"count": 1, "backoff_s": 0}))["name"]
    beating = api.create_run()["name"]
    api.job(silent, "a0", 1)
    api.job(beating, "a0", 1)
    time.sleep(2.5)  # (wide margins: a loaded machine may pause this test for a while)
    beat = [{"run": beating, "action": "a0", "attempt": 1}]
    assert api.client.post("/api/v1/attempts:heartbeat", json=beat).json()[0]["status"] == 200
    assert api.plane.runs.lose_silent(2.0) == 1
    # what is left of its process goes (the kill is carried out after the commit)
    api.wait_for(lambda: api.executor.cancelled == [f"{silent}/a0/1"])
    api.job(silent, "a0", 2)  # and the policy retries it
    lost = api.action(silent, "a0")["attempts"][0]
    assert lost["phase"] == "FAILED" and lost["error"]["kind"] == "worker_lost"
    assert "no heartbeat from attempt 1 for" in lost["error"]["message"]
    assert "the limit is 2 s" in lost["error"]["message"]
    assert api.action(beating, "a0")["phase"] == "RUNNING"
    assert api.plane.runs.lose_silent(60) == 0


def _cached(key: str) -> dict[str, object]:
    return task_spec(cache={"key": key})


def test_cache_hits_are_scoped_by_project_and_domain(api: Api) -> None:
    first = api.create_run(_cached("k1"))["name"]
    assert api.action(first, "a0")["cache"] == "miss"
    api.job(first, "a0", 1)
    api.finish(first, "a0", 1, value="computed")
    hit = api.create_run(_cached("k1"))
    assert hit["phase"] == "SUCCEEDED"
    action = api.action(hit["name"], "a0")
    assert action["cache"] == "hit" and action["attempts"] == []
    outputs = api.client.get(f"/api/v1/runs/{hit['name']}/actions/a0/outputs").json()
    assert outputs == {"value": "computed"}
    # children hit the cache too
    api.job(first, "a0", 1)
    other = api.create_run()["name"]
    api.job(other, "a0", 1)
    assert api.create_child(other, "c", task=_cached("k1"))["cache"] == "hit"
    # another domain, another project: misses
    assert api.create_run(_cached("k1"), domain="staging")["phase"] in _MISSED
    api.client.post("/api/v1/projects", json={"name": "p2"})
    assert api.create_run(_cached("k1"), project="p2")["phase"] in _MISSED


def test_overwrite_cache_recomputes_and_replaces(api: Api) -> None:
    first = api.create_run(_cached("k2"))["name"]
    api.job(first, "a0", 1)
    api.finish(first, "a0", 1, value="old")
    again = api.create_run(_cached("k2"), overwrite_cache=True)["name"]
    assert api.action(again, "a0")["phase"] != "SUCCEEDED"
    api.job(again, "a0", 1)
    assert api.finish(again, "a0", 1, value="new").json()["cache"] == "overwritten"
    hit = api.create_run(_cached("k2"))["name"]
    outputs = api.client.get(f"/api/v1/runs/{hit}/actions/a0/outputs").json()
    assert outputs == {"value": "new"}


def test_failures_are_not_cached(api: Api) -> None:
    first = api.create_run(_cached("k3"))["name"]
    api.job(first, "a0", 1)
    api.finish(first, "a0", 1, error=error_info())
    assert api.create_run(_cached("k3"))["phase"] in _MISSED


def _serialized(key: str, **kwargs: object) -> dict[str, object]:
    return task_spec(cache={"key": key, "serialize": True}, **kwargs)


def _never_launched(api: Api, run: str, action: str = "a0") -> bool:
    time.sleep(0.3)  # a scheduling pass or two
    return not any(job.startswith(f"{run}/{action}/") for job in api.executor.jobs)


def test_serialized_cache_calls_wait_for_the_first_and_share_its_result(api: Api) -> None:
    first = api.create_run(_serialized("s1"))["name"]
    api.job(first, "a0", 1)
    second = api.create_run(_serialized("s1"))
    assert second["phase"] == "QUEUED"
    assert api.action(second["name"], "a0")["cache"] == "waiting"
    other = api.create_run()["name"]
    api.job(other, "a0", 1)
    assert api.create_child(other, "c", task=_serialized("s1"))["cache"] == "waiting"
    assert _never_launched(api, second["name"]) and _never_launched(api, other, "c")
    # the same key elsewhere, a plain cached task, or an overwriting run: no waiting
    staging = api.create_run(_serialized("s1"), domain="staging")["name"]
    assert api.action(staging, "a0")["cache"] == "miss"
    assert api.action(api.create_run(_cached("s1"))["name"], "a0")["cache"] == "miss"
    overwrite = api.create_run(_serialized("s1"), overwrite_cache=True)["name"]
    assert api.action(overwrite, "a0")["cache"] == "miss"

    assert api.finish(first, "a0", 1, value="once").json()["cache"] == "miss"
    for run, action in ((second["name"], "a0"), (other, "c")):
        waited = api.wait_phase(run, action, "SUCCEEDED")
        assert waited["cache"] == "hit" and waited["attempts"] == []
        outputs = api.client.get(f"/api/v1/runs/{run}/actions/{action}/outputs").json()
        assert outputs == {"value": "once"}
    assert api.client.get(f"/api/v1/runs/{second['name']}").json()["phase"] == "SUCCEEDED"


def test_when_the_serialized_call_fails_the_oldest_waiting_one_runs_instead(api: Api) -> None:
    retried = {"retries": {"count": 1, "backoff_s": 0}}
    first = api.create_run(_serialized("s2", **retried))["name"]
    api.job(first, "a0", 1)
    second, third = (api.create_run(_serialized("s2"))["name"] for _ in range(2))
    # a retry keeps its place: the others go on waiting
    assert api.finish(first, "a0", 1, error=error_info("flaky")).json()["phase"] == "RETRYING"
    api.job(first, "a0", 2)
    assert api.action(second, "a0")["cache"] == "waiting"
    api.finish(first, "a0", 2, error=error_info("broken"))
    api.job(second, "a0", 1)
    assert api.action(second, "a0")["cache"] == "miss"
    assert api.action(third, "a0")["cache"] == "waiting" and _never_launched(api, third)
    # aborting the one that runs passes the turn on too
    api.client.post(f"/api/v1/runs/{second}/abort")
    api.job(third, "a0", 1)
    api.finish(third, "a0", 1, value="third time")
    assert api.create_run(_serialized("s2"))["phase"] == "SUCCEEDED"  # a plain hit now


def test_aborting_a_waiting_call_leaves_the_others_alone(api: Api) -> None:
    first = api.create_run(_serialized("s3"))["name"]
    api.job(first, "a0", 1)
    second, third = (api.create_run(_serialized("s3"))["name"] for _ in range(2))
    assert api.client.post(f"/api/v1/runs/{second}/abort").json()["phase"] == "ABORTED"
    assert api.action(first, "a0")["phase"] == "RUNNING"
    assert api.action(third, "a0")["cache"] == "waiting" and _never_launched(api, third)
    api.finish(first, "a0", 1, value=3)
    assert api.wait_phase(third, "a0", "SUCCEEDED")["cache"] == "hit"
    assert api.action(second, "a0")["phase"] == "ABORTED"


def test_oversized_inputs_and_outputs_are_413(api: Api) -> None:
    big = "x" * (wire.MAX_INLINE_BYTES + 1)
    body = {"bundle": api.bundle, "root": {"name": "x", "task": task_spec(), "inputs": {"s": big}}}
    r = api.client.post("/api/v1/runs", json=body)
    assert r.status_code == 413 and str(wire.MAX_INLINE_BYTES) in r.json()["detail"]
    name = api.create_run()["name"]
    child = {"name": "c", "parent": "a0", "task": task_spec(), "inputs": {"s": big}}
    assert api.client.post(f"/api/v1/runs/{name}/actions", json=child).status_code == 413
    api.job(name, "a0", 1)
    r = api.finish(name, "a0", 1, value=big)
    assert r.status_code == 413 and "outputs" in r.json()["detail"]
    huge = {"s": "x" * (4 * wire.MAX_INLINE_BYTES + 10)}
    assert api.client.post("/api/v1/runs", json=huge).status_code == 413  # refused unread


def test_wait_returns_at_timeout_or_when_the_action_ends(api: Api) -> None:
    name = api.create_run()["name"]
    api.job(name, "a0", 1)
    started = time.monotonic()
    r = api.client.get(f"/api/v1/runs/{name}/actions/a0/wait?timeout=0.3")
    assert r.json()["phase"] == "RUNNING" and time.monotonic() - started >= 0.3

    def finish_soon() -> None:
        time.sleep(0.3)
        api.finish(name, "a0", 1, value=1)

    threading.Thread(target=finish_soon).start()
    started = time.monotonic()
    r = api.client.get(f"/api/v1/runs/{name}/actions/a0/wait?timeout=20")
    assert r.json()["phase"] == "SUCCEEDED" and time.monotonic() - started < 5
    assert api.client.get("/api/v1/runs/x/actions/a0/wait").status_code == 404


def test_list_runs_filters_newest_first(api: Api) -> None:
    a = api.create_run(name="one")["name"]
    b = api.create_run(task_spec("env.other"), name="two")["name"]
    api.job(a, "a0", 1)
    api.finish(a, "a0", 1, value=1)
    names = [r["name"] for r in api.client.get("/api/v1/runs").json()]
    assert names[:2] == [b, a]
    assert [r["name"] for r in api.client.get("/api/v1/runs?phase=SUCCEEDED").json()] == [a]
    assert [r["name"] for r in api.client.get("/api/v1/runs?task=env.other").json()] == [b]
    assert api.client.get("/api/v1/runs?domain=staging").json() == []
    assert len(api.client.get("/api/v1/runs?limit=1").json()) == 1


def test_events_record_every_phase_change(api: Api) -> None:
    name = api.create_run()["name"]
    api.job(name, "a0", 1)
    api.finish(name, "a0", 1, value=1)
    events = api.plane.runs.events_after(0, name)
    seen = [(e.kind, e.action, e.phase) for e in events]
    assert seen == [
        ("run", None, "QUEUED"),
        ("action", "a0", "QUEUED"),
        ("action", "a0", "RUNNING"),
        ("run", None, "RUNNING"),
        ("action", "a0", "SUCCEEDED"),
        ("run", None, "SUCCEEDED"),
    ]
    assert [e.seq for e in events] == sorted(e.seq for e in events)


def test_logs_are_served_live_then_from_the_object_store(api: Api) -> None:
    name = api.create_run()["name"]
    job = api.job(name, "a0", 1)
    assert api.client.get(f"/api/v1/runs/{name}/actions/a0/logs").text == ""
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    job.log_path.write_text("hello\n")
    assert api.client.get(f"/api/v1/runs/{name}/actions/a0/logs").text == "hello\n"
    api.finish(name, "a0", 1, value=1)
    api.exit(job.id, 0)
    assert not job.log_path.exists()  # moved to the object store
    r = api.client.get(f"/api/v1/runs/{name}/actions/a0/logs?attempt=1&follow=true")
    assert r.text == "hello\n" and r.headers["content-type"].startswith("text/plain")
    assert api.client.get(f"/api/v1/runs/{name}/actions/a0/logs?attempt=2").status_code == 404


def test_the_exit_of_an_attempt_that_reported_records_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded: list[str] = []
    exited = api.plane.runs.processes_exited

    def spy(exits: Any) -> Any:
        recorded.extend(f"{e.run}/{e.action}/{e.attempt}" for e in exits)
        return exited(exits)

    monkeypatch.setattr(api.plane.runs, "processes_exited", spy)
    reported = api.create_run()["name"]
    job = api.job(reported, "a0", 1)
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    job.log_path.write_text("said\n")
    api.finish(reported, "a0", 1, value=1)
    api.exit(job.id, 0)
    assert recorded == []  # nothing to record: the log moved to its key, which says where
    assert not job.log_path.exists()
    assert api.client.get(f"/api/v1/runs/{reported}/actions/a0/logs").text == "said\n"
    # an exit without a report is the attempt's end: recorded
    silent = api.create_run()["name"]
    api.job(silent, "a0", 1)
    api.exit(f"{silent}/a0/1", 0)
    assert recorded == [f"{silent}/a0/1"]
    assert api.action(silent, "a0")["attempts"][0]["error"]["kind"] == "worker_lost"


def test_the_log_of_an_attempt_that_printed_nothing_is_empty_at_once(api: Api) -> None:
    # (a warm worker makes an attempt's log file on its first write: a quiet one has none)
    name = api.create_run()["name"]
    job = api.job(name, "a0", 1)
    api.finish(name, "a0", 1, value=1)
    api.exit(job.id, 0)
    time.sleep(0.5)  # the exit is handled
    started = time.monotonic()
    r = api.client.get(f"/api/v1/runs/{name}/actions/a0/logs")
    assert r.status_code == 200 and r.text == ""
    assert time.monotonic() - started < 1  # not the grace given to a log on its way


@pytest.fixture
def capacity_small() -> Capacity:
    return Capacity(slots=1, cpu=1.0, memory_bytes=1 << 30)


def test_a_restart_adopts_running_attempts_and_retries_only_lost_ones(api: Api) -> None:
    from fastapi.testclient import TestClient

    from loom.server import ControlPlane, create_app
    from tests.server.conftest import FakeExecutor

    name = api.create_run()["name"]
    api.job(name, "a0", 1)
    gone = api.create_run()["name"]
    api.job(gone, "a0", 1)
    third = api.create_run()["name"]  # waits: both slots are taken
    # a second server process on the same storage, as after kill -9 and restart: the first
    # attempt's process still runs, the other's is gone
    executor = FakeExecutor(api.executor.capacity())
    executor.alive = {f"fake:{name}/a0/1"}
    plane = ControlPlane(api.settings, executor=executor)
    plane.prepare()
    with TestClient(create_app(plane), headers=dict(api.client.headers)) as client:
        assert executor.adopted == [f"fake:{name}/a0/1"]
        assert executor.reclaimed == [f"fake:{gone}/a0/1"]
        # the lost one is retried at once, though its task has no retries: not its fault
        deadline = time.monotonic() + 10
        while f"{gone}/a0/2" not in executor.jobs:
            assert time.monotonic() < deadline, executor.jobs
            time.sleep(0.02)
        action = client.get(f"/api/v1/runs/{gone}/actions/a0").json()
        assert action["attempts"][0]["error"]["kind"] == "worker_lost"
        assert "server restarted" in action["attempts"][0]["error"]["message"]
        # the adopted one still holds its slot (two: the third run waits), and reports as
        # if nothing had happened
        assert client.get(f"/api/v1/runs/{name}").json()["phase"] == "RUNNING"
        time.sleep(0.3)
        assert f"{third}/a0/1" not in executor.jobs
        r = client.post(
            f"/api/v1/runs/{name}/actions/a0/attempts/1/finished", json={"outputs": {"value": 1}}
        )
        assert r.status_code == 200, r.text
        assert client.portal is not None
        client.portal.call(executor.exit, f"{name}/a0/1", None)
        assert client.get(f"/api/v1/runs/{name}").json()["phase"] == "SUCCEEDED"
        while f"{third}/a0/1" not in executor.jobs:
            assert time.monotonic() < deadline, executor.jobs
            time.sleep(0.02)
    plane.db.dispose()


def test_following_the_log_of_an_attempt_that_never_started_ends(api: Api) -> None:
    api.executor.fail_submit = "cannot start"
    name = api.create_run()["name"]
    api.wait_phase(name, "a0", "FAILED")
    started = time.monotonic()
    r = api.client.get(f"/api/v1/runs/{name}/actions/a0/logs?follow=true")
    assert r.status_code == 200 and r.text == "" and time.monotonic() - started < 10


def test_heartbeats(api: Api) -> None:
    name = api.create_run()["name"]
    api.job(name, "a0", 1)
    url = f"/api/v1/runs/{name}/actions/a0/attempts/1/heartbeat"
    assert api.client.post(url).status_code == 204
    api.finish(name, "a0", 1, value=1)
    assert api.client.post(url).status_code == 409  # over: the runtime should stop


def test_a_filtered_event_stream_keeps_alive_while_other_runs_are_busy(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from loom.server import _api

    monkeypatch.setattr(_api, "_KEEPALIVE_S", 1.0)
    quiet = api.create_run()["name"]
    busy = api.create_run()["name"]
    api.job(busy, "a0", 1)
    stop = threading.Event()

    def churn() -> None:  # another run's changes wake every stream, all the time
        n = 0
        while not stop.is_set():
            api.create_child(busy, f"c{n}")
            n += 1
            time.sleep(0.05)

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    try:
        after = api.plane.runs.last_event_seq()
        started = time.monotonic()
        with api.client.stream(
            "GET", "/api/v1/events", params={"run": quiet, "after": after}
        ) as stream:
            line = next(line for line in stream.iter_lines() if line.startswith(":"))
        assert line == ": keep-alive"
        assert time.monotonic() - started < 3.0
    finally:
        stop.set()
        worker.join(10)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_lost_attempts_are_retried_from_the_servers_allowance_not_the_tasks(api: Api) -> None:
    # retries=0: a task's own failure ends it, but the infrastructure may lose it 3 times
    name = api.create_run(task_spec())["name"]
    for number in (1, 2, 3):
        api.job(name, "a0", number)
        api.exit(f"{name}/a0/{number}", -9)  # died without reporting: lost
    api.job(name, "a0", 4)
    api.exit(f"{name}/a0/4", -9)
    failed = api.wait_phase(name, "a0", "FAILED")
    assert [a["error"]["kind"] for a in failed["attempts"]] == ["worker_lost"] * 4
    # a loss does not use up the task's own retries either
    other = api.create_run(task_spec(retries={"count": 1, "backoff_s": 0}))["name"]
    api.job(other, "a0", 1)
    api.exit(f"{other}/a0/1", -9)
    api.job(other, "a0", 2)
    api.finish(other, "a0", 2, error=error_info())
    api.exit(f"{other}/a0/2", 1)
    api.job(other, "a0", 3)  # the task's one retry, still there
    api.finish(other, "a0", 3, error=error_info())
    api.exit(f"{other}/a0/3", 1)
    assert len(api.wait_phase(other, "a0", "FAILED")["attempts"]) == 3


def test_a_credential_is_refused_as_soon_as_its_attempt_ends_however_it_ends(api: Api) -> None:
    """The server keeps live credentials in memory: each way an attempt ends must revoke."""

    def works(credential: str, run: str) -> bool:
        r = api.anon.get(f"/api/v1/runs/{run}", headers={"Authorization": f"Bearer {credential}"})
        assert r.status_code in (200, 401), r.text
        return r.status_code == 200

    def live(run: str, action: str, attempt: int) -> str:
        credential = api.job(run, action, attempt).credential
        assert works(credential, run)  # (now known live: remembered)
        return credential

    # reported: alone, and in a batch (a child without cache: the batch's fast path)
    run = api.create_run()["name"]
    root = live(run, "a0", 1)
    api.create_child(run, "c1")
    child = live(run, "c1", 1)
    item = {"run": run, "action": "c1", "attempt": 1, "result": {"outputs": {"value": 1}}}
    r = api.anon.post(
        "/api/v1/attempts:finish", json=[item], headers={"Authorization": f"Bearer {child}"}
    )
    assert r.status_code == 200 and r.json()[0]["status"] == 200, r.text
    assert not works(child, run)
    assert api.finish(run, "a0", 1, value=1).status_code == 200
    assert not works(root, run)
    # failed and retried: the next attempt has a credential of its own
    run = api.create_run(task_spec(retries={"count": 1}))["name"]
    first = live(run, "a0", 1)
    assert api.finish(run, "a0", 1, error=error_info()).status_code == 200
    assert not works(first, run)
    second = live(run, "a0", 2)
    # lost: its process exited without a report (and the server's allowance retries it)
    api.exit(f"{run}/a0/2", 1)
    api.job(run, "a0", 3)
    assert not works(second, run)
    # aborted
    run = api.create_run()["name"]
    aborted = live(run, "a0", 1)
    assert api.client.post(f"/api/v1/runs/{run}/abort").status_code == 200
    assert not works(aborted, run)


def test_small_values_are_kept_in_their_key_and_large_ones_in_the_store(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored: list[str] = []
    put = api.plane.store.put_content
    monkeypatch.setattr(
        api.plane.store, "put_content", lambda key, data: (stored.append(key), put(key, data))
    )
    large = "x" * 300
    name = api.create_run(inputs={"x": 1})["name"]
    job = api.job(name, "a0", 1)
    assert job.spec is not None and job.spec.inputs == {"x": 1}
    api.create_child(name, "small", inputs={"n": 2})
    api.create_child(name, "large", inputs={"s": large})
    assert len(stored) == 1  # the large inputs only
    runtime = {"Authorization": f"Bearer {api.job(name, 'small', 1).credential}"}
    spec = api.anon.get(f"/api/v1/runs/{name}/actions/small/spec", headers=runtime).json()
    assert spec["inputs"] == {"n": 2}
    api.job(name, "large", 1)
    assert api.finish(name, "small", 1, value=[1, "two"]).status_code == 200
    assert api.finish(name, "large", 1, value=large).status_code == 200
    assert len(stored) == 2
    for action, value in (("small", [1, "two"]), ("large", large)):
        r = api.client.get(f"/api/v1/runs/{name}/actions/{action}/outputs")
        assert r.json() == {"value": value}
    waited = api.client.post(
        f"/api/v1/runs/{name}/actions:wait", json={"names": ["small", "large"], "timeout": 5}
    ).json()
    assert {a["name"]: a["outputs"]["value"] for a in waited["actions"]} == {
        "small": [1, "two"],
        "large": large,
    }
