"""The session proxy and the login cookie, over real sockets: the control plane and the
sessions' own listener served by uvicorn on loopback, an upstream "IDE" (a small HTTP +
WebSocket app, or the real code-server and JupyterLab) served on a Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from loom.server import create_app, create_session_app
from loom.server._auth import COOKIE_NAME
from loom.server._serve import bind
from loom.server._session_access import SESSION_COOKIE
from tests.conftest import IdeInstalls
from tests.server.conftest import Api, task_spec

JUPYTER_TOKEN = "jupyter-token-7c2e91"


# -- servers in threads ---------------------------------------------------------------------


class ThreadedUvicorn:
    """uvicorn serving ``app`` in a thread, on a TCP socket or a Unix socket."""

    def __init__(self, app: Any, *, uds: str | None = None) -> None:
        self.uds = uds
        sock = None if uds else bind("127.0.0.1", 0)
        self.port = sock.getsockname()[1] if sock else 0
        config = uvicorn.Config(
            app, uds=uds, log_level="warning", lifespan="on" if uds is None else "off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock] if sock else None}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class Upstream:
    """What the fake IDE saw, and a gate that holds its streaming response."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    websockets: list[dict[str, Any]] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)


def upstream_app(seen: Upstream) -> Starlette:
    async def echo(request: Request) -> Response:
        body = await request.body()
        record = {
            "method": request.method,
            "path": request.scope["raw_path"].decode(),
            "query": request.scope["query_string"].decode(),
            "headers": [(k.decode(), v.decode()) for k, v in request.scope["headers"]],
            "sha256": hashlib.sha256(body).hexdigest(),
            "size": len(body),
        }
        seen.requests.append(record)
        if request.url.path.endswith("/redirect"):
            return RedirectResponse("/elsewhere?x=1", status_code=302)
        response = JSONResponse(record, headers={"X-Upstream": "yes"})
        response.set_cookie("ide_cookie", "v", path="/")
        return response

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> Any:
            yield b"first\n"
            await asyncio.to_thread(seen.gate.wait, 20)
            yield b"second\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    async def websocket(ws: WebSocket) -> None:
        requested = ws.scope.get("subprotocols") or []
        record: dict[str, Any] = {
            "path": ws.scope["raw_path"].decode(),
            "query": ws.scope["query_string"].decode(),
            "headers": [(k.decode(), v.decode()) for k, v in ws.scope["headers"]],
            "subprotocols": requested,
            "close_code": None,
        }
        seen.websockets.append(record)
        await ws.accept(subprotocol=requested[-1] if requested else None)
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    record["close_code"] = message.get("code")
                    return
                if message.get("text") is not None:
                    text = message["text"]
                    if text == "close":
                        await ws.close(4001, "bye")
                        return
                    await ws.send_text("echo:" + text)
                else:
                    await ws.send_bytes(bytes(reversed(message["bytes"])))
        except WebSocketDisconnect as e:
            record["close_code"] = e.code

    return Starlette(
        routes=[
            Route("/stream", stream),
            Route("/sessions/{sid}/stream", stream),
            WebSocketRoute("/{path:path}", websocket),
            Route("/{path:path}", echo, methods=["GET", "POST", "PUT", "DELETE", "HEAD"]),
        ]
    )


@dataclass
class Env:
    api: Api
    server: ThreadedUvicorn
    upstream: Upstream
    socket: str
    base: str  # the sessions' origin, http://127.0.0.1:port
    api_base: str  # the API's and the UI's, on another port
    headers: dict[str, str]  # the admin key

    @property
    def host(self) -> str:
        return self.base.removeprefix("http://")

    def ws_url(self, path: str) -> str:
        return "ws://" + self.host + path

    def register(self, kind: str = "vscode", **kwargs: Any) -> tuple[str, str, dict[str, Any]]:
        """A running interactive action whose IDE is the fake upstream: (run, job id, info)."""
        run = self.api.create_run(task_spec(interactive={"kind": kind}))["name"]
        job = self.api.job(run, "a0", 1)
        # the IDE listens in the directory the server made for the attempt: the test's IDE
        # was started earlier, elsewhere, so its socket gets a (hard) link there
        directory = self.api.plane.session_dir(run, "a0", 1)
        socket = directory / "ide.sock"
        upstream = kwargs.pop("socket", self.socket)
        if os.path.exists(upstream):
            os.link(upstream, socket)
        body = {
            "attempt": 1,
            "kind": kind,
            "socket": str(socket),
            "token": JUPYTER_TOKEN if kind == "jupyter" else None,
            "workspace": "/w",
            "max_idle_seconds": 600,
            **kwargs,
        }
        r = self.api.client.post(
            f"/api/v1/runs/{run}/actions/a0/session",
            json=body,
            headers={"Authorization": f"Bearer {job.credential}"},
        )
        assert r.status_code == 200, r.text
        return run, job.id, r.json()


