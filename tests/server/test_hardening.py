"""What the server refuses at the wire, and what it survives: NUL bytes, non-finite numbers,
negative and oversized values (422 naming the field, never a 500 from the database), retry
policies whose backoff would overflow, one bad attempt among many, validation errors that
would echo a secret, a data directory others could read, bundles whose links lead out, and
the error responses the OpenAPI document owes its clients."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import loom
from loom import wire
from loom.server._runs import ProcessExit
from tests.conftest import start_server
from tests.server.conftest import Api, error_info, make_bundle, run_create, task_spec


def _post_json(api: Api, path: str, body: Any, client: Any = None) -> Any:
    """POST ``body`` as JSON that may hold NaN or Infinity (which httpx's ``json=`` refuses)."""
    return (client or api.client).post(
        path, content=json.dumps(body), headers={"Content-Type": "application/json"}
    )


def _refused(r: Any, *loc: str | int) -> None:
    """A 422 whose detail names the field at ``loc`` (under the body, query or path)."""
    assert r.status_code == 422, r.text
    locs = [tuple(e["loc"]) for e in r.json()["detail"]]
    assert any(found[-len(loc) :] == loc for found in locs), (loc, locs)


@pytest.fixture
def run(api: Api) -> str:
    """A run whose root action a0 is RUNNING (children may be created under it)."""
    name: str = api.create_run()["name"]
    api.job(name, "a0", 1)
    return name


# -- 1. validation at the wire --------------------------------------------------------------


def _with_task(api: Api, **task: Any) -> tuple[str, dict[str, Any]]:
    return "/api/v1/runs", run_create(api.bundle, task=task_spec(**task))


def _run_of(api: Api, **task: Any) -> Any:
    """POST a run of a task with these fields (as JSON that may hold NaN)."""
    return _post_json(api, *_with_task(api, **task))


NUL = "a\x00b"
BODY_STRINGS: list[tuple[str, Callable[[Api], tuple[str, Any]], tuple[str | int, ...]]] = [
    ("project", lambda api: ("/api/v1/projects", {"name": "p", "description": NUL}),
     ("description",)),
    ("secret", lambda api: ("/api/v1/secrets", {"key": "k", "value": NUL}), ("value",)),
    ("secret-scope", lambda api: ("/api/v1/secrets", {"key": "k", "value": "v", "project": NUL}),
     ("project",)),
    ("run-project", lambda api: ("/api/v1/runs", {**run_create(api.bundle), "project": NUL}),
     ("project",)),
    ("task-name", lambda api: _with_task(api, name=NUL), ("task", "name")),
    ("env-var-key", lambda api: _with_task(api, env_vars={NUL: "v"}), ("env_vars", NUL, "[key]")),
    ("env-var-value", lambda api: _with_task(api, env_vars={"K": NUL}), ("env_vars", "K")),
    ("secret-ref", lambda api: _with_task(api, secrets=[{"key": NUL}]), ("secrets", 0, "key")),
    ("run-env", lambda api: ("/api/v1/runs", {**run_create(api.bundle), "env_vars": {"K": NUL}}),
     ("env_vars", "K")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "loc"), [(m, loc) for _, m, loc in BODY_STRINGS], ids=[i for i, _, _ in BODY_STRINGS]
)
def test_a_nul_in_any_body_string_is_422_naming_the_field(
    api: Api, make: Callable[[Api], tuple[str, Any]], loc: tuple[str | int, ...]
) -> None:
    path, body = make(api)
    _refused(api.client.post(path, json=body), *loc)


def test_a_nul_in_a_child_action_or_a_runtime_report_is_422(api: Api, run: str) -> None:
    child = {"name": "c", "parent": "a0", "task": task_spec(), "group": [NUL]}
    _refused(api.client.post(f"/api/v1/runs/{run}/actions", json=child), "group", 0)
    batch = [{"name": "c", "parent": NUL, "task": task_spec()}]
    _refused(api.client.post(f"/api/v1/runs/{run}/actions:batch", json=batch), 0, "parent")
    beats = [{"run": run, "action": NUL, "attempt": 1}]
    _refused(api.client.post("/api/v1/attempts:heartbeat", json=beats), 0, "action")
    ended = api.client.post(f"/api/v1/runs/{run}/actions/a0/session/ended", json={"reason": 1})
    assert ended.status_code == 422  # (a reason with a NUL is kept: see below)


def test_an_unauthenticated_login_with_a_nul_is_422_not_500(api: Api) -> None:
    # shaped like a key, so that the server would look its id up in the database
    r = api.anon.post("/api/v1/login", json={"api_key": "loom_ab\x00cd_secret"})
    _refused(r, "body", "api_key")


@pytest.mark.parametrize(
    "url,loc",
    [
        ("/api/v1/runs/a%00b", ["path"]),
        ("/api/v1/runs/x/actions/a%00/spec", ["path"]),
        ("/api/v1/runs?project=a%00b", ["query", "project"]),
        ("/api/v1/views/runs?q=%00", ["query", "q"]),
        ("/api/v1/secrets?domain=x%00", ["query", "domain"]),
        ("/sessions/abc%00def/", ["path"]),  # the proxy looks sessions up by id
    ],
)
def test_a_nul_in_a_path_or_query_is_422_before_routing(api: Api, url: str, loc: list[str]) -> None:
    r = api.client.get(url)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc
    assert r.status_code == 422 and api.anon.get(url).status_code == 422  # before any key check


def test_a_raw_nul_in_a_query_string_is_422(api: Api) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "GET", "path": "/api/v1/runs", "raw_path": b"/api/v1/runs",
        "query_string": b"project=a\x00b", "headers": [], "scheme": "http", "http_version": "1.1",
        "server": ("testserver", 80), "client": ("127.0.0.1", 1), "root_path": "",
    }  # fmt: skip
    assert api.client.portal is not None
    api.client.portal.call(api.client.app, scope, receive, send)
    assert sent[0]["status"] == 422


