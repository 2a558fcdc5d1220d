"""The session proxy: ``/sessions/<id>/...`` (HTTP and WebSocket) to an IDE's Unix socket.

It is served on the sessions' own listener, an origin apart from the UI and the API (see
``_session_access``). An interactive session is a shell with the task's credentials (DESIGN
§7), so the proxy authenticates every request and every WebSocket upgrade before it does
anything else: an API key (``Authorization: Bearer``, never a runtime credential) or the
session's own cookie, which ``/_loom/enter?ticket=`` sets for a one-time ticket; the UI's login
cookie counts for nothing here. The caller must be a member of the run's project. Where each
session has an origin of its own (``{id}`` in the sessions' origin), a request must come to
that session's host. A refused upgrade is closed before it is accepted, which the server turns
into HTTP 403. The proxy connects only to a socket in the directory the server made for the
attempt (checked at registration), and never through a symbolic link.

What it forwards (see ``reference/ide.md``):

- code-server serves at ``/``: the ``/sessions/<id>`` prefix is stripped, and a redirect to an
  absolute path gets it back. Jupyter runs with ``--ServerApp.base_url=/sessions/<id>/``: the
  path is forwarded as is, with ``Authorization: token <secret>`` added (the browser never
  sees that secret).
- The browser's ``Host`` is kept and ``X-Forwarded-Host/Proto/Prefix/For`` are set: the IDEs
  compare a WebSocket's ``Origin`` with them and refuse a mismatch.
- Hop-by-hop headers are dropped both ways, and so are the caller's ``Authorization`` and
  loom's cookies: the IDE, and whatever runs in it, never sees loom credentials.
- Bodies stream both ways, unbuffered (downloads, event streams, long-polls).

Every forwarded request and every WebSocket frame counts as activity of the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import httpx
from anyio import to_thread
from starlette.requests import cookie_parser
from starlette.types import Message, Receive, Scope, Send

from ._auth import COOKIE_NAME
from ._authz import check_member, role_in
from ._errors import AuthenticationError, NotFoundError, PermissionDeniedError, ServerError
from ._keys import Principal
from ._session_access import COOKIE_TTL_S, SESSION_COOKIE, session_host_label
from ._sessions import Route

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from ._plane import ControlPlane

log = logging.getLogger("loom.server")

PREFIX = "/sessions"
ENTER = "/_loom/enter"
#: Per RFC 9110 §7.6.1, plus ``proxy-connection``, which some clients still send.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# the proxy sets these itself; what a caller sent is dropped
_OWN = frozenset(
    {"host", "authorization", "x-forwarded-for", "x-forwarded-prefix", "x-real-ip", "forwarded"}
)
# the WebSocket client sets these for the upstream handshake
_WS_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
        "content-length",
    }
)
_CONNECT_TIMEOUT_S = 10.0
# close codes that may not be sent in a close frame, and what to send instead
_UNSENDABLE = {1005: 1000, 1006: 1011, 1015: 1011}


class SessionProxy:
    """The ASGI app behind ``/sessions``: one HTTP transport per session, kept while it lives."""

    def __init__(self, plane: ControlPlane) -> None:
        self._plane = plane
        self._transports: dict[str, tuple[str, httpx.AsyncHTTPTransport]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        """Close every upstream connection (the server is stopping)."""
        transports, self._transports = self._transports, {}
        for _, transport in transports.values():
            with contextlib.suppress(Exception):
                await transport.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # served alone (tests): nothing to start, close at end
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            if scope["path"] == ENTER:
                await self._enter(scope, send)
            elif session_path(scope):
                await self._http(scope, receive, send)
            else:
                await _json(send, 404, "the sessions' origin serves /sessions/<id>/ only")
        elif scope["type"] == "websocket":
            if session_path(scope):
                await self._websocket(scope, receive, send)
            else:
                await receive()
                await _deny(send, "no WebSocket here")

    # -- the way in: a ticket for the session's cookie --------------------------------------

    async def _enter(self, scope: Scope, send: Send) -> None:
        query = dict(parse_qsl(scope["query_string"].decode("latin-1")))

        def redeem() -> tuple[Route, Principal]:
            ticket = self._plane.session_access.redeem(query.get("ticket", ""))
            if ticket is None:
                raise AuthenticationError(
                    "this link into the session was used already or has expired: open the "
                    "session again from the UI, or with `loom open RUN ACTION`"
                )
            if not self._on_own_host(scope, ticket.session_id):
                raise NotFoundError(f"session {ticket.session_id!r} not found")
            principal = self._plane.keys.principal_for_id(ticket.key_id)
            if principal is None:
                raise AuthenticationError("the API key that opened this link was deleted")
            return self._route_for(principal, ticket.session_id), principal

        try:
            route, principal = await to_thread.run_sync(redeem)
        except ServerError as e:
            await _error(send, e)
            return
        cookie = self._plane.session_access.cookie(route.id, principal.key_id)
        secure = "; Secure" if self._plane.origin_of_session(route.id).startswith("https:") else ""
        attributes = f"Path={PREFIX}/{route.id}/; Max-Age={COOKIE_TTL_S}; HttpOnly; SameSite=Lax"
        await _respond(
            send,
            303,
            b"",
            [
                (b"location", f"{PREFIX}/{route.id}/".encode()),
                (b"set-cookie", f"{SESSION_COOKIE}={cookie}; {attributes}{secure}".encode()),
                (b"cache-control", b"no-store"),
                (b"referrer-policy", b"no-referrer"),  # the ticket stays out of Referer
            ],
        )

    # -- shared ---------------------------------------------------------------------------

    def _on_own_host(self, scope: Scope, session_id: str) -> bool:
        """Whether the request came to the session's own host (always, where sessions share
        one origin)."""
        if "{id}" not in self._plane.session_origin:
            return True
        host = _headers(scope).get("host", "").lower()
        return host.startswith(session_host_label(session_id) + ".")

    def _route_for(self, principal: Principal, session_id: str) -> Route:
        """The session's route, if ``principal`` may use it: a member of the run's project
        (a session of a project the caller cannot see does not exist for it)."""
        if principal.attempt is not None:
            # a task's code must never reach an IDE, its own included: that is for people
            raise PermissionDeniedError("a runtime credential cannot open sessions")
        route = self._plane.sessions.route(session_id)
        run = self._plane.scopes.run(route.run)
        if role_in(principal, run.project) is None:
            raise NotFoundError(f"session {session_id!r} not found")
        check_member(principal, run.project, "open this session")
        return route

    def _principal(self, scope: Scope, session_id: str) -> Principal:
        """The caller: an API key in ``Authorization``, or this session's own cookie."""
        headers = _headers(scope)
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            return self._plane.auth.bearer(credential.strip())
        value = cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE)
        key_id = None if not value else self._plane.session_access.check_cookie(value, session_id)
        principal = None if key_id is None else self._plane.keys.principal_for_id(key_id)
        if principal is None:
            raise AuthenticationError(
                "not signed in to this session: open it from the UI (the Open button) or with "
                "`loom open RUN ACTION`, or send 'Authorization: Bearer <API key>'"
            )
        origin = headers.get("origin")
        changes = scope["type"] == "websocket" or scope["method"] not in ("GET", "HEAD", "OPTIONS")
        # the cookie rides only on the session's own pages: not another site's, nor (sharing
        # one origin) another session's
        if origin and changes and origin.rstrip("/") != self._plane.origin_of_session(session_id):
            raise PermissionDeniedError(f"cross-origin request refused: {origin!r}")
        return principal

    async def _admit(self, scope: Scope, session_id: str) -> Route:
        """Authenticate the caller, then find the session (in that order: who may not come
        in learns nothing about which sessions exist)."""

        def check() -> Route:
            principal = self._principal(scope, session_id)
            if not self._on_own_host(scope, session_id):
                raise NotFoundError(f"session {session_id!r} not found")
            return self._route_for(principal, session_id)

        try:
            return await to_thread.run_sync(check)
        except NotFoundError:
            entry = self._transports.pop(session_id, None)  # the session is over
            if entry is not None:
                self._close_later(entry[1])
            raise

    def _close_later(self, transport: httpx.AsyncHTTPTransport) -> None:
        task = asyncio.ensure_future(transport.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _transport(self, route: Route) -> httpx.AsyncHTTPTransport:
        entry = self._transports.get(route.id)
        if entry is not None and entry[0] == route.socket:
            return entry[1]
        transport = httpx.AsyncHTTPTransport(
            uds=route.socket,
            # no pool limit: an IDE holds long-polls and streams open
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
        )
        if entry is not None:
            self._close_later(entry[1])
        self._transports[route.id] = (route.socket, transport)
        return transport

    # -- HTTP -----------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path = _raw_path(scope)
        session_id, rest = _split(raw_path)
        try:
            route = await self._admit(scope, session_id)
        except ServerError as e:
            await _error(send, e)
            return
        if rest == "":  # the IDEs' URLs are relative: they need the trailing slash
            location = f"{PREFIX}/{session_id}/"
            if scope.get("query_string"):
                location += "?" + scope["query_string"].decode("latin-1")
            await _respond(send, 308, b"", [(b"location", location.encode("latin-1"))])
            return
        self._plane.sessions.touch(route.id)
        request_headers = _forward_headers(scope, route)
        path = raw_path if route.kind == "jupyter" else rest
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"http://ide{path}" + (f"?{query}" if query else "")
        has_body = any(n in (b"content-length", b"transfer-encoding") for n, _ in scope["headers"])
        request = httpx.Request(
            scope["method"],
            url,
            headers=request_headers,
            content=_body(receive) if has_body else None,
            extensions={
                "timeout": {
                    "connect": _CONNECT_TIMEOUT_S,
                    "read": None,
                    "write": None,
                    "pool": None,
                }
            },
        )
        try:
            _check_socket(route)
            response = await self._transport(route).handle_async_request(request)
        except _Disconnected:
            return
        except (httpx.TransportError, OSError) as e:
            await _json(
                send,
                502,
                f"session {route.id!r} (action {route.action!r} of run {route.run!r}): the IDE "
                f"is not answering on its socket, it may have exited ({type(e).__name__})",
            )
            return
        try:
            await self._stream_back(route, response, receive, send)
        finally:
            await response.aclose()

    async def _stream_back(
        self, route: Route, response: httpx.Response, receive: Receive, send: Send
    ) -> None:
        headers = []
        for name, value in _without_hop_by_hop(response.headers.raw):
            if name == b"date":
                continue  # the server adds its own: two would confuse caches
            if name == b"location" and route.kind != "jupyter":
                headers.append((name, _prefixed_location(value, route.id)))
            else:
                headers.append((name, value))
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )

        async def pump() -> None:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        # a browser that goes away must not leave an endless stream open upstream
        tasks = {asyncio.ensure_future(pump()), asyncio.ensure_future(disconnected())}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is not None and not isinstance(task.exception(), OSError):
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    # -- WebSocket ------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        raw_path = _raw_path(scope)
        session_id, rest = _split(raw_path)
        try:
            route = await self._admit(scope, session_id)
            if rest == "":
                raise NotFoundError(f"no WebSocket at {PREFIX}/{session_id}: the path needs a '/'")
        except ServerError as e:
            await _deny(send, str(e))
            return
        self._plane.sessions.touch(route.id)
        upstream = await self._connect_upstream(scope, route, raw_path, rest, send)
        if upstream is None:
            return
        try:
            await send(
                {"type": "websocket.accept", "subprotocol": upstream.subprotocol, "headers": []}
            )
            await self._relay(route, upstream, receive, send)
        finally:
            with contextlib.suppress(Exception):
                await upstream.close()

    async def _connect_upstream(
        self, scope: Scope, route: Route, raw_path: str, rest: str, send: Send
    ) -> ClientConnection | None:
        from websockets.asyncio.client import unix_connect
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.typing import Subprotocol

        headers = _headers(scope)
        path = raw_path if route.kind == "jupyter" else rest
        query = scope.get("query_string", b"").decode("latin-1")
        host = headers.get("host") or "localhost"
        uri = f"ws://{host}{path}" + (f"?{query}" if query else "")
        protocols = [
            p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()
        ]
        forwarded = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in _forward_headers(scope, route)
            if name.decode("latin-1") not in _WS_HANDSHAKE | {"host", "user-agent"}
        ]
        try:
            _check_socket(route)
            return await unix_connect(
                route.socket,
                uri,
                subprotocols=[Subprotocol(p) for p in protocols] or None,
                additional_headers=forwarded,
                user_agent_header=headers.get("user-agent"),
                proxy=None,
                compression=None,  # frames pass through once: compressing twice buys nothing
                open_timeout=_CONNECT_TIMEOUT_S,
                max_size=None,  # the browser side has the server's limit already
                ping_interval=20,
            )
        except InvalidStatus as e:
            await _deny(send, f"the IDE refused the WebSocket ({e.response.status_code})")
        except (OSError, TimeoutError, WebSocketException) as e:
            await _deny(
                send,
                f"session {route.id!r}: the IDE is not answering on its socket, it may have "
                f"exited ({type(e).__name__})",
            )
        return None

    async def _relay(
        self, route: Route, upstream: ClientConnection, receive: Receive, send: Send
    ) -> None:
        from websockets.exceptions import ConnectionClosed

        touch = self._plane.sessions.touch

        async def browser_to_ide() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.receive":
                    touch(route.id)
                    text = message.get("text")
                    await upstream.send(text if text is not None else message.get("bytes") or b"")
                elif message["type"] == "websocket.disconnect":
                    code = _sendable(int(message.get("code") or 1000))
                    await upstream.close(code, message.get("reason") or "")
                    return

        async def ide_to_browser() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for data in upstream:
                    touch(route.id)
                    if isinstance(data, str):
                        await send({"type": "websocket.send", "text": data})
                    else:
                        await send({"type": "websocket.send", "bytes": data})
            code = _sendable(upstream.close_code or 1006)
            reason = upstream.close_reason or ""
            await send({"type": "websocket.close", "code": code, "reason": reason})

        tasks = {asyncio.ensure_future(browser_to_ide()), asyncio.ensure_future(ide_to_browser())}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task


