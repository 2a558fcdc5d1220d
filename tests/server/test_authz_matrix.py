"""The authorisation matrix: every route of the server × every kind of caller.

The routes come from the app's route table, each with the policy it declares (``_authz``); a
route without a policy, or one this table has no request for, fails the test, so a new route
cannot be added without deciding who may call it. Each identity then calls each route on a
real run of project ``p`` and must be let in (any answer but 401/403 and the run's 404) or
kept out (401/403, or the 404 a run that does not exist gets, for whom cannot see ``p``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.routing import APIRoute

from loom.executors import Capacity
from loom.server._authz import POLICIES, Policy

from .conftest import Api, make_bundle, run_create, task_spec

IDENTITIES = (
    "nobody",
    "viewer-q",  # a viewer of another project
    "viewer-p",
    "member-q",  # a member of another project
    "member-p",
    "other-attempt",  # the runtime credential of another run's attempt (same project)
    "own-attempt",  # the credential of the attempt the route is about
    "admin",
)

#: Who each policy lets in, about run R of project p (its action a0, attempt 1).
ALLOWED: dict[Policy, set[str]] = {
    Policy.PUBLIC: set(IDENTITIES),
    Policy.ANY: set(IDENTITIES) - {"nobody"},
    Policy.SIGNED_IN: {"viewer-q", "viewer-p", "member-q", "member-p", "admin"},
    Policy.ADMIN: {"admin"},
    Policy.MEMBER_SOMEWHERE: {"member-q", "member-p", "other-attempt", "own-attempt", "admin"},
    Policy.RUN_VIEWER: {"viewer-p", "member-p", "own-attempt", "admin"},
    Policy.RUN_MEMBER: {"member-p", "admin"},
    Policy.ACTION_MEMBER: {"member-p", "own-attempt", "admin"},
    Policy.RUN_RUNTIME: {"own-attempt", "admin"},
    Policy.ACTION_RUNTIME: {"own-attempt", "admin"},
    Policy.ACTION_SECRETS: {"own-attempt"},
    Policy.ATTEMPT_RUNTIME: {"own-attempt", "admin"},
    Policy.ITEM_RUNTIME: {"own-attempt", "other-attempt", "admin"},  # items: see below
    # who may see a run of the bundle: both runs use the same code
    Policy.BUNDLE_READER: {"viewer-p", "member-p", "own-attempt", "other-attempt", "admin"},
    # data uploaded in p: its members upload, who has a role there (or runs there) reads
    Policy.DATA_WRITER: {"member-p", "own-attempt", "other-attempt", "admin"},
    Policy.DATA_READER: {"viewer-p", "member-p", "own-attempt", "other-attempt", "admin"},
}


@pytest.fixture
def capacity() -> Capacity:
    # every world's runs start at once: the matrix holds many
    return Capacity(slots=10_000, cpu=10_000.0, memory_bytes=1 << 50, disk_bytes=1 << 50)


_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


@dataclass
class World:
    """Run ``run`` of project p (action a0, attempt 1 running) and another run of p."""

    run: str
    other_run: str
    credentials: dict[str, str] = field(default_factory=dict)
    data: str = ""


def _socket(api: Api, run: str) -> str:
    """Where the IDE of the run's a0 (attempt 1) may listen."""
    return str(api.plane.session_dir(run, "a0", 1) / "ide.sock")


def make_world(api: Api, keys: dict[str, str], session: bool = True) -> World:
    task = task_spec(interactive={"kind": "vscode"})
    run = api.create_run(task, project="p")["name"]
    other = api.create_run(task, project="p")["name"]
    world = World(run, other)
    world.credentials = {
        **keys,
        "own-attempt": api.job(run, "a0", 1).credential,
        "other-attempt": api.job(other, "a0", 1).credential,
    }
    if session:
        r = api.client.post(
            f"/api/v1/runs/{run}/actions/a0/session",
            json={"attempt": 1, "kind": "vscode", "socket": _socket(api, run), "workspace": "/w"},
            headers={"Authorization": f"Bearer {world.credentials['own-attempt']}"},
        )
        assert r.status_code == 200, r.text
    return world