NON_FINITE: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("timeout", {"timeout_s": float("nan")}, ("task", "timeout_s")),
    ("cpu", {"resources": {"cpu": float("inf")}}, ("resources", "cpu")),
    ("backoff", {"retries": {"count": 1, "backoff_s": float("nan")}}, ("retries", "backoff_s")),
    ("factor", {"retries": {"backoff_factor": float("inf")}}, ("retries", "backoff_factor")),
    ("idle", {"interactive": {"max_idle_seconds": float("-inf")}},
     ("interactive", "max_idle_seconds")),
    ("ttl", {"reuse": {"idle_ttl_s": float("nan")}}, ("reuse", "idle_ttl_s")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("task", "loc"), [(t, loc) for _, t, loc in NON_FINITE], ids=[i for i, _, _ in NON_FINITE]
)
def test_nan_and_infinity_are_422_naming_the_field(
    api: Api, task: dict[str, Any], loc: tuple[str, ...]
) -> None:
    _refused(_run_of(api, **task), *loc)


def test_nan_and_infinity_in_values_are_422(api: Api, run: str) -> None:
    r = _post_json(api, "/api/v1/runs", run_create(api.bundle, inputs={"x": float("nan")}))
    assert r.status_code == 422 and "inputs" in r.json()["detail"], r.text
    child = {"name": "c", "parent": "a0", "task": task_spec(), "inputs": {"x": [float("inf")]}}
    r = _post_json(api, f"/api/v1/runs/{run}/actions", child)
    assert r.status_code == 422 and "inputs" in r.json()["detail"], r.text
    r = _post_json(
        api, f"/api/v1/runs/{run}/actions/a0/attempts/1/finished", {"outputs": {"value": -1e999}}
    )
    assert r.status_code == 422 and "outputs" in r.json()["detail"], r.text
    wait = {"names": ["a0"], "timeout": float("nan")}
    _refused(_post_json(api, f"/api/v1/runs/{run}/actions:wait", wait), "timeout")