@pytest.fixture
def env(api: Api, tmp_path: Path) -> Iterator[Env]:
    seen = Upstream()
    socket = str(tmp_path / "ide.sock")
    upstream = ThreadedUvicorn(upstream_app(seen), uds=socket)
    server = ThreadedUvicorn(create_app(api.plane, manage_plane=False))
    sessions = ThreadedUvicorn(create_session_app(api.plane))
    # one origin for every session here (httpx cannot resolve <label>.localhost names)
    api.plane.session_origin = f"http://127.0.0.1:{sessions.port}"
    try:
        yield Env(
            api,
            sessions,
            seen,
            socket,
            f"http://127.0.0.1:{sessions.port}",
            f"http://127.0.0.1:{server.port}",
            {"Authorization": f"Bearer {api.admin_key}"},
        )
    finally:
        seen.gate.set()
        sessions.stop()
        server.stop()
        upstream.stop()


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _headers(record: dict[str, Any]) -> dict[str, str]:
    return dict(record["headers"])


# -- HTTP -------------------------------------------------------------------------------------


def test_http_is_forwarded_with_the_prefix_stripped_and_credentials_removed(env: Env) -> None:
    _, _, info = env.register()
    body = os.urandom(3 << 20)  # 3 MiB: streamed, not refused or mangled
    r = httpx.post(
        f"{env.base}/sessions/{info['id']}/some/path%20x?q=1&r=%2F",
        content=body,
        headers={
            **env.headers,
            "Cookie": f"a=1; {COOKIE_NAME}=whatever; {SESSION_COOKIE}=x; b=2",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "must not pass",
            "X-Forwarded-Prefix": "/evil",
            "X-Custom": "kept",
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-upstream"] == "yes" and "ide_cookie=v" in r.headers["set-cookie"]
    seen = env.upstream.requests[-1]
    assert seen["method"] == "POST" and seen["path"] == "/some/path%20x"
    assert seen["query"] == "q=1&r=%2F"
    assert seen["size"] == len(body) and seen["sha256"] == hashlib.sha256(body).hexdigest()
    headers = _headers(seen)
    assert "authorization" not in headers  # the IDE never sees a loom key
    assert headers["cookie"] == "a=1; b=2"
    assert "x-hop" not in headers and headers["x-custom"] == "kept"
    assert headers["host"] == env.host  # the browser's Host, which the IDEs check
    assert headers["x-forwarded-host"] == env.host and headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-prefix"] == f"/sessions/{info['id']}"
    assert headers["x-forwarded-for"] == "127.0.0.1"


def test_jupyter_keeps_the_prefix_and_gets_its_token(env: Env) -> None:
    _, _, info = env.register("jupyter")
    r = httpx.get(
        f"{env.base}/sessions/{info['id']}/api/contents?type=directory", headers=env.headers
    )
    assert r.status_code == 200, r.text
    seen = env.upstream.requests[-1]
    assert seen["path"] == f"/sessions/{info['id']}/api/contents"
    assert _headers(seen)["authorization"] == f"token {JUPYTER_TOKEN}"


def test_redirects_keep_the_session_prefix(env: Env) -> None:
    _, _, info = env.register()
    sid = info["id"]
    r = httpx.get(f"{env.base}/sessions/{sid}?folder=/w", headers=env.headers)
    assert r.status_code == 308 and r.headers["location"] == f"/sessions/{sid}/?folder=/w"
    r = httpx.get(f"{env.base}/sessions/{sid}/redirect", headers=env.headers)
    assert r.status_code == 302 and r.headers["location"] == f"/sessions/{sid}/elsewhere?x=1"
    assert httpx.get(f"{env.base}/sessions/{sid}").status_code == 401  # auth comes first


def test_responses_stream(env: Env) -> None:
    _, _, info = env.register()
    with httpx.stream(
        "GET", f"{env.base}/sessions/{info['id']}/stream", headers=env.headers, timeout=20
    ) as r:
        assert r.status_code == 200
        chunks = r.iter_raw()
        assert next(chunks) == b"first\n"  # while the upstream still holds the rest
        env.upstream.gate.set()
        assert b"".join(chunks) == b"second\n"


def test_refusals(env: Env) -> None:
    _, job_id, info = env.register()
    url = f"{env.base}/sessions/{info['id']}/"
    r = httpx.get(url)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "open it from the UI" in r.json()["detail"]
    assert httpx.get(url, headers={"Authorization": "Bearer loom_x_y"}).status_code == 401
    runtime = env.api.executor.jobs[job_id].credential  # the attempt's own: still no way in
    r = httpx.get(url, headers={"Authorization": f"Bearer {runtime}"})
    assert r.status_code == 403 and "runtime" in r.json()["detail"]
    # who may not come in learns nothing about which sessions exist
    assert httpx.get(f"{env.base}/sessions/nosuchsession123/").status_code == 401
    r = httpx.get(f"{env.base}/sessions/nosuchsession123/", headers=env.headers)
    assert r.status_code == 404 and "not found" in r.json()["detail"]
    assert httpx.get(f"{env.base}/sessions/", headers=env.headers).status_code == 404
    assert env.upstream.requests == []  # nothing reached the IDE


def test_an_ended_session_is_gone_and_a_dead_ide_is_a_502(env: Env) -> None:
    run, job_id, info = env.register(socket="/nonexistent/ide.sock")
    r = httpx.get(f"{env.base}/sessions/{info['id']}/", headers=env.headers)
    assert r.status_code == 502 and "not answering" in r.json()["detail"]
    env.api.exit(job_id, -9)
    time.sleep(1.1)  # the proxy caches a route for up to a second
    r = httpx.get(f"{env.base}/sessions/{info['id']}/", headers=env.headers)
    assert r.status_code == 404 and "has ended" in r.json()["detail"]
    assert "worker lost" in r.json()["detail"]


def test_the_proxy_does_not_follow_a_link_to_another_ides_socket(env: Env) -> None:
    _, _, victim = env.register()
    run, _, info = env.register(socket="/nonexistent/ide.sock")
    # the attacker's runtime puts a link where its IDE's socket should be
    own = env.api.plane.session_dir(run, "a0", 1) / "ide.sock"
    own.symlink_to(env.api.plane.session_dir(victim["run"], "a0", 1) / "ide.sock")
    r = httpx.get(f"{env.base}/sessions/{info['id']}/", headers=env.headers)
    assert r.status_code == 502 and env.upstream.requests == []


def test_proxied_requests_count_as_activity(env: Env) -> None:
    run, _, info = env.register()
    sessions = env.api.plane.sessions
    assert sessions.activity(info["id"]) is None
    assert httpx.get(f"{env.base}/sessions/{info['id']}/x", headers=env.headers).status_code == 200
    touched = sessions.activity(info["id"])
    assert touched is not None and touched > _at(info["last_activity_at"])
    sessions.flush()  # (or the plane's own flusher did, meanwhile)
    shown = env.api.action(run, "a0")["session"]
    assert _at(shown["last_activity_at"]) == touched  # written to the database
    assert _at(shown["idle_deadline"]) > _at(info["idle_deadline"])


# -- WebSocket --------------------------------------------------------------------------------


def test_websocket_frames_flow_both_ways(env: Env) -> None:
    _, _, info = env.register()
    sessions = env.api.plane.sessions
    with ws_connect(
        env.ws_url(f"/sessions/{info['id']}/socket?x=1"),
        additional_headers=env.headers,
        subprotocols=["one", "two"],  # type: ignore[list-item]
        origin=env.base,  # type: ignore[arg-type]
    ) as ws:
        assert ws.subprotocol == "two"  # the IDE's choice
        before = sessions.activity(info["id"])
        ws.send("hello")
        assert ws.recv(5) == "echo:hello"
        ws.send(b"\x00\x01\x02")
        assert ws.recv(5) == b"\x02\x01\x00"
        assert sessions.activity(info["id"]) > before  # type: ignore[operator]
        ws.send("close")  # the IDE closes with its own code
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye")
    seen = env.upstream.websockets[-1]
    assert seen["path"] == "/socket" and seen["query"] == "x=1"
    assert seen["subprotocols"] == ["one", "two"]
    headers = _headers(seen)
    assert "authorization" not in headers and headers["host"] == env.host
    assert headers["origin"] == env.base

    # the browser closing reaches the IDE with its code
    with ws_connect(
        env.ws_url(f"/sessions/{info['id']}/again"), additional_headers=env.headers
    ) as ws:
        ws.send("x")
        assert ws.recv(5) == "echo:x"
        ws.close(4002, "tab closed")
    deadline = time.monotonic() + 5
    while env.upstream.websockets[-1]["close_code"] is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert env.upstream.websockets[-1]["close_code"] == 4002


def test_unauthenticated_websocket_upgrades_are_refused_before_accepting(env: Env) -> None:
    _, _, info = env.register()
    url = env.ws_url(f"/sessions/{info['id']}/socket")
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url)
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, additional_headers={"Authorization": "Bearer loom_bad_key"})
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as refused:  # any refusal is closed before accepting
        ws_connect(env.ws_url("/sessions/nosuchsession123/x"), additional_headers=env.headers)
    assert refused.value.response.status_code == 403
    assert env.upstream.websockets == []


