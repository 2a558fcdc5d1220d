"""The FastAPI application (routes, error shapes, the control plane's lifespan), and the
sessions' app, which the server serves on a listener of its own (see ``_session_access``)."""

from __future__ import annotations

import errno
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import wire
from .._version import __version__
from ._api import public, router, runtime_batches
from ._errors import AuthenticationError, ServerError, StorageFullError
from ._plane import ControlPlane
from ._proxy import SessionProxy, session_path
from ._ui import mount_ui

#: JSON bodies larger than this are refused before they are read (inputs and outputs are
#: checked precisely, at wire.MAX_INLINE_BYTES, once parsed).
_MAX_JSON_BODY = 4 * wire.MAX_INLINE_BYTES


def create_session_app(plane: ControlPlane) -> SessionProxy:
    """The sessions' app: the proxy alone, for the sessions' own listener (close it with
    ``aclose`` when the server stops)."""
    return SessionProxy(plane)


def create_app(plane: ControlPlane, *, manage_plane: bool = True) -> FastAPI:
    """The API app for ``plane``. With ``manage_plane`` its lifespan starts and stops the
    plane's scheduler and executor (``prepare`` must have run)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_plane:
            await plane.start()
        try:
            yield
        finally:
            if manage_plane:
                await plane.stop()

    app = FastAPI(
        title="loom control plane",
        version=__version__,
        summary="Runs, actions, bundles and events of a loom server.",
        openapi_url=None,  # served by the authenticated route in _api
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.plane = plane
    app.openapi_url = f"{wire.API_PREFIX}/openapi.json"  # where clients find the schema
    app.include_router(public)
    app.include_router(router)
    app.include_router(runtime_batches)
    mount_ui(app, plane)  # the web UI at `/` and the endpoints it needs
    app.add_middleware(_BodyLimit)
    app.add_middleware(_NoSessionsHere, plane=plane)
    # outermost: nothing routes or looks up a path or query with a NUL in it
    app.add_middleware(_RefuseNul)

    @app.exception_handler(ServerError)
    async def server_error(request: Request, exc: ServerError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(OSError)
    async def storage_error(request: Request, exc: OSError) -> JSONResponse:
        if exc.errno not in _FULL:
            raise exc  # a 500, as any other bug
        return await server_error(request, storage_full(exc))

    @app.exception_handler(OperationalError)
    async def database_error(request: Request, exc: OperationalError) -> JSONResponse:
        if "full" not in str(exc.orig).lower():
            raise exc
        return await server_error(request, storage_full(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_errors(exc.errors())}, status_code=422)

    app.openapi = _with_error_responses(app.openapi)  # type: ignore[method-assign]
    return app


_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def storage_full(error: BaseException) -> StorageFullError:
    """What a client hears when the server's disk is full: what is full, and that nothing
    of the request was recorded (it can be sent again once there is room)."""
    where = getattr(error, "filename", None)
    return StorageFullError(
        "the server's storage is full"
        + (f" (writing {where})" if where else "")
        + ": nothing of this request was recorded; free disk space on the server (its data "
        "directory, database or object store), then send it again"
    )


_NO_NUL = "must not contain NUL (\\x00) characters"


def validation_errors(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's validation errors without what was sent (``input``, and ``ctx`` built from
    it): an API key or a secret's value must not come back in an error, nor land in a log."""
    shown = []
    for error in errors:
        msg = str(error.get("msg", ""))
        if error.get("type") == "string_pattern_mismatch" and (
            error.get("ctx", {}).get("pattern") == wire.NUL_FREE_PATTERN
        ):
            msg = f"String {_NO_NUL}"
        shown.append({"loc": list(error.get("loc", ())), "msg": msg, "type": error.get("type")})
    return shown


class _NoSessionsHere:
    """``/sessions/...`` on the UI's and the API's origin: not here (an IDE's pages must never
    run with the UI's cookie), but on the sessions' own origin."""

    def __init__(self, app: ASGIApp, plane: ControlPlane) -> None:
        self.app = app
        self.plane = plane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and session_path(scope):
            detail = (
                f"sessions are served from their own origin, {self.plane.session_origin}: "
                "open one from the UI or with `loom open`"
            )
            await _send_json(send, 404, {"detail": detail})
        elif scope["type"] == "websocket" and session_path(scope):
            await receive()
            await send({"type": "websocket.close", "code": 1008})
        else:
            await self.app(scope, receive, send)


class ByListener:
    """The server's one ASGI app over two listeners: what comes to the sessions' port goes
    to the sessions' app, everything else (and the lifespan) to the API's."""

    def __init__(self, api: ASGIApp, sessions: ASGIApp, session_port: int) -> None:
        self.api = api
        self.sessions = _RefuseNul(sessions)  # (the proxy looks sessions up by their id)
        self.session_port = session_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] != "lifespan" and server and server[1] == self.session_port:
            await self.sessions(scope, receive, send)
        else:
            await self.api(scope, receive, send)