# -- helpers ------------------------------------------------------------------------------


class _Disconnected(Exception):
    """The caller went away while its request body was being forwarded."""


def _check_socket(route: Route) -> None:
    """Connect to the socket itself, never through a link: a link in the attempt's directory
    could lead to another IDE's socket."""
    try:
        mode = os.lstat(route.socket).st_mode
    except OSError as e:
        raise ConnectionError(f"no socket at {route.socket}") from e
    if not stat.S_ISSOCK(mode):
        raise ConnectionError(f"{route.socket} is not a socket")


def _raw_path(scope: Scope) -> str:
    """The path as sent (percent-encoding intact), so the IDE sees exactly what the browser
    asked for."""
    raw: bytes | None = scope.get("raw_path")
    path: str = raw.decode("latin-1").split("?", 1)[0] if raw else scope["path"]
    return path


def _split(raw_path: str) -> tuple[str, str]:
    """``(session id, rest)`` of ``/sessions/<id><rest>``; rest is ``""`` or starts with /."""
    tail = raw_path[len(PREFIX) :].lstrip("/") if raw_path.startswith(PREFIX) else ""
    session_id, slash, rest = tail.partition("/")
    return session_id, (slash + rest)


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (the first of repeated ones)."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found


def _without_hop_by_hop(
    headers: Iterable[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes]]:
    headers = [(n.lower(), v) for n, v in headers]
    listed = {
        token.strip().lower().encode("latin-1")
        for name, value in headers
        if name == b"connection"
        for token in value.decode("latin-1").split(",")
    }
    return [
        (n, v) for n, v in headers if n.decode("latin-1") not in _HOP_BY_HOP and n not in listed
    ]