NEGATIVE: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("timeout", {"timeout_s": -1}, ("task", "timeout_s")),
    ("cpu", {"resources": {"cpu": -0.5}}, ("resources", "cpu")),
    ("memory", {"resources": {"memory_bytes": -1}}, ("resources", "memory_bytes")),
    ("gpu", {"resources": {"gpu": -1}}, ("resources", "gpu")),
    ("disk", {"resources": {"disk_bytes": -1}}, ("resources", "disk_bytes")),
    ("count", {"retries": {"count": -1}}, ("retries", "count")),
    ("backoff", {"retries": {"backoff_s": -1}}, ("retries", "backoff_s")),
    ("factor", {"retries": {"backoff_factor": -2}}, ("retries", "backoff_factor")),
    ("max-backoff", {"retries": {"max_backoff_s": -1}}, ("retries", "max_backoff_s")),
    ("idle", {"interactive": {"max_idle_seconds": -5}}, ("interactive", "max_idle_seconds")),
    ("min-replicas", {"reuse": {"min_replicas": -1}}, ("reuse", "min_replicas")),
    ("max-replicas", {"reuse": {"max_replicas": 0}}, ("reuse", "max_replicas")),
    ("concurrency", {"reuse": {"concurrency": 0}}, ("reuse", "concurrency")),
    ("ttl", {"reuse": {"idle_ttl_s": -1}}, ("reuse", "idle_ttl_s")),
]


@pytest.mark.parametrize(
    ("task", "loc"), [(t, loc) for _, t, loc in NEGATIVE], ids=[i for i, _, _ in NEGATIVE]
)
def test_negative_amounts_are_422_naming_the_field(
    api: Api, task: dict[str, Any], loc: tuple[str, ...]
) -> None:
    _refused(_run_of(api, **task), *loc)


def test_strings_longer_than_their_columns_are_422(api: Api, run: str) -> None:
    long = "x" * 256
    for task, loc in [
        ({"name": "e." + long}, ("task", "name")),
        ({"attr": long}, ("task", "attr")),
        ({"env_vars": {long: "v"}}, ("env_vars", long, "[key]")),
        ({"secrets": [{"key": long}]}, ("secrets", 0, "key")),
    ]:
        _refused(_run_of(api, **task), *loc)
    _refused(_post_json(api, "/api/v1/runs", run_create(api.bundle, project="p" * 64)), "project")
    child = {"name": "c", "parent": "p" * 201, "task": task_spec()}
    _refused(api.client.post(f"/api/v1/runs/{run}/actions", json=child), "parent")
    child = {"name": "c", "parent": "a0", "group": [long], "task": task_spec()}
    _refused(api.client.post(f"/api/v1/runs/{run}/actions", json=child), "group", 0)
    secret = {"key": "k", "value": "v", "domain": "d" * 33}
    _refused(api.client.post("/api/v1/secrets", json=secret), "domain")


def test_nul_in_input_values_is_stored_as_json_and_comes_back(api: Api) -> None:
    name = api.create_run(inputs={"text": NUL})["name"]
    spec = api.client.get(f"/api/v1/runs/{name}/actions/a0/spec")
    assert spec.status_code == 200 and spec.json()["inputs"] == {"text": NUL}
    view = api.client.get(f"/api/v1/views/runs/{name}/actions/a0")
    assert view.status_code == 200 and view.json()["inputs"]["value"] == {"text": NUL}
    assert "--text 'a\\x00b'" in view.json()["rerun"]  # (no command line holds a NUL)


def test_reports_of_failures_keep_a_nul_shown_as_text(api: Api) -> None:
    # a task may raise anything, an IDE may die saying anything: the report must get through
    name = api.create_run(task_spec(interactive={"kind": "vscode"}))["name"]
    runtime = {"Authorization": f"Bearer {api.job(name, 'a0', 1).credential}"}
    base = f"/api/v1/runs/{name}/actions/a0/session"
    socket = str(api.plane.session_dir(name, "a0", 1) / "ide.sock")
    body = {"attempt": 1, "kind": "vscode", "socket": socket, "workspace": "/w"}
    assert api.client.post(base, json=body, headers=runtime).status_code == 200
    r = api.client.post(f"{base}/ended", json={"reason": f"IDE: {NUL}"}, headers=runtime)
    assert r.status_code == 200, r.text
    assert r.json()["end_reason"] == "IDE: a\\x00b"
    r = api.finish(name, "a0", 1, error=error_info(message=f"bad {NUL}", type="E\x00"))
    assert r.status_code == 200, r.text
    error = api.action(name, "a0")["error"]
    assert error["message"] == "bad a\\x00b" and error["type"] == "E\\x00"


