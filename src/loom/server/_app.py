"""The FastAPI application (routes, error shapes, the control plane's lifespan), and the
sessions' app, which the server serves on a listener of its own (see ``_session_access``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import wire
from .._version import __version__
from ._api import public, router
from ._errors import AuthenticationError, ServerError
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
    mount_ui(app, plane)  # the web UI at `/` and the endpoints it needs
    app.add_middleware(_BodyLimit)
    app.add_middleware(_NoSessionsHere, plane=plane)

    @app.exception_handler(ServerError)
    async def server_error(request: Request, exc: ServerError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code, headers=headers)

    return app


class _NoSessionsHere:
    """``/sessions/...`` on the UI's and the API's origin: not here (an IDE's pages must never
    run with the UI's cookie), but on the sessions' own origin."""

    def __init__(self, app: ASGIApp, plane: ControlPlane) -> None:
        self.app = app
        self.plane = plane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and session_path(scope):
            body = json.dumps(
                {
                    "detail": "sessions are served from their own origin, "
                    f"{self.plane.session_origin}: open one from the UI or with `loom open`"
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
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
        self.sessions = sessions
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
                    body = json.dumps(
                        {
                            "detail": f"request body of {int(value)} bytes is too large; inputs "
                            f"and outputs are limited to {wire.MAX_INLINE_BYTES} bytes "
                            "(wire.MAX_INLINE_BYTES)"
                        }
                    ).encode()
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 413,
                            "headers": [
                                (b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)