def _forward_headers(scope: Scope, route: Route) -> list[tuple[bytes, bytes]]:
    """The headers to send the IDE: the caller's, less hop-by-hop ones and loom credentials,
    plus where the request really came from (and Jupyter's token)."""
    incoming = _headers(scope)
    out: list[tuple[bytes, bytes]] = []
    for name, value in _without_hop_by_hop(scope["headers"]):
        lower = name.decode("latin-1")
        if lower in _OWN or lower.startswith("x-forwarded-"):
            continue
        if lower == "cookie":
            kept = _strip_cookie(value.decode("latin-1"))
            if kept:
                out.append((name, kept.encode("latin-1")))
            continue
        out.append((name, value))
    host = incoming.get("host", "")
    if host:
        out.append((b"host", host.encode("latin-1")))
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    forwarded = {
        "x-forwarded-host": incoming.get("x-forwarded-host") or host,
        "x-forwarded-proto": incoming.get("x-forwarded-proto") or scheme,
        "x-forwarded-prefix": f"{PREFIX}/{route.id}",
    }
    client = scope.get("client")
    if client:
        before = incoming.get("x-forwarded-for")
        forwarded["x-forwarded-for"] = f"{before}, {client[0]}" if before else str(client[0])
    for header, text in forwarded.items():
        if text:
            out.append((header.encode(), text.encode("latin-1")))
    if route.kind == "jupyter" and route.token:
        out.append((b"authorization", f"token {route.token}".encode("latin-1")))
    return out


