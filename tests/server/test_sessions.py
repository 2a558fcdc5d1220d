"""Interactive sessions through the API (SQLite and PostgreSQL), with a fake executor and a
simulated runtime: registration, the command long-poll, resume, idle, abort."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from loom.server._models import InteractiveSession
from tests.server.conftest import Api, error_info, task_spec

SECRET = "jupyter-secret-4f1d9c"


def interactive_task(**interactive: Any) -> dict[str, Any]:
    return task_spec(interactive={"kind": "vscode", **interactive}, timeout_s=5)


class Runtime:
    """The runtime's side of one attempt, with the key the server gave the job."""

    def __init__(self, api: Api, run: str, action: str, attempt: int = 1) -> None:
        self.api = api
        self.run, self.action, self.attempt = run, action, attempt
        job = api.job(run, action, attempt)
        self.job = job
        self.headers = {"Authorization": f"Bearer {job.credential}"}
        self.base = f"/api/v1/runs/{run}/actions/{action}"

    def register(self, **kwargs: Any) -> Any:
        body = {
            "attempt": self.attempt,
            "kind": "jupyter",
            "socket": str(
                self.api.plane.session_dir(self.run, self.action, self.attempt) / "ide.sock"
            ),
            "token": SECRET,
            "workspace": "/work/space",
            "max_idle_seconds": 3600,
            **kwargs,
        }
        return self.api.client.post(f"{self.base}/session", json=body, headers=self.headers)

    def command(self, timeout: float = 5) -> dict[str, Any]:
        r = self.api.client.get(
            f"{self.base}/session/command?timeout={timeout}", headers=self.headers
        )
        assert r.status_code == 200, r.text
        return r.json()

    def command_status(self) -> int:
        r = self.api.client.get(f"{self.base}/session/command?timeout=0", headers=self.headers)
        return r.status_code

    def outcome(self, id: int, ok: bool, error: dict[str, Any] | None = None) -> None:
        body = {"id": id, "ok": ok, "error": error}
        r = self.api.client.post(f"{self.base}/session/outcome", json=body, headers=self.headers)
        assert r.status_code == 204, r.text

    def finished(self, **kwargs: Any) -> Any:
        return self.api.finish(self.run, self.action, self.attempt, **kwargs)

    def ended(self, reason: str) -> dict[str, Any]:
        r = self.api.client.post(
            f"{self.base}/session/ended", json={"reason": reason}, headers=self.headers
        )
        assert r.status_code == 200, r.text
        return r.json()


def start(api: Api, action: str = "a0", **interactive: Any) -> tuple[str, Runtime]:
    name = api.create_run(interactive_task(**interactive))["name"]
    return name, Runtime(api, name, action)


def session(api: Api, run: str, action: str = "a0") -> dict[str, Any]:
    r = api.client.get(f"/api/v1/runs/{run}/actions/{action}/session")
    assert r.status_code == 200, r.text
    return r.json()


def resume_in_thread(api: Api, run: str, action: str = "a0", **body: Any) -> dict[str, Any]:
    """Start a resume request in a thread; the dict gets "response" when it returns."""
    result: dict[str, Any] = {}

    def call() -> None:
        result["response"] = api.client.post(
            f"/api/v1/runs/{run}/actions/{action}/session/resume", json=body
        )

    thread = threading.Thread(target=call)
    thread.start()
    result["thread"] = thread
    return result


def done(result: dict[str, Any], timeout: float = 15) -> Any:
    result["thread"].join(timeout)
    assert "response" in result, "the resume request did not return"
    return result["response"]


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- registration ---------------------------------------------------------------------------


def test_register_makes_the_action_interactive_and_hides_the_token(api: Api) -> None:
    run, rt = start(api, max_idle_seconds=600)
    assert rt.job.timeout_s is None  # the task's 5 s timeout must not kill a session
    assert api.action(run, "a0")["session"] is None
    r = rt.register(max_idle_seconds=600)
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["state"] == "ready" and info["kind"] == "jupyter" and info["attempt"] == 1
    assert info["url"] == f"/sessions/{info['id']}/" and len(info["id"]) >= 20
    assert info["workspace"] == "/work/space" and info["max_idle_seconds"] == 600
    deadline = (_at(info["idle_deadline"]) - _at(info["last_activity_at"])).total_seconds()
    assert deadline == 600
    action = api.wait_phase(run, "a0", "INTERACTIVE")
    assert action["session"]["id"] == info["id"]
    assert api.client.get(f"/api/v1/runs/{run}").json()["phase"] == "INTERACTIVE"
    listed = api.client.get(f"/api/v1/runs/{run}/actions")
    assert listed.json()[0]["session"]["id"] == info["id"]
    assert session(api, run)["id"] == info["id"]
    for text in (r.text, listed.text, api.client.get(f"/api/v1/runs/{run}/actions/a0").text):
        assert SECRET not in text and "token" not in text
    phases = [e.phase for e in api.plane.runs.events_after(0, run) if e.action == "a0"]
    assert phases[-2:] == ["RUNNING", "INTERACTIVE"]