# -- the login cookie -------------------------------------------------------------------------


def test_the_login_cookie_works_for_the_api_and_not_for_sessions(env: Env) -> None:
    _, _, info = env.register()
    with httpx.Client(base_url=env.api_base) as browser:
        r = browser.post("/api/v1/login", json={"api_key": "loom_nope_nope"})
        assert r.status_code == 401 and "set-cookie" not in r.headers
        r = browser.post("/api/v1/login", json={"api_key": env.api.admin_key})
        assert r.status_code == 204
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie
        assert "SameSite=lax" in cookie and "Path=/" in cookie and "Max-Age=43200" in cookie
        assert "Secure" not in cookie  # plain http here; https gets Secure
        assert env.api.admin_key not in cookie
        token = browser.cookies[COOKIE_NAME]
        assert browser.get("/api/v1/whoami").json()["name"] == "admin"
        # a state-changing request riding on the cookie must come from this server's pages
        r = browser.post(
            "/api/v1/api-keys",
            json={"name": "x1", "projects": {"default": "member"}},
            headers={"Origin": "https://evil.example"},
        )
        assert r.status_code == 403 and "cross-site" in r.json()["detail"]
        r = browser.post(  # the sessions' origin is another origin: refused too
            "/api/v1/api-keys",
            json={"name": "x0", "projects": {"default": "member"}},
            headers={"Origin": env.base},
        )
        assert r.status_code == 403 and "cross-site" in r.json()["detail"]
        r = browser.post(
            "/api/v1/api-keys",
            json={"name": "x2", "projects": {"default": "member"}},
            headers={"Origin": env.api_base},
        )
        assert r.status_code == 201
        # sessions are not on this origin at all
        r = browser.get(f"/sessions/{info['id']}/page")
        assert r.status_code == 404 and "own origin" in r.json()["detail"]
        # logging out clears it (from this server's pages only)
        r = browser.post("/api/v1/logout", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        r = browser.post("/api/v1/logout")
        assert r.status_code == 204 and COOKIE_NAME not in browser.cookies
        assert browser.get("/api/v1/whoami").status_code == 401
    # the UI's cookie opens no session: an IDE's page must never act with it
    r = httpx.get(f"{env.base}/sessions/{info['id']}/page", cookies={COOKIE_NAME: token})
    assert r.status_code == 401 and "open it from the UI" in r.json()["detail"]
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(
            env.ws_url(f"/sessions/{info['id']}/ws"),
            additional_headers={"Cookie": f"{COOKIE_NAME}={token}"},
            origin=env.base,  # type: ignore[arg-type]
        )
    assert refused.value.response.status_code == 403
    assert env.upstream.requests == []


def _enter(env: Env, run: str, key: str | None = None) -> tuple[httpx.Client, str]:
    """A browser on the sessions' origin, signed in to the session of ``run`` with a ticket
    (what the UI's Open button does); and the ticket link."""
    headers = {"Authorization": f"Bearer {key}"} if key else env.headers
    r = httpx.post(f"{env.api_base}/api/v1/runs/{run}/actions/a0/session/open", headers=headers)
    assert r.status_code == 200, r.text
    link = r.json()["url"]
    origin = env.api.plane.origin_of_session(env.api.plane.sessions.get(run, "a0").id)
    assert link.startswith(origin + "/_loom/enter?ticket=")
    browser = httpx.Client(base_url=env.base)
    return browser, link


def test_a_ticket_signs_a_browser_in_to_one_session_once(env: Env) -> None:
    run, _, info = env.register()
    other_run, _, other = env.register()
    browser, link = _enter(env, run)
    with browser:
        r = browser.get(link)
        assert r.status_code == 303 and r.headers["location"] == f"/sessions/{info['id']}/"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie
        assert f"Path=/sessions/{info['id']}/" in cookie and "SameSite=Lax" in cookie
        assert r.headers["referrer-policy"] == "no-referrer"
        r = browser.get(f"/sessions/{info['id']}/page")
        assert r.status_code == 200, r.text
        sent = _headers(env.upstream.requests[-1]).get("cookie", "")
        assert SESSION_COOKIE not in sent and COOKIE_NAME not in sent
        # once: the link is spent
        r = httpx.get(link)
        assert r.status_code == 401 and "used already or has expired" in r.json()["detail"]
        # that cookie is for that session only
        value = browser.cookies[SESSION_COOKIE]
        r = httpx.get(f"{env.base}/sessions/{other['id']}/page", cookies={SESSION_COOKIE: value})
        assert r.status_code == 401
        # the browser's WebSocket: the cookie, from the session's own origin only
        with ws_connect(
            env.ws_url(f"/sessions/{info['id']}/ws"),
            additional_headers={"Cookie": f"{SESSION_COOKIE}={value}"},
            origin=env.base,  # type: ignore[arg-type]
        ) as ws:
            ws.send("hi")
            assert ws.recv(5) == "echo:hi"
        with pytest.raises(InvalidStatus) as refused:  # cross-site WebSocket hijacking
            ws_connect(
                env.ws_url(f"/sessions/{info['id']}/ws"),
                additional_headers={"Cookie": f"{SESSION_COOKIE}={value}"},
                origin="https://evil.example",  # type: ignore[arg-type]
            )
        assert refused.value.response.status_code == 403
        r = httpx.post(
            f"{env.base}/sessions/{info['id']}/page",
            cookies={SESSION_COOKIE: value},
            headers={"Origin": "https://evil.example"},
        )
        assert r.status_code == 403
    del other_run


def test_opening_a_session_needs_a_member_of_its_project(env: Env) -> None:
    run, _, info = env.register()
    client = env.api.client
    assert client.post("/api/v1/projects", json={"name": "q"}).status_code == 201
    keys = {}
    for name, grants in (
        ("viewer", {"default": "viewer"}),
        ("stranger", {"q": "member"}),
        ("member", {"default": "member"}),
    ):
        keys[name] = client.post(
            "/api/v1/api-keys", json={"name": name, "projects": grants}
        ).json()["key"]
    url = f"{env.api_base}/api/v1/runs/{run}/actions/a0/session/open"
    for name, status in (("viewer", 403), ("stranger", 404)):
        r = httpx.post(url, headers={"Authorization": f"Bearer {keys[name]}"})
        assert r.status_code == status, (name, r.text)
        r = httpx.get(
            f"{env.base}/sessions/{info['id']}/",
            headers={"Authorization": f"Bearer {keys[name]}"},
        )
        assert r.status_code == status, (name, r.text)
    browser, link = _enter(env, run, keys["member"])
    with browser:
        assert browser.get(link).status_code == 303
        assert browser.get(f"/sessions/{info['id']}/page").status_code == 200
        # the key is deleted: its session cookie stops working
        assert client.delete("/api/v1/api-keys/member").status_code == 204
        env.api.plane.keys._cache.clear()
        assert browser.get(f"/sessions/{info['id']}/page").status_code == 401


def test_sessions_can_have_an_origin_each(env: Env) -> None:
    run, _, info = env.register()
    port = env.base.rsplit(":", 1)[1]
    env.api.plane.session_origin = f"http://{{id}}.localhost:{port}"
    label = env.api.plane.origin_of_session(info["id"]).split("//")[1].split(".")[0]
    assert label.startswith("s") and label == label.lower()
    own = {**env.headers, "Host": f"{label}.localhost:{port}"}
    r = httpx.get(f"{env.base}/sessions/{info['id']}/page", headers=own)
    assert r.status_code == 200, r.text
    r = httpx.get(f"{env.base}/sessions/{info['id']}/page", headers=env.headers)
    assert r.status_code == 404  # not on the session's own host
    browser, link = _enter(env, run)
    with browser:
        assert link.startswith(f"http://{label}.localhost:{port}/_loom/enter?ticket=")
        ticket = link.split("?", 1)[1]
        r = browser.get(f"/_loom/enter?{ticket}", headers={"Host": f"other.localhost:{port}"})
        assert r.status_code == 404  # a ticket works on its session's host only


def test_a_cookie_ends_with_its_key_and_cannot_be_forged(env: Env) -> None:
    key = env.api.client.post(
        "/api/v1/api-keys", json={"name": "carol", "projects": {"default": "member"}}
    ).json()["key"]
    with httpx.Client(base_url=env.api_base) as browser:
        assert browser.post("/api/v1/login", json={"api_key": key}).status_code == 204
        token = browser.cookies[COOKIE_NAME]
        assert browser.get("/api/v1/whoami").json()["name"] == "carol"
        version, key_id, expires, signature = token.split(".")
        for forged in (
            f"{version}.{key_id}.{int(expires) + 3600}.{signature}",  # a longer life
            f"{version}.{key_id}.{expires}.{signature[:-2]}AA",
            "garbage",
        ):
            r = httpx.get(f"{env.api_base}/api/v1/whoami", cookies={COOKIE_NAME: forged})
            assert r.status_code == 401
        signer = env.api.plane.auth.signer
        expired = signer.issue(key_id, now=time.time() - 13 * 3600)
        r = httpx.get(f"{env.api_base}/api/v1/whoami", cookies={COOKIE_NAME: expired})
        assert r.status_code == 401 and "expired" in r.json()["detail"]
        assert env.api.client.delete("/api/v1/api-keys/carol").status_code == 204
        assert browser.get("/api/v1/whoami").status_code == 401
    secret = env.api.settings.data_dir / "auth-secret"
    assert secret.stat().st_mode & 0o777 == 0o600


# -- the real IDEs ----------------------------------------------------------------------------


@dataclass
class Ide:
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """Kill the IDE's whole process group (its children linger otherwise)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def start_ide(
    argv: list[str], socket: Path, home: Path, health: str, extra_env: dict[str, str] | None = None
) -> Ide:
    tmp = home / "tmp"
    tmp.mkdir(parents=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "TMPDIR": str(tmp),  # code-server leaves its IPC sockets here
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "JUPYTER_CONFIG_DIR": str(home / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(home / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(home / "jupyter-runtime"),
        "LANG": "C.UTF-8",
        **(extra_env or {}),
    }
    log = home / "ide.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    ide = Ide(process, log)
    deadline = time.monotonic() + 90
    transport = httpx.HTTPTransport(uds=str(socket))
    with httpx.Client(transport=transport, base_url="http://ide") as client:
        while True:
            if process.poll() is not None:
                pytest.fail(f"the IDE exited with {process.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                ide.stop()
                pytest.fail(f"the IDE did not come up:\n{log.read_text()}")
            if socket.exists():
                try:
                    if client.get(health, timeout=5).status_code < 500:
                        return ide
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)


@pytest.mark.e2e
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_real_code_server_through_the_proxy(
    env: Env, ide_installs: IdeInstalls, tmp_path: Path
) -> None:
    home = tmp_path / "cs"
    socket = home / "cs.sock"
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "flow.py").write_text("x = 1\n")
    home.mkdir()
    config = home / "config.yaml"
    config.write_text("")
    argv = [
        str(ide_installs.code_server.code_server),
        "--auth",
        "none",
        "--socket",
        str(socket),
        "--socket-mode",
        "600",
        "--disable-telemetry",
        "--disable-update-check",
        "--disable-workspace-trust",
        "--user-data-dir",
        str(home / "user-data"),
        "--extensions-dir",
        str(home / "extensions"),
        "--config",
        str(config),
        str(workspace),
    ]
    ide = start_ide(argv, socket, home, "/healthz")
    try:
        _, _, info = env.register("vscode", socket=str(socket))
        prefix = f"/sessions/{info['id']}"
        with httpx.Client(base_url=env.base, headers=env.headers, timeout=30) as browser:
            r = browser.get(prefix)
            assert r.status_code == 308
            r = browser.get(f"{prefix}/", follow_redirects=True)
            assert r.status_code == 200, r.text[:2000]
            assert "vscode" in r.text.lower() and str(r.url).startswith(f"{env.base}{prefix}/")
            assert browser.get(f"{prefix}/healthz").json()["status"] in ("alive", "expired")
        # the editor's own connection: code-server refuses it unless Host and Origin agree
        query = f"reconnectionToken={secrets.token_hex(8)}&reconnection=false"
        url = env.ws_url(f"{prefix}/?{query}&skipWebSocketFrames=false")
        with ws_connect(url, additional_headers=env.headers, origin=env.base) as ws:  # type: ignore[arg-type]
            assert ws.protocol.state.name == "OPEN"
        with pytest.raises(InvalidStatus) as refused:  # the IDE's own origin check
            ws_connect(url, additional_headers=env.headers, origin="http://evil.example")  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
    finally:
        ide.stop()


@pytest.mark.e2e
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_real_jupyter_through_the_proxy(
    env: Env, ide_installs: IdeInstalls, tmp_path: Path
) -> None:
    home = tmp_path / "jp"
    home.mkdir()
    socket = home / "jupyter.sock"
    workspace = tmp_path / "notebooks"
    workspace.mkdir()
    # the runtime picks the id: Jupyter must know its URL before it starts
    session_id = "jupyter-" + secrets.token_urlsafe(12)
    # JupyterLab writes its token into the /lab page unless its page config says otherwise;
    # the proxy adds the token to every request, so the page needs none
    labconfig = home / "jupyter-config" / "labconfig"
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(json.dumps({"token": ""}))
    argv = [
        *ide_installs.jupyter.jupyter_lab_argv,
        f"--ServerApp.sock={socket}",
        f"--ServerApp.base_url=/sessions/{session_id}/",
        f"--ServerApp.root_dir={workspace}",
        "--allow-root",
        "--no-browser",
    ]
    health = f"/sessions/{session_id}/api/status"
    # the token travels in the environment: a command line is readable by every local user
    ide = start_ide(argv, socket, home, health, {"JUPYTER_TOKEN": JUPYTER_TOKEN})
    try:
        direct = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)))
        with direct:  # without the token Jupyter refuses: the proxy must add it
            assert direct.get(f"http://ide{health}").status_code in (401, 403)
        _, _, info = env.register("jupyter", socket=str(socket), id=session_id)
        prefix = f"/sessions/{session_id}"
        with httpx.Client(base_url=env.base, headers=env.headers, timeout=60) as browser:
            r = browser.get(f"{prefix}/lab")
            assert r.status_code == 200, r.text[:2000]
            assert "jupyterlab" in r.text.lower() and JUPYTER_TOKEN not in r.text
            kernel = browser.post(f"{prefix}/api/kernels", json={"name": "python3"})
            assert kernel.status_code == 201, kernel.text
            terminal = browser.post(f"{prefix}/api/terminals")
            assert terminal.status_code == 200, terminal.text
        kernel_url = env.ws_url(f"{prefix}/api/kernels/{kernel.json()['id']}/channels")
        with ws_connect(kernel_url, additional_headers=env.headers, origin=env.base) as ws:  # type: ignore[arg-type]
            msg_id = secrets.token_hex(8)
            request = {
                "header": {
                    "msg_id": msg_id,
                    "msg_type": "kernel_info_request",
                    "username": "test",
                    "session": secrets.token_hex(8),
                    "date": "",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "content": {},
                "channel": "shell",
                "buffers": [],
            }
            ws.send(json.dumps(request))
            reply = _receive_until(
                ws,
                lambda m: (
                    m.get("msg_type") == "kernel_info_reply"
                    and m.get("parent_header", {}).get("msg_id") == msg_id
                ),
            )
            assert reply["content"]["status"] == "ok"
        terminal_url = env.ws_url(f"{prefix}/terminals/websocket/{terminal.json()['name']}")
        with ws_connect(terminal_url, additional_headers=env.headers, origin=env.base) as ws:  # type: ignore[arg-type]
            ws.send(json.dumps(["stdin", "echo loom-$((6*7))\r"]))
            _receive_until(ws, lambda m: isinstance(m, list) and "loom-42" in str(m[1:]))
    finally:
        ide.stop()


def _receive_until(ws: Any, predicate: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no matching message in time"
        message = json.loads(ws.recv(remaining))
        if predicate(message):
            return message