# -- 2. retries whose backoff would overflow; one bad attempt among many --------------------


def test_the_backoff_rule_never_overflows() -> None:
    assert wire.retry_backoff_s(0.1, 2.0, 30.0, 1) == 0.1
    assert wire.retry_backoff_s(0.1, 2.0, 30.0, 3) == 0.4
    assert wire.retry_backoff_s(0.1, 2.0, 30.0, 1100) == 30.0
    assert wire.retry_backoff_s(1e300, 1e300, 1e308, 5) == wire.MAX_RETRY_BACKOFF_S
    # a power beyond a float, times a tiny (subnormal) backoff: under the cap all the same
    assert wire.retry_backoff_s(1e-320, 10.0, 1.0, 320) == pytest.approx(0.1, rel=1e-4)
    assert wire.retry_backoff_s(5.0, 0.5, 30.0, 3) == 1.25
    assert wire.retry_backoff_s(0.0, 1e300, 30.0, 9) == 0.0
    # the SDK's local retries follow the same rule
    assert loom.RetryStrategy(1100).delay(1100) == 30.0
    assert loom.RetryStrategy(5, backoff=1.0, backoff_factor=1e300).delay(3) == 30.0


never_capped = loom.TaskEnvironment("hardening")


@never_capped.task(retries=loom.RetryStrategy(3, backoff=1.0, max_backoff=float("inf")))
async def patient() -> None: ...


def test_the_sdk_sends_policies_and_errors_the_server_takes() -> None:
    from loom._controller._remote import error_info as sdk_error_info
    from loom._controller._remote import task_spec as sdk_task_spec

    # no cap locally means the rule's own cap remotely (JSON has no Infinity)
    retries = sdk_task_spec(patient, {}).retries
    assert retries.max_backoff_s == wire.MAX_RETRY_BACKOFF_S
    with pytest.raises(loom.errors.TaskDefinitionError, match="backoff_factor"):
        loom.RetryStrategy(1, backoff_factor=float("nan"))
    # a task's exception with a NUL in its message is still reported
    assert sdk_error_info(ValueError(NUL)).message == "a\\x00b"


OVERFLOWING = {"count": 5, "backoff_s": 0.001, "backoff_factor": 1e300, "max_backoff_s": 0.01}


def _fail_twice(api: Api) -> str:
    """A run whose attempts 1 and 2 failed; the third is running, and its failure would
    raise the factor to a power beyond a float."""
    name: str = api.create_run(task_spec(retries=OVERFLOWING))["name"]
    for attempt in (1, 2):
        api.job(name, "a0", attempt)
        assert api.finish(name, "a0", attempt, error=error_info()).status_code == 200
    api.job(name, "a0", 3)
    return name


@pytest.mark.parametrize("ending", ["report", "exit", "silence"])
def test_a_backoff_beyond_a_float_retries_after_the_cap(api: Api, ending: str) -> None:
    name = _fail_twice(api)
    if ending == "report":
        assert api.finish(name, "a0", 3, error=error_info()).status_code == 200
    elif ending == "exit":
        api.exit(f"{name}/a0/3", 1)
    else:
        assert api.plane.runs.lose_silent(0) == 1
    api.job(name, "a0", 4)  # retried, after at most max_backoff_s
    assert api.action(name, "a0")["attempts"][2]["phase"] == "FAILED"