def test_registration_is_refused_when_it_cannot_be_honoured(api: Api) -> None:
    plain = api.create_run()["name"]
    rt = Runtime(api, plain, "a0")
    r = rt.register()
    assert r.status_code == 409 and "not interactive" in r.json()["detail"]
    assert api.client.get(f"/api/v1/runs/{plain}/actions/a0/session").status_code == 404

    run, rt = start(api)
    assert rt.register(attempt=2).status_code == 403  # not its own attempt
    r = rt.register(socket="relative.sock")
    assert r.status_code == 400 and "absolute" in r.json()["detail"]
    # the proxy would connect wherever it is told: only where the server said, then
    other = api.plane.session_dir(run, "a0", 2) / "ide.sock"
    for elsewhere in ("/tmp/ide.sock", str(other), f"{other.parent.parent}/../x/ide.sock"):
        r = rt.register(socket=elsewhere)
        assert r.status_code == 400 and "directory the server made" in r.json()["detail"]
    r = rt.register(max_idle_seconds=0)  # Flyte ended such a session at once
    assert r.status_code == 400 and "positive" in r.json()["detail"]
    # an ordinary user key may not pose as a runtime
    key = api.client.post(
        "/api/v1/api-keys", json={"name": "alice", "projects": {"default": "member"}}
    ).json()["key"]
    r = api.client.post(
        f"/api/v1/runs/{run}/actions/a0/session",
        json={"attempt": 1, "kind": "vscode", "socket": "/x", "workspace": "/w"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 403
    assert api.action(run, "a0")["phase"] == "RUNNING"
    # a finished attempt cannot open one
    assert rt.finished(value=1).status_code == 200
    r = rt.register()
    assert r.status_code == 401 and "attempt has ended" in r.json()["detail"]


def test_an_interactive_action_holds_no_executor_slot(api: Api) -> None:
    # two slots: the interactive run and one more run fill them; a third run waits until the
    # first becomes INTERACTIVE
    first, rt = start(api)
    second = api.create_run()["name"]
    api.job(second, "a0", 1)
    third = api.create_run()["name"]
    time.sleep(0.3)
    assert api.action(third, "a0")["phase"] == "QUEUED"
    assert rt.register().status_code == 200
    api.job(third, "a0", 1, timeout=2)  # sooner than the scheduler's 5 s fallback
    assert api.wait_phase(third, "a0", "RUNNING")


# -- commands, resume, idle -----------------------------------------------------------------


def test_command_long_poll_answers_none_at_its_timeout(api: Api) -> None:
    run, rt = start(api)
    rt.register(max_idle_seconds=None)
    started = time.monotonic()
    assert rt.command(timeout=0.3) == {"command": "none", "id": 0}
    assert 0.25 < time.monotonic() - started < 5
    assert session(api, run)["idle_deadline"] is None


def test_resume_round_trip_with_a_failed_try_in_between(api: Api) -> None:
    run, rt = start(api)
    session_id = rt.register().json()["id"]
    seen: list[tuple[str, str]] = []

    def runtime() -> None:
        first = rt.command(timeout=10)
        seen.append((first["command"], api.action(run, "a0")["phase"]))
        seen.append((session(api, run)["state"], ""))
        # the edited code raised: the session stays for another try
        rt.outcome(first["id"], ok=False, error=error_info("NameError in the edit"))
        second = rt.command(timeout=10)
        assert second["id"] == first["id"] + 1
        seen.append((second["command"], api.action(run, "a0")["phase"]))
        rt.outcome(second["id"], ok=True)
        rt.ended("resumed")  # (the runtime stops the IDE, then reports the result)
        assert rt.finished(value={"answer": 42}).json()["phase"] == "SUCCEEDED"

    thread = threading.Thread(target=runtime)
    thread.start()
    failed = api.client.post(f"/api/v1/runs/{run}/actions/a0/session/resume", json={})
    assert failed.status_code == 200, failed.text
    assert failed.json()["ok"] is False
    assert failed.json()["error"]["message"] == "NameError in the edit"
    assert api.action(run, "a0")["phase"] == "INTERACTIVE"
    assert session(api, run)["state"] == "ready"
    ok = api.client.post(f"/api/v1/runs/{run}/actions/a0/session/resume", json={})
    assert ok.status_code == 200 and ok.json()["ok"] is True, ok.text
    thread.join(10)
    assert seen == [("resume", "RUNNING"), ("resuming", ""), ("resume", "RUNNING")]
    assert api.wait_phase(run, "a0", "SUCCEEDED")
    assert api.client.get(f"/api/v1/runs/{run}/actions/a0/outputs").json() == {
        "value": {"answer": 42}
    }
    ended = session(api, run)
    assert ended["id"] == session_id and ended["state"] == "ended"
    assert ended["end_reason"] == "resumed" and ended["ended_at"] is not None
    assert ended["idle_deadline"] is None
    phases = [e.phase for e in api.plane.runs.events_after(0, run) if e.action == "a0"]
    assert phases == [
        "QUEUED",
        "RUNNING",
        "INTERACTIVE",
        "RUNNING",
        "INTERACTIVE",
        "RUNNING",
        "SUCCEEDED",
    ]
    # the session is over: nothing to resume, and a repeated report changes nothing
    again = api.client.post(f"/api/v1/runs/{run}/actions/a0/session/resume", json={})
    assert again.status_code == 409
    # nor can its runtime say anything more: its credential died with the attempt
    r = api.client.post(
        f"/api/v1/runs/{run}/actions/a0/session/ended", json={"reason": "x"}, headers=rt.headers
    )
    assert r.status_code == 401


def test_a_second_resume_request_joins_the_pending_one(api: Api) -> None:
    run, rt = start(api)
    rt.register()
    first = resume_in_thread(api, run)
    command = rt.command(timeout=10)
    assert command["command"] == "resume"
    second = resume_in_thread(api, run)
    time.sleep(0.2)
    rt.outcome(command["id"], ok=True)
    assert done(first).json() == done(second).json() == {"id": 1, "ok": True, "error": None}


def test_resume_needs_an_interactive_action(api: Api) -> None:
    plain = api.create_run()["name"]
    api.job(plain, "a0", 1)
    r = api.client.post(f"/api/v1/runs/{plain}/actions/a0/session/resume", json={})
    assert r.status_code == 409 and "not INTERACTIVE" in r.json()["detail"]
    run, rt = start(api)  # interactive, but its IDE is not registered yet
    api.wait_phase(run, "a0", "RUNNING")
    r = api.client.post(f"/api/v1/runs/{run}/actions/a0/session/resume", json={})
    assert r.status_code == 409 and "RUNNING" in r.json()["detail"]
    assert api.client.post("/api/v1/runs/nope/actions/a0/session/resume", json={}).status_code == (
        404
    )


def test_giving_up_fails_the_action(api: Api) -> None:
    run, rt = start(api)
    rt.register()
    pending = resume_in_thread(api, run, fail=True)
    command = rt.command(timeout=10)
    assert command["command"] == "fail"
    assert api.action(run, "a0")["phase"] == "INTERACTIVE"  # giving up runs nothing
    rt.outcome(command["id"], ok=True)
    error = error_info("given up in the session", type="SessionFailed")
    assert rt.finished(error=error).json()["phase"] == "FAILED"
    assert done(pending).json()["ok"] is True
    assert api.action(run, "a0")["error"]["type"] == "SessionFailed"


def test_a_resume_waiter_ends_when_the_runtime_dies(api: Api) -> None:
    api.plane.runs.system_retries = 0  # a lost attempt fails the action at once
    run, rt = start(api)
    rt.register()
    pending = resume_in_thread(api, run)
    assert rt.command(timeout=10)["command"] == "resume"
    api.exit(rt.job.id, -9)  # the runtime was killed while resuming: no outcome will come
    outcome = done(pending).json()
    assert outcome["ok"] is False and outcome["error"]["type"] == "WorkerLostError"
    assert api.action(run, "a0")["phase"] == "FAILED"
    ended = session(api, run)
    assert ended["state"] == "ended" and "worker lost" in ended["end_reason"]
    # its credential died with the attempt (the runtime takes that as an abort)
    assert rt.command_status() == 401


def test_idle_is_reported_after_max_idle_seconds(api: Api) -> None:
    run, rt = start(api)
    started = time.monotonic()  # before: a slow answer to the registration eats the 0.5 s
    rt.register(max_idle_seconds=0.5)
    assert rt.command(timeout=10)["command"] == "idle"
    assert 0.4 < time.monotonic() - started < 5


def test_activity_postpones_idle_and_is_written_in_batches(api: Api) -> None:
    run, rt = start(api)
    info = rt.register(max_idle_seconds=1.0).json()
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            api.plane.sessions.touch(info["id"])
            time.sleep(0.1)

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        assert rt.command(timeout=2.0)["command"] == "none"  # 2 s > 1 s idle limit
        seen = session(api, run)  # in-memory activity shows before it is written
        assert _at(seen["last_activity_at"]) > _at(info["last_activity_at"])
    finally:
        stop.set()
        thread.join()
    last_touch = api.plane.sessions.activity(info["id"])
    api.plane.sessions.flush()  # (or the plane's own flusher did, meanwhile)
    with api.plane.db.read() as s:
        row = s.get(InteractiveSession, info["id"])
        assert row is not None and row.last_activity_at > _at(info["last_activity_at"])
        assert last_touch is None or row.last_activity_at == last_touch
    assert api.plane.sessions.flush() == 0  # nothing new: no write
    started = time.monotonic()
    assert rt.command(timeout=10)["command"] == "idle"
    assert time.monotonic() - started < 3


def test_a_replaced_sessions_activity_never_counts(api: Api) -> None:
    run, rt = start(api)
    old = rt.register(max_idle_seconds=1.0).json()
    new = rt.register(max_idle_seconds=1.0).json()  # the IDE was restarted
    assert new["id"] != old["id"]
    with api.plane.db.read() as s:
        row = s.get(InteractiveSession, old["id"])
        assert row is not None and row.state == "ended" and new["id"] in (row.end_reason or "")
    stop = threading.Event()

    def old_tab_still_talking() -> None:
        while not stop.is_set():
            api.plane.sessions.touch(old["id"])
            api.plane.sessions.flush()
            time.sleep(0.05)

    thread = threading.Thread(target=old_tab_still_talking)
    thread.start()
    try:
        started = time.monotonic()
        assert rt.command(timeout=10)["command"] == "idle"
        assert time.monotonic() - started < 3
        assert session(api, run)["id"] == new["id"]
    finally:
        stop.set()
        thread.join()
    with api.plane.db.read() as s:
        row = s.get(InteractiveSession, new["id"])
        assert row is not None
        assert row.last_activity_at == _at(new["last_activity_at"])


def test_a_restarted_attempt_gets_a_new_session(api: Api) -> None:
    name = api.create_run(
        task_spec(interactive={"kind": "vscode"}, retries={"count": 1, "backoff_s": 0})
    )["name"]
    rt = Runtime(api, name, "a0")
    first = rt.register(max_idle_seconds=1.0).json()
    api.exit(rt.job.id, -9)  # the worker died while the session was open
    assert api.wait_phase(name, "a0", "RUNNING")["attempts"][-1]["number"] == 2
    closed = session(api, name)
    assert closed["id"] == first["id"] and closed["state"] == "ended"
    rt2 = Runtime(api, name, "a0", attempt=2)
    assert rt.register().status_code == 401  # attempt 1 is over: so is its credential
    second = rt2.register(max_idle_seconds=1.0).json()
    api.plane.sessions.touch(first["id"])  # late traffic of the old one: ignored
    api.plane.sessions.flush()
    assert session(api, name)["id"] == second["id"]
    assert session(api, name)["last_activity_at"] == second["last_activity_at"]
    assert rt2.command(timeout=10)["command"] == "idle"


# -- ending ---------------------------------------------------------------------------------


def test_a_session_ends_with_its_process_when_the_runtime_does_not_say(api: Api) -> None:
    run, rt = start(api)
    rt.register()
    # idle: the runtime reports a failure and is killed before it reports the session ended
    idle = error_info("idle for 3600 s", type="SessionIdle", kind="system")
    assert rt.finished(error=idle).json()["phase"] == "FAILED"
    assert session(api, run)["state"] == "ready"
    api.exit(rt.job.id, -9)
    ended = api.wait_for(lambda: (s := session(api, run))["state"] == "ended" and s)
    assert ended["end_reason"] == "attempt 1 ended (FAILED) and its process exited"


def test_abort_one_action_and_its_descendants(api: Api) -> None:
    run = api.create_run()["name"]
    api.job(run, "a0", 1)
    api.create_child(run, "b", task=interactive_task())
    api.create_child(run, "c")
    b = Runtime(api, run, "b")
    b.register()
    api.wait_phase(run, "b", "INTERACTIVE")
    api.create_child(run, "b-1", parent="b")
    pending = resume_in_thread(api, run, "b")
    assert b.command(timeout=10)["command"] == "resume"
    r = api.client.post(f"/api/v1/runs/{run}/actions/b/abort")
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["phase"] == "ABORTED" and info["error"]["kind"] == "aborted"
    assert "aborted by 'admin'" in info["error"]["message"]
    assert info["session"]["state"] == "ended" and "aborted" in info["session"]["end_reason"]
    assert api.action(run, "b-1")["phase"] == "ABORTED"
    assert api.action(run, "c")["phase"] in ("QUEUED", "RUNNING")
    assert api.action(run, "a0")["phase"] == "RUNNING"
    assert f"{run}/b/1" in api.executor.cancelled
    assert b.command_status() == 401
    assert done(pending).json()["ok"] is False  # the waiter ends with the attempt
    # aborting again changes nothing; aborting the root ends the run
    assert api.client.post(f"/api/v1/runs/{run}/actions/b/abort").json()["phase"] == "ABORTED"
    assert api.client.post(f"/api/v1/runs/{run}/actions/a0/abort").json()["phase"] == "ABORTED"
    assert api.client.get(f"/api/v1/runs/{run}").json()["phase"] == "ABORTED"
    assert api.action(run, "c")["phase"] == "ABORTED"
    assert api.client.post(f"/api/v1/runs/{run}/actions/zz/abort").status_code == 404


def test_sessions_are_stored_with_their_token(api: Api) -> None:
    # the token must reach the proxy (and nothing else): it is stored, never listed
    run, rt = start(api)
    info = rt.register().json()
    with api.plane.db.read() as s:
        row = s.scalar(select(InteractiveSession).where(InteractiveSession.id == info["id"]))
        assert row is not None and row.token == SECRET
    route = api.plane.sessions.route(info["id"])
    assert route.token == SECRET and SECRET not in repr(route)


@pytest.mark.parametrize("path", ["command", "outcome", "ended"])
def test_only_the_runtime_answers_for_a_session(api: Api, path: str) -> None:
    run, rt = start(api)
    rt.register()
    key = api.client.post(
        "/api/v1/api-keys", json={"name": "bob", "projects": {"default": "member"}}
    ).json()["key"]
    headers = {"Authorization": f"Bearer {key}"}
    base = f"/api/v1/runs/{run}/actions/a0/session"
    if path == "command":
        r = api.client.get(f"{base}/command?timeout=0", headers=headers)
    elif path == "outcome":
        r = api.client.post(f"{base}/outcome", json={"id": 1, "ok": True}, headers=headers)
    else:
        r = api.client.post(f"{base}/ended", json={"reason": "x"}, headers=headers)
    assert r.status_code == 403
    # people may look and ask
    assert api.client.get(base, headers=headers).status_code == 200


def test_the_runtime_may_choose_the_session_id(api: Api) -> None:
    # Jupyter must be started with its URL (--ServerApp.base_url=/sessions/<id>/), so the
    # runtime picks the id before it registers
    run, rt = start(api)
    chosen = "Jup-yter_0123456789abcdef"
    first = rt.register(id=chosen)
    assert first.status_code == 200 and first.json()["id"] == chosen
    assert first.json()["url"] == f"/sessions/{chosen}/"
    again = rt.register(id=chosen)  # a retried request: the same session
    assert again.status_code == 200 and again.json() == first.json()
    assert rt.register(id="short").status_code == 422
    other, rt2 = start(api)
    r = rt2.register(id=chosen)
    assert r.status_code == 409 and "taken" in r.json()["detail"]