#: Endpoints that take bytes, not JSON, and check their own (larger) limits while reading.
_OWN_LIMITS = (f"{wire.API_PREFIX}/bundles/", f"{wire.API_PREFIX}/data/")


class _BodyLimit:
    """Refuse oversized JSON bodies by their Content-Length, before reading them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(_OWN_LIMITS):
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > _MAX_JSON_BODY:
                    detail = (
                        f"request body of {int(value)} bytes is too large; inputs and outputs "
                        f"are limited to {wire.MAX_INLINE_BYTES} bytes (wire.MAX_INLINE_BYTES)"
                    )
                    await _send_json(send, 413, {"detail": detail})
                    return
        await self.app(scope, receive, send)


class _RefuseNul:
    """Answer 422 to a request whose path or query string holds a NUL (raw or ``%00``),
    before anything routes it: no database stores NUL in text (PostgreSQL refuses it), and no
    name needs one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        where = _nul_location(scope)
        if where is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()  # (its "connect")
            await send({"type": "websocket.close", "code": 1008})
            return
        error = {"loc": where, "msg": _NO_NUL, "type": "nul"}
        await _send_json(send, 422, {"detail": [error]})


async def _send_json(send: Send, status: int, content: Any) -> None:
    """Answer with ``content`` as JSON, from a middleware (before any route)."""
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _nul_location(scope: Scope) -> list[str] | None:
    """Where a request's path or query holds a NUL (``["query", name]``), or ``None``."""
    if "\x00" in scope["path"]:  # (the path arrives percent-decoded)
        return ["path"]
    query: bytes = scope.get("query_string", b"")
    if b"\x00" not in query and b"%00" not in query:
        return None
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return ["query", *[name for name, value in pairs if "\x00" in name + value][:1]]


#: Statuses a route may answer besides its own, by what the route has (see
#: :func:`_error_statuses`); each with its meaning for the OpenAPI document.
_STATUS_MEANINGS = {
    "400": "Bad request: well-formed, but it cannot be done as asked",
    "401": "No API key or login cookie, or one the server does not know",
    "403": "The caller may not do this",
    "404": "What the request names does not exist (or is in a project the caller cannot see)",
    "409": "The request contradicts the current state (a stale attempt, a duplicate name...)",
    "413": "The body is over a size limit",
    "422": "The request does not match the schema, or a value is not valid JSON",
    "504": "The runtime did not answer in time",
    "507": "The server's storage is full: nothing was recorded; send it again later",
}
#: What some public routes and one long wait answer besides the generic rules.
_OWN_STATUSES = {
    ("post", f"{wire.API_PREFIX}/login"): ("401",),
    ("post", f"{wire.API_PREFIX}/login/local"): ("403", "404"),
    ("post", f"{wire.API_PREFIX}/runs/{{run}}/actions/{{action}}/session/resume"): ("504",),
}
_MUTATING = frozenset({"post", "put", "patch", "delete"})


def _error_statuses(method: str, path: str, operation: dict[str, Any]) -> set[str]:
    """The error statuses an operation may answer: every one 422 (a NUL in the path or query
    is refused before routing); one with a body 400 (not JSON) and 413 (over a limit); an
    authenticated one 401 and 403, and if it names something (a parameter or a body) or
    changes something 400, 404 and 409 (what it names is in the wrong state)."""
    statuses = {"422", *_OWN_STATUSES.get((method, path), ())}
    has_body = "requestBody" in operation
    if has_body:
        statuses |= {"400", "413"}
    if method == "put":  # (an upload: its body is bytes, not in the schema)
        statuses.add("413")
    if method in _MUTATING:
        statuses.add("507")
    if operation.get("security"):
        statuses |= {"401", "403"}
        if has_body or operation.get("parameters") or method in _MUTATING:
            statuses |= {"400", "404", "409"}
    return statuses


def _with_error_responses(build: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """FastAPI's OpenAPI document with the error responses of every operation, which it
    lists only for validation: built once, on first use."""
    documented = False

    def openapi() -> dict[str, Any]:
        nonlocal documented
        schema = build()  # FastAPI keeps the document it built: this changes it once
        if documented:
            return schema
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault(
            "ErrorBody",
            wire.ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"),
        )
        error = {"$ref": "#/components/schemas/ErrorBody"}
        invalid = {"anyOf": [{"$ref": "#/components/schemas/HTTPValidationError"}, error]}
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                for status in sorted(_error_statuses(method, path, operation)):
                    body = invalid if status == "422" else error
                    responses[status] = {
                        "description": _STATUS_MEANINGS[status],
                        "content": {"application/json": {"schema": body}},
                    }
        documented = True
        return schema

    return openapi
