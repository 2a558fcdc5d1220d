"""The web UI's server side (SQLite and PostgreSQL): its pages and assets, the sign-in redirect,
the security headers, the endpoints it needs (pages of runs, a run view, action details, files,
the interactive re-run) and the one-click local sign-in with everything that refuses it."""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import socket
import warnings
from pathlib import Path
from typing import Any

import pytest

from loom import wire
from loom.server import _auth, _ui
from loom.server._auth import COOKIE_NAME, find_socket_owner, local_login_refusal, peer_uid
from tests.server.conftest import Api, error_info, task_spec
from tests.server.test_sessions import Runtime, interactive_task

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

UI_DIR = Path(_ui.__file__).parent / "ui"
PAGES = ["/", "/runs", "/runs/some-run", "/runs/some-run/a0-1", "/keys", "/secrets"]


def signed_in(api: Api, **kwargs: Any) -> TestClient:
    """A browser-like client holding the login cookie (and no key header)."""
    client = TestClient(api.client.app, **kwargs)
    r = client.post("/api/v1/login", json={"api_key": api.admin_key})
    assert r.status_code == 204, r.text
    return client


def make_run(api: Api, task: dict[str, Any] | None = None, **kwargs: Any) -> str:
    return str(api.create_run(task=task, **kwargs)["name"])