@pytest.fixture
def breaks_on(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """Runs whose attempts the server fails to end (a bug, a lost connection...); a lost
    attempt fails its action at once."""
    api.plane.runs.system_retries = 0
    broken: set[str] = set()
    real = api.plane.runs._end_attempt

    def end_attempt(tx: Any, run: Any, *args: Any, **kwargs: Any) -> None:
        if run.name in broken:
            raise RuntimeError(f"cannot end an attempt of {run.name}")
        real(tx, run, *args, **kwargs)

    monkeypatch.setattr(api.plane.runs, "_end_attempt", end_attempt)
    yield broken


def test_one_attempt_that_cannot_be_lost_does_not_stop_the_sweep(
    api: Api, breaks_on: set[str]
) -> None:
    bad, good = (api.create_run()["name"] for _ in range(2))
    api.job(bad, "a0", 1)
    api.job(good, "a0", 1)
    breaks_on.add(bad)
    assert api.plane.runs.lose_silent(0) == 1
    assert api.action(good, "a0")["phase"] == "FAILED"
    assert api.action(bad, "a0")["phase"] == "RUNNING"  # tried again at the next sweep
    breaks_on.clear()
    assert api.plane.runs.lose_silent(0) == 1
    assert api.action(bad, "a0")["phase"] == "FAILED"


def test_one_exit_that_cannot_be_recorded_does_not_lose_the_others(
    api: Api, breaks_on: set[str]
) -> None:
    bad, good = (api.create_run()["name"] for _ in range(2))
    api.job(bad, "a0", 1)
    api.job(good, "a0", 1)
    breaks_on.add(bad)
    results = api.plane.runs.processes_exited(
        [ProcessExit(bad, "a0", 1, 1, "exited"), ProcessExit(good, "a0", 1, 1, "exited")]
    )
    assert results[0] is not None and "cannot end an attempt" in str(results[0])
    assert results[1] is None
    assert api.action(good, "a0")["phase"] == "FAILED"


# -- 3. validation errors never echo what was sent ------------------------------------------


def test_validation_errors_never_echo_a_secret_or_a_key(api: Api) -> None:
    value = "s3cr3t-" + "v" * wire.MAX_SECRET_BYTES  # too long: refused, by value
    r = api.client.post("/api/v1/secrets", json={"key": "bad key", "value": value})
    assert r.status_code == 422 and "s3cr3t" not in r.text
    assert {e["loc"][-1] for e in r.json()["detail"]} == {"key", "value"}
    r = api.client.post("/api/v1/secrets", json={"value": "s3cr3t"})  # the model's own error
    assert r.status_code == 422 and "s3cr3t" not in r.text
    r = api.anon.post("/api/v1/login", json={"key": api.admin_key})  # a misnamed field
    assert r.status_code == 422 and api.admin_key not in r.text
    r = api.anon.post("/api/v1/login", json={"api_key": [api.admin_key]})
    assert r.status_code == 422 and api.admin_key not in r.text
    for error in r.json()["detail"]:
        assert set(error) == {"loc", "msg", "type"}


# -- 4. the data directory and the database are the server's alone --------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.e2e
def test_the_data_directory_and_database_are_private(tmp_path: Path, loom_home: Path) -> None:
    data = tmp_path / "server-data"
    previous = os.umask(0o022)  # what most users have: new files readable by everyone
    try:
        server = start_server(data, home=loom_home)
        try:
            database = data / "server.db"
            assert _mode(data) == 0o700 and _mode(database) == 0o600
            sidecars = [data / "server.db-wal", data / "server.db-shm"]
            assert all(p.exists() and _mode(p) == 0o600 for p in sidecars)
        finally:
            server.stop()
        # a directory and database made readable since (by hand, an older version...)
        for path in (data, database, *[p for p in sidecars if p.exists()]):
            path.chmod(0o755 if path.is_dir() else 0o644)
        server = start_server(data, home=loom_home)
        try:
            assert _mode(data) == 0o700 and _mode(database) == 0o600
            assert all(_mode(p) == 0o600 for p in sidecars if p.exists())
        finally:
            server.stop()
    finally:
        os.umask(previous)


# -- 5. bundles whose links lead out, however indirectly ------------------------------------


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Any:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _file(name: str) -> Any:
    return tarfile.TarInfo(name)


def _bundle(*members: Any) -> tuple[str, bytes]:
    def add(archive: tarfile.TarFile) -> None:
        import io

        for info in members:
            archive.addfile(info, io.BytesIO(b"") if info.isfile() else None)

    return make_bundle(extra=add)


@pytest.mark.parametrize(
    "members",
    [
        # each link alone stays inside; followed, `up` is the root and `up/..` above it
        [_link("sub/up", ".."), _link("out", "sub/up/..")],
        [_link("out", "sub/up/.."), _link("sub/up", "..")],  # the same, in the other order
        [_link("a", "b"), _link("b", "sub/up/../etc"), _link("sub/up", "..")],
        # `out` looked like `sub` when it came; then `sub/up` made it the root's parent
        [_link("out", "sub/up/.."), _link("sub/up", ".."), _file("out/evil.py")],
        [_link("out", "sub/up/.."), _link("sub/up", ".."), _link("h", "out/x", tarfile.LNKTYPE)],
        [_link("loop", "loop2"), _link("loop2", "loop")],
    ],
    ids=["dotdot-after-link", "later-link", "chain", "through-dir", "hard-link", "loop"],
)
def test_link_chains_that_lead_out_are_rejected(api: Api, members: list[Any]) -> None:
    digest, data = _bundle(*members)
    r = api.client.put(f"/api/v1/bundles/{digest}", content=data)
    assert r.status_code == 400, r.text
    assert "outside" in r.json()["detail"] or "escapes" in r.json()["detail"]


def test_link_chains_inside_the_root_are_fine(api: Api) -> None:
    digest, data = _bundle(
        _file("pkg/mod.py"),
        _link("a", "b"),
        _link("b", "pkg"),
        _link("c", "a/mod.py"),
        _link("pkg/up", ".."),
        _link("again", "pkg/up/pkg/../flow.py"),
        _file("a/new.py"),  # through a link to a directory inside
        _link("hard", "b/mod.py", tarfile.LNKTYPE),
    )
    r = api.client.put(f"/api/v1/bundles/{digest}", content=data)
    assert r.status_code == 200, r.text


# -- 6. the OpenAPI document lists every operation's error responses ------------------------


def test_openapi_documents_the_error_responses(api: Api) -> None:
    doc = api.client.get("/api/v1/openapi.json").json()
    assert doc["components"]["schemas"]["ErrorBody"]["required"] == ["detail"]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" in responses, (method, path)
            if operation.get("security"):
                assert {"401", "403"} <= set(responses), (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            if "requestBody" in operation:
                assert "413" in responses, (method, path)
            for status, response in responses.items():
                if status[0] in "45":
                    assert response["content"]["application/json"]["schema"], (method, path)
    runs = doc["paths"]["/api/v1/runs"]["post"]["responses"]
    assert {"400", "401", "403", "404", "409", "413", "422"} <= set(runs)
    assert runs["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    resume = doc["paths"]["/api/v1/runs/{run}/actions/{action}/session/resume"]["post"]
    assert "504" in resume["responses"]
    assert "401" in doc["paths"]["/api/v1/login"]["post"]["responses"]
    assert "401" not in doc["paths"]["/api/v1/health"]["get"]["responses"]


def test_a_full_disk_is_a_507_that_says_so_and_records_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/srv/loom/objects/x")

    monkeypatch.setattr(api.plane.store, "put_file", full)
    monkeypatch.setattr(api.plane.store, "put_content", full)
    data = b"some bytes"
    digest = hashlib.sha256(data).hexdigest()
    r = api.client.put(f"/api/v1/data/{digest}", content=data)
    assert r.status_code == 507, r.text
    assert "storage is full" in r.json()["detail"] and "/srv/loom/objects/x" in r.json()["detail"]
    before = api.client.get("/api/v1/runs").json()
    # (inputs too large to be kept in their key: they go to the store)
    big = {"x": "y" * 1000}
    r = api.client.post("/api/v1/runs", json=run_create(api.bundle, inputs=big))
    assert r.status_code == 507 and "nothing of this request was recorded" in r.json()["detail"]
    assert api.client.get("/api/v1/runs").json() == before


def test_an_exit_that_cannot_be_recorded_is_tried_again_until_it_is(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    api.plane.runs.system_retries = 0  # a lost attempt fails the action at once
    run = api.create_run()["name"]
    job = api.job(run, "a0", 1)
    record = api.plane.runs.processes_exited
    failures = []

    def full_twice(exits: list[ProcessExit]) -> list[Any]:
        if len(failures) < 2:  # the disk is full for a moment
            failures.append(exits)
            raise OSError(errno.ENOSPC, "No space left on device")
        return record(exits)

    monkeypatch.setattr(api.plane.runs, "processes_exited", full_twice)
    api.exit(job.id, -9)  # returns once the exit is recorded
    assert len(failures) == 2
    # recorded, not dropped: the attempt is not left RUNNING, to run again after the
    # heartbeat timeout
    action = api.wait_phase(run, "a0", "FAILED")
    assert action["error"]["kind"] == "worker_lost"