@dataclass(frozen=True)
class Case:
    """How to call one route: its body and query, whether it changes what it touches (then
    every identity gets a world of its own), and the rule it follows if it is more specific
    than the route's policy (``/events?run=``), or who it lets in where the route decides by
    what the request names (``POST /runs``: the body's project)."""

    declared: Policy  # what the route must declare: this table, not the code, says who may
    body: Callable[[Api, World], Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    fresh: bool = False
    session: bool = True
    content: Callable[[Api, World], bytes] | None = None
    policy: Policy | None = None
    allowed: frozenset[str] | None = None  # a rule of the route's own, beyond its policy


def _attempt(world: World, **extra: Any) -> dict[str, Any]:
    return {"run": world.run, "action": "a0", "attempt": 1, **extra}


P = "/api/v1"
CASES: dict[tuple[str, str], Case] = {
    ("GET", f"{P}/health"): Case(Policy.PUBLIC),
    ("POST", f"{P}/login"): Case(Policy.PUBLIC, body=lambda api, w: {"api_key": api.admin_key}),
    ("POST", f"{P}/logout"): Case(Policy.PUBLIC),
    ("GET", f"{P}/login/local"): Case(Policy.PUBLIC),
    # the test client is no browser on the server's machine: refused, whoever it is
    ("POST", f"{P}/login/local"): Case(Policy.PUBLIC, allowed=frozenset()),
    ("GET", f"{P}/openapi.json"): Case(Policy.SIGNED_IN),
    ("GET", f"{P}/whoami"): Case(Policy.ANY),
    ("POST", f"{P}/api-keys"): Case(
        Policy.ADMIN, body=lambda api, w: {"name": unique("k"), "admin": True}
    ),
    ("GET", f"{P}/api-keys"): Case(Policy.ADMIN),
    ("DELETE", f"{P}/api-keys/{{name}}"): Case(Policy.ADMIN, fresh=True),
    ("POST", f"{P}/projects"): Case(Policy.ADMIN, body=lambda api, w: {"name": unique("proj")}),
    ("GET", f"{P}/projects"): Case(Policy.SIGNED_IN),
    ("POST", f"{P}/secrets"): Case(
        Policy.ADMIN, body=lambda api, w: {"key": unique("s"), "value": "v"}
    ),
    ("GET", f"{P}/secrets"): Case(Policy.ADMIN),
    ("DELETE", f"{P}/secrets/{{key}}"): Case(Policy.ADMIN, fresh=True),
    ("GET", f"{P}/runs/{{run}}/actions/{{action}}/secrets"): Case(Policy.ACTION_SECRETS),
    ("PUT", f"{P}/bundles/{{digest}}"): Case(
        Policy.MEMBER_SOMEWHERE, content=lambda api, w: make_bundle()[1]
    ),
    ("HEAD", f"{P}/bundles/{{digest}}"): Case(Policy.MEMBER_SOMEWHERE),
    ("GET", f"{P}/bundles/{{digest}}"): Case(Policy.BUNDLE_READER),
    ("PUT", f"{P}/data/{{digest}}"): Case(
        Policy.DATA_WRITER, params={"project": "p"}, content=lambda api, w: b"hello"
    ),
    ("HEAD", f"{P}/data/{{digest}}"): Case(Policy.DATA_WRITER, params={"project": "p"}),
    ("GET", f"{P}/data/{{digest}}"): Case(Policy.DATA_READER),
    # image environments are shared: nothing is built for an empty list
    ("POST", f"{P}/images:build"): Case(
        Policy.MEMBER_SOMEWHERE, body=lambda api, w: {"images": []}
    ),
    ("GET", f"{P}/images"): Case(Policy.MEMBER_SOMEWHERE),
    ("DELETE", f"{P}/images/{{key}}"): Case(Policy.ADMIN, fresh=True),
    ("DELETE", f"{P}/images"): Case(
        Policy.ADMIN, params={"unused_since": "2000-01-01T00:00:00Z"}, fresh=True
    ),
    ("POST", f"{P}/runs"): Case(
        Policy.SIGNED_IN,
        body=lambda api, w: run_create(api.bundle, project="p"),
        allowed=frozenset({"member-p", "admin"}),  # a member of the body's project
    ),
    ("GET", f"{P}/runs"): Case(Policy.SIGNED_IN),
    ("GET", f"{P}/runs/{{run}}"): Case(Policy.RUN_VIEWER),
    ("POST", f"{P}/runs/{{run}}/abort"): Case(Policy.RUN_MEMBER, fresh=True),
    ("POST", f"{P}/runs/{{run}}/actions/{{action}}/abort"): Case(Policy.ACTION_MEMBER, fresh=True),
    ("GET", f"{P}/runs/{{run}}/actions"): Case(Policy.RUN_VIEWER),
    ("POST", f"{P}/runs/{{run}}/actions"): Case(
        Policy.RUN_RUNTIME,
        body=lambda api, w: {"name": unique("c"), "parent": "a0", "task": task_spec()},
    ),
    ("POST", f"{P}/runs/{{run}}/actions:batch"): Case(
        Policy.RUN_RUNTIME,
        body=lambda api, w: [{"name": unique("c"), "parent": "a0", "task": task_spec()}],
    ),
    ("POST", f"{P}/runs/{{run}}/actions:wait"): Case(
        Policy.RUN_VIEWER, body=lambda api, w: {"names": ["a0"], "timeout": 0}
    ),
    ("POST", f"{P}/attempts:heartbeat"): Case(
        Policy.ITEM_RUNTIME, body=lambda api, w: [_attempt(w)]
    ),
    ("POST", f"{P}/attempts:finish"): Case(
        Policy.ITEM_RUNTIME,
        body=lambda api, w: [_attempt(w, result={"outputs": {"value": 1}})],
        fresh=True,
    ),
    ("GET", f"{P}/runs/{{run}}/actions/{{action}}"): Case(Policy.RUN_VIEWER),
    ("GET", f"{P}/runs/{{run}}/actions/{{action}}/spec"): Case(Policy.ACTION_RUNTIME),
    ("GET", f"{P}/runs/{{run}}/actions/{{action}}/outputs"): Case(Policy.RUN_VIEWER),
    ("GET", f"{P}/runs/{{run}}/actions/{{action}}/inputs"): Case(Policy.RUN_VIEWER),
    ("GET", f"{P}/runs/{{run}}/actions/{{action}}/wait"): Case(
        Policy.RUN_VIEWER, params={"timeout": 0}
    ),
    ("POST", f"{P}/runs/{{run}}/actions/{{action}}/attempts/{{n}}/started"): Case(
        Policy.ATTEMPT_RUNTIME, fresh=True
    ),
    ("POST", f"{P}/runs/{{run}}/actions/{{action}}/attempts/{{n}}/heartbeat"): Case(
        Policy.ATTEMPT_RUNTIME
    ),
    ("POST", f"{P}/runs/{{run}}/actions/{{action}}/attempts/{{n}}/finished"): Case(
        Policy.ATTEMPT_RUNTIME, body=lambda api, w: {"outputs": {"value": 1}}, fresh=True
    ),
    ("PUT", f"{P}/runs/{{run}}/actions/{{action}}/attempts/{{n}}/checkpoint"): Case(
        Policy.ATTEMPT_RUNTIME, content=lambda api, w: b"state"
    ),
    # 404 "no attempt before attempt 1 saved a checkpoint": still let in
    ("GET", f"{P}/runs/{{run}}/actions/{{action}}/attempts/{{n}}/checkpoint"): Case(
        Policy.ATTEMPT_RUNTIME
    ),
    ("GET", f"{P}/runs/{{run}}/actions/{{action}}/attempts/{{n}}/checkpoint/info"): Case(
        Policy.ATTEMPT_RUNTIME
    ),
    ("GET", f"{P}/runs/{{run}}/actions/{{action}}/logs"): Case(Policy.RUN_VIEWER),
    ("PUT", f"{P}/runs/{{run}}/actions/{{action}}/report"): Case(
        Policy.ACTION_RUNTIME, content=lambda api, w: b"<p>report</p>"
    ),
    # 404 "has no report" before a runtime stores one: still let in
    ("GET", f"{P}/runs/{{run}}/actions/{{action}}/report"): Case(Policy.RUN_VIEWER),
    ("GET", f"{P}/events"): Case(Policy.ANY, params={"run": "{run}"}, policy=Policy.RUN_VIEWER),
    ("POST", f"{P}/runs/{{run}}/actions/{{action}}/session"): Case(
        Policy.ACTION_RUNTIME,
        body=lambda api, w: {
            "attempt": 1,
            "kind": "vscode",
            "socket": _socket(api, w.run),
            "workspace": "/w",
        },
        fresh=True,
        session=False,
    ),
    ("GET", f"{P}/runs/{{run}}/actions/{{action}}/session"): Case(Policy.RUN_VIEWER),
    ("POST", f"{P}/runs/{{run}}/actions/{{action}}/session/open"): Case(Policy.RUN_MEMBER),
    ("GET", f"{P}/runs/{{run}}/actions/{{action}}/session/command"): Case(
        Policy.ACTION_RUNTIME, params={"timeout": 0}
    ),
    # not interactive (no session): refused at once instead of waiting for a runtime
    ("POST", f"{P}/runs/{{run}}/actions/{{action}}/session/resume"): Case(
        Policy.ACTION_MEMBER, body=lambda api, w: {}, fresh=True, session=False
    ),
    ("POST", f"{P}/runs/{{run}}/actions/{{action}}/session/outcome"): Case(
        Policy.ACTION_RUNTIME, body=lambda api, w: {"id": 0, "ok": True}
    ),
    ("POST", f"{P}/runs/{{run}}/actions/{{action}}/session/ended"): Case(
        Policy.ACTION_RUNTIME, body=lambda api, w: {"reason": "x"}, fresh=True
    ),
    ("GET", f"{P}/views/runs"): Case(Policy.SIGNED_IN),
    ("GET", f"{P}/views/runs/{{run}}"): Case(Policy.RUN_VIEWER),
    ("GET", f"{P}/views/runs/{{run}}/actions/{{action}}"): Case(Policy.RUN_VIEWER),
    ("GET", f"{P}/runs/{{run}}/actions/{{action}}/files"): Case(
        Policy.RUN_VIEWER, params={"of": "inputs", "path": "x"}
    ),
    ("POST", f"{P}/runs/{{run}}/actions/{{action}}/debug"): Case(Policy.RUN_MEMBER, fresh=True),
    ("GET", "/"): Case(Policy.PUBLIC),
    ("GET", "/runs"): Case(Policy.PUBLIC),
    ("GET", "/runs/{rest:path}"): Case(Policy.PUBLIC),
    ("GET", "/keys"): Case(Policy.PUBLIC),
    ("GET", "/secrets"): Case(Policy.PUBLIC),
    ("GET", "/login"): Case(Policy.PUBLIC),
    ("GET", "/static/{name}"): Case(Policy.PUBLIC),
}


def _policies(dependant: Any) -> list[Policy]:
    found = []
    for sub in dependant.dependencies:
        if sub.call in POLICIES:
            found.append(POLICIES[sub.call])
        found += _policies(sub)
    return found


def _flat(routes: list[Any]) -> Iterator[Any]:
    """The routes of an app, with those of included routers (which FastAPI keeps nested;
    ours are included without a prefix of their own)."""
    for route in routes:
        nested = getattr(route, "original_router", None)
        if nested is not None:
            yield from _flat(nested.routes)
        else:
            yield route


def routes(api: Api) -> list[tuple[str, str, Policy]]:
    """Every (method, path, policy) of the app; fails for a route without exactly one."""
    table = []
    for route in _flat(api.client.app.routes):  # type: ignore[attr-defined]
        if not isinstance(route, APIRoute):
            continue
        policies = set(_policies(route.dependant))
        assert len(policies) == 1, f"{route.methods} {route.path} declares {policies or 'none'}"
        (policy,) = policies
        methods = route.methods - {"HEAD"} if "GET" in route.methods else route.methods
        table += [(method, route.path, policy) for method in sorted(methods)]
    return table


def _setup(api: Api) -> dict[str, str]:
    for project in ("p", "q"):
        assert api.client.post("/api/v1/projects", json={"name": project}).status_code == 201
    keys = {"admin": api.admin_key}
    for identity in ("viewer-q", "viewer-p", "member-q", "member-p"):
        role, project = identity.split("-")
        r = api.client.post(
            "/api/v1/api-keys", json={"name": identity, "projects": {project: role}}
        )
        assert r.status_code == 201, r.text
        keys[identity] = r.json()["key"]
    return keys


def _call(
    api: Api, method: str, path: str, case: Case, world: World, identity: str
) -> tuple[int, str]:
    values = {
        "run": world.run,
        "action": "a0",
        "n": "1",
        "rest": world.run,
        "name": "app.js",
    }
    if path.startswith(f"{P}/bundles/"):
        values["digest"] = api.bundle
    elif path.startswith(f"{P}/data/"):
        values["digest"] = world.data
    if path == f"{P}/api-keys/{{name}}":
        victim = {"name": unique("victim"), "admin": True}
        values["name"] = api.client.post("/api/v1/api-keys", json=victim).json()["name"]
    if path == f"{P}/images/{{key}}":
        values["key"] = "0" * 32  # (none is built here: an admin is told so, 404)
    if path == f"{P}/secrets/{{key}}":
        values["key"] = unique("sec")
        body = {"key": values["key"], "value": "v"}
        assert api.client.post("/api/v1/secrets", json=body).status_code == 201
    url = path.replace(":path}", "}").format(**values)
    params = {k: str(v).format(**values) for k, v in case.params.items()}
    headers = {}
    if identity != "nobody":
        headers["Authorization"] = f"Bearer {world.credentials[identity]}"
    kwargs: dict[str, Any] = {"params": params, "headers": headers}
    if case.body is not None:
        kwargs["json"] = case.body(api, world)
    if case.content is not None:
        kwargs["content"] = case.content(api, world)
    if path == f"{P}/events":  # a stream: its status is all we need
        with api.anon.stream(method, url, **kwargs) as r:
            return r.status_code, "" if r.status_code == 200 else r.read().decode()
    r = api.anon.request(method, url, **kwargs)
    return r.status_code, r.text


def test_every_route_has_a_policy_and_a_case(api: Api) -> None:
    table = routes(api)
    declared = {(m, p) for m, p, _ in table}
    assert declared == set(CASES), (
        f"routes without a case: {sorted(declared - set(CASES))}; "
        f"cases without a route: {sorted(set(CASES) - declared)}"
    )
    wrong = [
        f"{m} {p} declares {policy}, not {CASES[(m, p)].declared}"
        for m, p, policy in table
        if policy != CASES[(m, p)].declared
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_matrix(api: Api) -> None:
    keys = _setup(api)
    shared = make_world(api, keys)
    digest = "sha256:" + __import__("hashlib").sha256(b"hello").hexdigest()
    r = api.client.put(f"/api/v1/data/{digest}", params={"project": "p"}, content=b"hello")
    assert r.status_code == 200, r.text
    shared.data = digest
    wrong: list[str] = []
    for method, path, declared in routes(api):
        case = CASES[(method, path)]
        assert declared == case.declared, f"{method} {path} declares {declared}"
        policy = case.policy or declared
        for identity in IDENTITIES:
            world = shared
            if case.fresh:
                world = make_world(api, keys, session=case.session)
                world.data = digest
            status, text = _call(api, method, path, case, world, identity)
            # a run (or its code) that the caller may not see is one that does not exist
            hidden = status == 404 and (
                f"run {world.run!r} not found" in text
                or "project 'p' not found" in text
                or policy in (Policy.BUNDLE_READER, Policy.DATA_READER)
                or (policy == Policy.DATA_WRITER and method == "HEAD")  # (no body to tell)
            )
            let_in = status not in (401, 403) and not hidden
            allowed = ALLOWED[policy] if case.allowed is None else case.allowed
            if let_in != (identity in allowed):
                wrong.append(f"{method} {path} [{policy}] as {identity}: {status} {text[:120]}")
            elif not let_in and identity == "nobody" and status != 401 and policy != Policy.PUBLIC:
                wrong.append(f"{method} {path} without a credential: {status}, not 401")
            elif (
                not let_in
                and policy.value.startswith(("run-", "action-", "attempt-"))
                and identity in ("viewer-q", "member-q")
                and not hidden
            ):
                wrong.append(f"{method} {path} as {identity}: {status}, not the run's 404")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_batch_items_need_their_own_attempts_credential(api: Api) -> None:
    keys = _setup(api)
    world = make_world(api, keys)
    other = {"Authorization": f"Bearer {world.credentials['other-attempt']}"}
    forged = [_attempt(world, result={"outputs": {"value": 1337}})]
    r = api.anon.post("/api/v1/attempts:finish", json=forged, headers=other)
    assert r.status_code == 200 and r.json()[0]["status"] == 403
    r = api.anon.post("/api/v1/attempts:heartbeat", json=[_attempt(world)], headers=other)
    assert r.json()[0]["status"] == 403
    # with the attempt's own credential in the item (a warm worker's report), it is taken
    own = world.credentials["own-attempt"]
    item = [_attempt(world, result={"outputs": {"value": 7}}, credential=own)]
    r = api.anon.post("/api/v1/attempts:finish", json=item, headers=other)
    assert r.json()[0]["status"] == 200
    assert api.action(world.run, "a0")["phase"] == "SUCCEEDED"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_listings_show_only_the_callers_projects(api: Api) -> None:
    keys = _setup(api)
    world = make_world(api, keys)
    theirs = api.create_run(project="q")["name"]
    for identity, sees in (("viewer-q", False), ("member-q", False), ("viewer-p", True)):
        headers = {"Authorization": f"Bearer {keys[identity]}"}
        runs = [r["name"] for r in api.anon.get("/api/v1/runs", headers=headers).json()]
        page = api.anon.get("/api/v1/views/runs", headers=headers).json()
        projects = [p["name"] for p in api.anon.get("/api/v1/projects", headers=headers).json()]
        assert (world.run in runs) is sees and (theirs in runs) is not sees
        assert (world.run in [r["name"] for r in page["runs"]]) is sees
        assert page["total"] == (2 if sees else 1)
        assert ("p" in projects) is sees and "default" not in projects
        r = api.anon.get("/api/v1/runs", params={"project": "p"}, headers=headers)
        assert r.status_code == (200 if sees else 404)
        # the event stream from the start: p's runs came first, but only for who sees them
        params = {"after": 0}
        with api.anon.stream("GET", "/api/v1/events", params=params, headers=headers) as stream:
            first = next(line for line in stream.iter_lines() if line.startswith("data:"))
        assert json.loads(first[5:])["run"] == (world.run if sees else theirs)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_batch_whose_bearer_attempt_has_ended_still_delivers_the_others(api: Api) -> None:
    """A warm worker's bearer is one of its attempts' credentials: when that attempt has just
    ended, the batch must still reach the server, each item judged by its own credential."""
    keys = _setup(api)
    world = make_world(api, keys)
    ended = world.credentials["other-attempt"]
    done: list[dict[str, Any]] = [
        {"run": world.other_run, "action": "a0", "attempt": 1, "credential": ended}
    ]
    bearer = {"Authorization": f"Bearer {ended}"}
    result = [{**done[0], "result": {"outputs": {"value": 1}}}]
    r = api.anon.post("/api/v1/attempts:finish", json=result, headers=bearer)
    assert r.json()[0]["status"] == 200
    assert api.action(world.other_run, "a0")["phase"] == "SUCCEEDED"
    own = world.credentials["own-attempt"]
    beat = [_attempt(world, credential=own)]
    r = api.anon.post("/api/v1/attempts:heartbeat", json=beat, headers=bearer)
    assert r.status_code == 200, r.text
    assert r.json()[0]["status"] == 200
    item = [_attempt(world, result={"outputs": {"value": 7}}, credential=own)]
    r = api.anon.post("/api/v1/attempts:finish", json=item, headers=bearer)
    assert r.status_code == 200, r.text
    assert r.json()[0]["status"] == 200
    assert api.action(world.run, "a0")["phase"] == "SUCCEEDED"
    # the ended attempt's own items are refused one by one, not the batch
    r = api.anon.post("/api/v1/attempts:heartbeat", json=done, headers=bearer)
    assert r.status_code == 200 and r.json()[0]["status"] == 409
    # a bearer that is not genuine is still refused outright
    forged = {"Authorization": f"Bearer {ended[:-4]}AAAA"}
    r = api.anon.post("/api/v1/attempts:heartbeat", json=beat, headers=forged)
    assert r.status_code == 401