# -- pages and assets -------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_pages_send_a_browser_without_a_login_to_the_sign_in_page(api: Api, path: str) -> None:
    r = api.anon.get(path + "?x=1", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=" + re.sub("/", "%2F", path) + "%3Fx%3D1"
    # the API key header alone is no login for a page: browsers carry the cookie
    assert api.client.get(path, follow_redirects=False).status_code == 303


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_served_with_a_valid_login(api: Api, path: str) -> None:
    browser = signed_in(api)
    r = browser.get(path, follow_redirects=False)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    assert '<script type="module" src="/static/app.js?v=' in r.text


def test_a_forged_or_orphaned_cookie_is_no_login(api: Api) -> None:
    browser = signed_in(api)
    token = browser.cookies[COOKIE_NAME]
    forged = TestClient(api.client.app, cookies={COOKIE_NAME: token[:-2] + "xx"})
    assert forged.get("/runs", follow_redirects=False).status_code == 303
    # the key behind a login goes: so does the login
    created = api.client.post("/api/v1/api-keys", json={"name": "temp", "admin": True}).json()
    temp = TestClient(api.client.app)
    assert temp.post("/api/v1/login", json={"api_key": created["key"]}).status_code == 204
    assert temp.get("/runs", follow_redirects=False).status_code == 200
    assert api.client.delete("/api/v1/api-keys/temp").status_code == 204
    api.plane.keys._cache.clear()
    assert temp.get("/runs", follow_redirects=False).status_code == 303


def test_every_page_has_a_strict_content_security_policy(api: Api) -> None:
    for r in (api.anon.get("/login"), signed_in(api).get("/runs/x")):
        assert r.status_code == 200
        csp = dict(
            (d.split(" ", 1) + [""])[:2] for d in r.headers["content-security-policy"].split("; ")
        )
        assert csp["default-src"] == "'none'"
        for directive in ("script-src", "style-src", "connect-src", "font-src"):
            assert csp[directive] == "'self'", directive
        assert csp["img-src"] == "'self' data:"
        assert csp["frame-ancestors"] == "'none'" and csp["base-uri"] == "'none'"
        assert "unsafe" not in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"


def test_the_run_page_preloads_its_data_and_escapes_the_name(api: Api) -> None:
    browser = signed_in(api)
    page = browser.get("/runs/my-run/a0").text
    assert (
        '<link rel="preload" as="fetch" href="/api/v1/views/runs/my-run" crossorigin="anonymous">'
        in page
    )
    odd = browser.get('/runs/"><script>x</script>').text
    assert "<script>x" not in odd and "views/runs" not in odd


def test_assets_are_versioned_typed_cached_and_compressed(api: Api) -> None:
    page = api.anon.get("/login").text
    version = re.search(r"/static/app\.js\?v=([0-9a-f]+)", page)
    assert version is not None
    v = version.group(1)
    referenced = set(re.findall(r'"/static/([\w.-]+)\?v=' + v + '"', page))
    assert {"app.js", "app.css", "api.js", "dom.js", "run.js", "runs.js", "values.js"} <= referenced
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    types[".svg"] = "image/svg+xml"
    for name in referenced:
        r = api.anon.get(f"/static/{name}?v={v}")
        assert r.status_code == 200, name
        assert r.headers["content-type"] == types[Path(name).suffix]
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers["x-content-type-options"] == "nosniff"
        again = api.anon.get(f"/static/{name}?v={v}", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    # an unversioned (or stale) URL must be revalidated
    assert api.anon.get("/static/app.js").headers["cache-control"] == "no-cache"
    assert api.anon.get("/static/app.js?v=old").headers["cache-control"] == "no-cache"
    # modules import each other by versioned URLs too, so no stale mix is ever cached
    app_js = api.anon.get(f"/static/app.js?v={v}").text
    assert f'from "./run.js?v={v}"' in app_js and 'from "./run.js"' not in app_js
    # compressed for those who ask
    raw = api.anon.get(f"/static/run.js?v={v}", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers
    zipped = api.anon.get(f"/static/run.js?v={v}", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["vary"] == "Accept-Encoding"
    assert raw.content == zipped.content  # the client decoded it
    assert len(gzip.compress(raw.content)) < len(raw.content)
    for missing in ("/static/nope.js", "/static/index.html", "/static/..%2Fapp.js"):
        assert api.anon.get(missing).status_code == 404, missing


def test_the_assets_make_no_external_requests_and_never_inject_data_as_html() -> None:
    external = re.compile(
        r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import"""
    )
    for path in UI_DIR.iterdir():
        text = path.read_text()
        assert not external.search(text), path.name
        assert "https://" not in text and "http://" not in text.replace(
            'xmlns="http://www.w3.org/2000/svg"', ""
        ), path.name
        if path.suffix == ".js":
            # markup reaches the page through dom.js's escaping templates only
            for sink in ("insertAdjacentHTML", "outerHTML", "document.write", "eval(", "Function("):
                assert sink not in text, (path.name, sink)
            if path.name != "dom.js":
                assert ".innerHTML" not in text, path.name
        if path.suffix == ".html":
            assert "<script>" not in text and " style=" not in text and "<style" not in text


# -- the API needs a key -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/views/runs"),
        ("GET", "/api/v1/views/runs/r"),
        ("GET", "/api/v1/views/runs/r/actions/a0"),
        ("GET", "/api/v1/runs/r/actions/a0/files?of=inputs&path=/etc/passwd"),
        ("POST", "/api/v1/runs/r/actions/a0/debug"),
    ],
)
def test_the_ui_endpoints_need_a_key_or_the_cookie(api: Api, method: str, path: str) -> None:
    assert api.anon.request(method, path).status_code == 401
    expected = 200 if path == "/api/v1/views/runs" else 404  # no such run
    assert signed_in(api).request(method, path).status_code == expected


# -- pages of runs -----------------------------------------------------------------------


def test_runs_come_in_pages_newest_first_with_the_total(api: Api) -> None:
    names = [make_run(api) for _ in range(7)]
    seen: list[str] = []
    for offset in (0, 3, 6):
        r = api.client.get(f"/api/v1/views/runs?offset={offset}&limit=3")
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["total"] == 7 and page["offset"] == offset and page["limit"] == 3
        seen += [run["name"] for run in page["runs"]]
        assert all(run["actions"] == 1 and run["created_by"] == "admin" for run in page["runs"])
    assert seen == names[::-1]
    assert api.client.get("/api/v1/views/runs?offset=7").json()["runs"] == []
    assert api.client.get("/api/v1/views/runs?limit=0").status_code == 422
    assert api.client.get("/api/v1/views/runs?offset=-1").status_code == 422


def test_runs_filter_by_scope_phase_task_and_text(api: Api) -> None:
    assert api.client.post("/api/v1/projects", json={"name": "other"}).status_code == 201
    first = make_run(api, task=task_spec("env.train_model"), name="alpha-one")
    second = make_run(api, task=task_spec("env.evaluate"), name="beta-two", domain="staging")
    third = make_run(api, task=task_spec("env.train_model"), name="gamma-3", project="other")
    api.client.post(f"/api/v1/runs/{second}/abort")

    def names(query: str) -> list[str]:
        r = api.client.get(f"/api/v1/views/runs?{query}")
        assert r.status_code == 200, r.text
        assert r.json()["total"] == len(r.json()["runs"])
        return sorted(run["name"] for run in r.json()["runs"])

    assert names("") == sorted([first, second, third])
    assert names("project=default") == sorted([first, second])
    assert names("project=other") == [third]
    assert names("domain=staging") == [second]
    assert names("phase=ABORTED") == [second]
    assert names("task=env.train_model") == sorted([first, third])
    assert names("task=train") == []  # the task filter is exact; q is the fuzzy one
    assert names("q=TRAIN") == sorted([first, third])  # task names, any case
    assert names("q=beta") == [second]  # run names
    assert names("q=a%25o") == [] and names("q=a_o") == []  # LIKE wildcards are literal
    assert names("q=a-o") == [first]
    assert names("project=default&q=model") == [first]
    tasks = api.client.get("/api/v1/views/runs?project=default").json()["tasks"]
    assert tasks == ["env.evaluate", "env.train_model"]
    assert api.client.get("/api/v1/views/runs?project=nope").status_code == 404
    assert api.client.get("/api/v1/views/runs?phase=DONE").status_code == 400


# -- a run and its actions ---------------------------------------------------------------


def test_the_run_view_holds_every_action_and_the_seq_to_follow_from(api: Api) -> None:
    run = make_run(api)
    api.create_child(run, "a0-0", group=["prep"])
    api.create_child(run, "a0-1", group=["prep", "inner"], task=interactive_task())
    api.create_child(run, "a0-2", task=task_spec(retries={"count": 1, "backoff_s": 0}))
    api.job(run, "a0-0", 1)
    api.finish(run, "a0-0", 1, value=3)
    assert Runtime(api, run, "a0-1").register().status_code == 200
    api.job(run, "a0-2", 1)
    api.finish(run, "a0-2", 1, error=error_info("first try"))
    api.job(run, "a0-2", 2)
    view = api.client.get(f"/api/v1/views/runs/{run}").json()
    assert view["run"]["name"] == run and view["run"]["actions"] == 4
    assert view["run"] == api.client.get(f"/api/v1/runs/{run}").json()
    assert [a["name"] for a in view["actions"]] == ["a0", "a0-0", "a0-1", "a0-2"]
    assert view["actions"][2]["group"] == ["prep", "inner"]
    assert view["actions"][2]["session"]["state"] == "ready"
    assert view["actions"][3]["attempts"][0]["error"]["message"] == "first try"
    # exactly what the actions endpoint answers, though built another way
    assert view["actions"] == api.client.get(f"/api/v1/runs/{run}/actions").json()
    # nothing happened after seq yet; what happens next comes after it
    assert api.plane.runs.events_after(view["seq"], run) == []
    api.create_child(run, "a0-3")
    later = api.plane.runs.events_after(view["seq"], run)
    assert [(e.action, e.phase) for e in later][:1] == [("a0-3", "QUEUED")]
    assert api.client.get("/api/v1/views/runs/nope").status_code == 404


def test_action_detail_has_inputs_outputs_and_the_commands_to_run_it_again(api: Api) -> None:
    inputs = {
        "epochs": 3,
        "learning_rate": 0.5,
        "verbose": True,
        "dry_run": False,
        "label": "it's mine",
        "names": ["Ada", "Grace"],
        "point": {"x": 1, "y": 2},
        "data": {"__loom__": "file", "path": "/data/in.csv", "name": "in.csv"},
        "shaped": {"path": "/a/dict", "name": "with a path key"},  # just a dict
        "nothing": None,
    }
    run = make_run(
        api,
        task=task_spec("env.train", module="pkg.flows.train"),
        inputs=inputs,
        env_vars={"MODE": "fast"},
        domain="staging",
    )
    api.job(run, "a0", 1)
    detail = api.client.get(f"/api/v1/views/runs/{run}/actions/a0").json()
    assert detail["action"]["name"] == "a0" and detail["action"]["phase"] == "RUNNING"
    assert detail["task"]["module"] == "pkg.flows.train" and detail["task"]["attr"] == "train"
    assert detail["inputs"]["value"] == inputs and not detail["inputs"]["truncated"]
    assert detail["inputs"]["size"] == len(json.dumps(inputs, separators=(",", ":")))
    assert detail["outputs"] is None
    assert shlex.split(detail["rerun"]) == [
        "loom", "run", "--remote", "--project", "default", "--domain", "staging",
        "--env", "MODE=fast", "pkg/flows/train.py", "train",
        "--epochs", "3", "--learning-rate", "0.5", "--verbose", "--no-dry-run",
        "--label", "it's mine", "--names", '["Ada","Grace"]', "--point", '{"x":1,"y":2}',
        "--data", "/data/in.csv", "--shaped", '{"path":"/a/dict","name":"with a path key"}',
    ]  # fmt: skip
    assert detail["rerun_note"] == ""
    assert detail["debug"] == f"loom debug {run} a0"
    assert api.finish(run, "a0", 1, value={"score": 0.9}).status_code == 200
    done = api.client.get(f"/api/v1/views/runs/{run}/actions/a0").json()
    assert done["outputs"] == {"value": {"score": 0.9}, "size": 13, "truncated": False}


def test_big_values_are_not_inlined_and_pickles_have_no_command_line(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "VIEW_VALUE_BYTES", 100)
    jupyter = task_spec(interactive={"kind": "jupyter"})
    run = make_run(
        api, task=jupyter, inputs={"model": {"__loom__": "pickle", "data": "gASVAAAA"}, "n": 1}
    )
    api.job(run, "a0", 1)
    api.finish(run, "a0", 1, value="x" * 200)
    detail = api.client.get(f"/api/v1/views/runs/{run}/actions/a0").json()
    assert detail["outputs"] == {"value": None, "size": 202, "truncated": True}
    assert detail["inputs"]["truncated"] is False
    assert "--model" not in detail["rerun"] and "--n 1" in detail["rerun"]
    assert "model" in detail["rerun_note"] and "pickled" in detail["rerun_note"]
    assert detail["debug"] == f"loom debug {run} a0 --jupyter"


# -- files an action refers to -----------------------------------------------------------


def test_no_file_of_the_servers_machine_is_served_whatever_a_value_says(
    api: Api, tmp_path: Path
) -> None:
    # the exploit: a run's inputs named a server-side path ({"path": P}, with or without the
    # tag), and the download endpoint served P: the admin's key, the secrets key, /etc/shadow
    secret = api.settings.data_dir / "secrets-key"
    secret.write_bytes(b"k" * 32)
    targets = [str(api.settings.config_path), str(secret), "/etc/passwd"]
    tagged = {f"f{i}": {"__loom__": "file", "path": p, "name": "x"} for i, p in enumerate(targets)}
    shaped = {f"g{i}": {"path": p, "name": "x"} for i, p in enumerate(targets)}
    run = make_run(api, inputs={**tagged, **shaped})
    url = f"/api/v1/runs/{run}/actions/a0/files"
    for path in targets:
        r = api.client.get(url, params={"of": "inputs", "path": path})
        assert r.status_code == 404, r.text
        assert b"k" * 32 not in r.content and b"api_key" not in r.content
    api.job(run, "a0", 1)
    api.finish(run, "a0", 1, value=[{"__loom__": "file", "path": targets[0], "name": None}])
    r = api.client.get(url, params={"of": "outputs", "path": targets[0]})
    assert r.status_code == 404 and "only loom://data/ references" in r.json()["detail"]
    assert api.client.get(url, params={"of": "spec", "path": "/x"}).status_code == 422


# -- the interactive re-run ---------------------------------------------------------------


def test_debug_reruns_an_action_interactively_with_its_inputs(api: Api) -> None:
    cached = task_spec(
        "env.child",
        cache={"key": "k1"},
        interactive={"kind": "vscode", "run_task_first": True, "max_idle_seconds": 60},
    )
    run = make_run(api, inputs={"n": 1}, env_vars={"MODE": "x"}, domain="production")
    api.create_child(run, "a0-0", task=cached, inputs={"x": [1, 2]})
    api.job(run, "a0-0", 1)
    api.finish(run, "a0-0", 1, error=error_info())
    browser = signed_in(api)
    r = browser.post(f"/api/v1/runs/{run}/actions/a0-0/debug?kind=jupyter")
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["name"] != run and new["domain"] == "production" and new["project"] == "default"
    assert new["task"] == "env.child" and new["created_by"] == "admin"
    spec = api.client.get(f"/api/v1/runs/{new['name']}/actions/a0/spec").json()
    old = api.client.get(f"/api/v1/runs/{run}/actions/a0-0/spec").json()
    assert spec["inputs"] == {"x": [1, 2]} and spec["bundle"] == old["bundle"]
    assert spec["env_vars"] == {"MODE": "x"}
    assert spec["task"]["cache"] is None  # never served from the cache
    assert spec["task"]["interactive"] == {
        "kind": "jupyter",
        "max_idle_seconds": 60,  # kept from the task
        "run_task_first": False,  # the session opens at once
        "notebook_dir": None,
    }
    # a plain task gets the default interactive settings; VS Code unless asked
    plain = api.client.post(f"/api/v1/runs/{run}/actions/a0/debug").json()
    interactive = api.client.get(f"/api/v1/runs/{plain['name']}/actions/a0/spec").json()["task"]
    assert interactive["interactive"]["kind"] == "vscode"
    assert api.client.post(f"/api/v1/runs/{run}/actions/a0/debug?kind=emacs").status_code == 422
    assert api.client.post(f"/api/v1/runs/{run}/actions/nope/debug").status_code == 404
    # cookie-borne, it must come from this server's pages
    r = browser.post(
        f"/api/v1/runs/{run}/actions/a0/debug", headers={"Origin": "https://evil.example"}
    )
    assert r.status_code == 403


# -- signing in as the local admin --------------------------------------------------------

LOCAL = "http://127.0.0.1:8377"


def local_client(api: Api, **kwargs: Any) -> TestClient:
    """A browser on the server's machine, at the server's loopback address."""
    return TestClient(api.client.app, base_url=LOCAL, client=("127.0.0.1", 50123), **kwargs)


def test_a_browser_on_loopback_signs_in_as_the_local_admin(api: Api) -> None:
    browser = local_client(api)
    assert browser.get("/api/v1/login/local").json() == {"available": True, "reason": ""}
    r = browser.post("/api/v1/login/local", headers={"Origin": LOCAL})
    assert r.status_code == 204, r.text
    cookie = r.headers["set-cookie"]
    assert (
        cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    )
    assert api.admin_key not in cookie
    me = browser.get("/api/v1/whoami").json()
    assert me["name"] == "admin" and me["admin"] is True
    assert browser.get("/runs", follow_redirects=False).status_code == 200


@pytest.mark.parametrize(
    ("client", "headers", "reason"),
    [
        (("testclient", 50000), {"Origin": LOCAL}, "server's own machine"),
        (("10.1.2.3", 50000), {"Origin": LOCAL}, "server's own machine"),
        (("127.0.0.1", 50000), {}, "cross-site"),
        (("127.0.0.1", 50000), {"Origin": "http://evil.example"}, "cross-site"),
        (("127.0.0.1", 50000), {"Origin": "null"}, "cross-site"),
        (("127.0.0.1", 50000), {"Origin": LOCAL, "X-Forwarded-For": "8.8.8.8"}, "proxy"),
        (("127.0.0.1", 50000), {"Origin": LOCAL, "Forwarded": "for=8.8.8.8"}, "proxy"),
        (("127.0.0.1", 50000), {"Origin": LOCAL, "X-Real-IP": "8.8.8.8"}, "proxy"),
        # a DNS-rebinding page: its own name, resolved to 127.0.0.1, and a matching Origin
        (
            ("127.0.0.1", 50000),
            {"Host": "evil.example:8377", "Origin": "http://evil.example:8377"},
            "loopback address",
        ),
    ],
)
def test_the_local_sign_in_is_refused_unless_it_surely_comes_from_this_machine(
    api: Api, client: tuple[str, int], headers: dict[str, str], reason: str
) -> None:
    browser = TestClient(api.client.app, base_url=LOCAL, client=client)
    r = browser.post("/api/v1/login/local", headers=headers)
    assert r.status_code == 403, r.text
    assert reason in r.json()["detail"]
    assert COOKIE_NAME not in r.headers.get("set-cookie", "")
    get_headers = {k: v for k, v in headers.items() if k != "Origin"}
    if reason != "cross-site":  # only the POST needs an Origin
        info = browser.get("/api/v1/login/local", headers=get_headers).json()
        assert info["available"] is False and reason in info["reason"]


def test_the_local_sign_in_is_refused_to_another_user(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_auth, "peer_uid", lambda client, server: os.getuid() + 1)
    r = local_client(api).post("/api/v1/login/local", headers={"Origin": LOCAL})
    assert r.status_code == 403 and "another user" in r.json()["detail"]


def test_the_local_sign_in_needs_the_admin_key_of_the_config_file(api: Api) -> None:
    config = api.settings.config_path
    original = config.read_text()
    created = api.client.post(
        "/api/v1/api-keys", json={"name": "plain", "projects": {"default": "member"}}
    ).json()
    config.write_text(f"api_key: {created['key']}\n")  # not an admin key
    browser = local_client(api)
    assert browser.get("/api/v1/login/local").json()["available"] is False
    assert browser.post("/api/v1/login/local", headers={"Origin": LOCAL}).status_code == 403
    config.write_text("endpoint: http://127.0.0.1:8377\n")  # no key at all
    assert browser.get("/api/v1/login/local").json()["available"] is False
    r = browser.post("/api/v1/login/local", headers={"Origin": LOCAL})
    assert r.status_code == 404 and str(config) in r.json()["detail"]
    config.write_text(original)
    assert browser.post("/api/v1/login/local", headers={"Origin": LOCAL}).status_code == 204


def test_a_server_listening_beyond_loopback_offers_no_local_sign_in() -> None:
    headers = {"host": "127.0.0.1:8377", "origin": LOCAL}
    client, server = ("127.0.0.1", 5), ("127.0.0.1", 8377)
    for host in ("0.0.0.0", "192.168.1.5", "::"):
        reason = local_login_refusal(host, client, server, headers, check_origin_header=True)
        assert reason is not None and "beyond this machine" in reason
    for host in ("127.0.0.1", "localhost", "::1"):
        ok = local_login_refusal(host, client, server, headers, check_origin_header=True)
        assert ok is None or "another user" in ok
    mapped = local_login_refusal(
        "127.0.0.1", ("::ffff:127.0.0.1", 5), server, headers, check_origin_header=True
    )
    assert mapped is None or "another user" in mapped


def test_the_owner_of_a_loopback_connection_is_read_from_proc() -> None:
    ipv4 = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 0100007F:1F99 00000000:0000 0A 00000000:00000000 00:00000000 00000000   0 0 1 1\n"
        "   1: 0100007F:C350 0100007F:1F99 01 00000000:00000000 00:00000000 00000000 1234 0 2 1\n"
        "   2: 0100007F:1F99 0100007F:C350 01 00000000:00000000 00:00000000 00000000   0 0 3 1\n"
    )
    client, server = ("127.0.0.1", 0xC350), ("127.0.0.1", 0x1F99)
    if socket.htonl(1) != 1:  # the kernel writes addresses in its own byte order
        assert find_socket_owner(ipv4, client, server) == 1234
    assert find_socket_owner(ipv4, ("127.0.0.1", 1), server) is None
    assert find_socket_owner("garbage\n1: x y z\n", client, server) is None


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="Linux's /proc/net/tcp")
def test_the_owner_of_a_real_loopback_connection_is_this_user() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname()) as conn:
            accepted, _ = listener.accept()
            with accepted:
                client = conn.getsockname()[:2]
                server = listener.getsockname()[:2]
                assert peer_uid(client, server) == os.getuid()
                assert peer_uid(server, client) == os.getuid()  # the server's end is ours too
                assert peer_uid(("127.0.0.1", 1), server) is None