_LOOM_COOKIES = frozenset({COOKIE_NAME, SESSION_COOKIE})


def _strip_cookie(header: str) -> str:
    """A ``Cookie`` header without loom's cookies."""
    parts = [p.strip() for p in header.split(";")]
    return "; ".join(p for p in parts if p and p.split("=", 1)[0].strip() not in _LOOM_COOKIES)


def _prefixed_location(value: bytes, session_id: str) -> bytes:
    """code-server's redirect to an absolute path, moved under the session's prefix."""
    if value.startswith(b"/") and not value.startswith(b"//"):
        return f"{PREFIX}/{session_id}".encode() + value
    return value


def _sendable(code: int) -> int:
    if code in _UNSENDABLE:
        return _UNSENDABLE[code]
    if 1000 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return 1000


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(
    send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await _respond(send, status, body, [(b"content-type", b"application/json"), *(extra or [])])


async def _error(send: Send, e: ServerError) -> None:
    extra = [(b"www-authenticate", b"Bearer")] if isinstance(e, AuthenticationError) else None
    await _json(send, e.status_code, str(e), extra)


async def _deny(send: Send, detail: str) -> None:
    """Refuse a WebSocket upgrade: closed before it is accepted, which the server answers with
    HTTP 403. (A denial response with its own status is an ASGI extension, but uvicorn logs
    each one as an application error.)"""
    log.debug("session WebSocket refused: %s", detail)
    await send({"type": "websocket.close", "code": 1008})


def session_path(scope: Scope) -> bool:
    """Whether the request is the proxy's (``/sessions`` or below)."""
    path: str = scope.get("path", "")
    return path == PREFIX or path.startswith(PREFIX + "/")
