"""Running the server: one process with the API, the scheduler and the local executor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import uvicorn

from ..executors import Executor
from ._app import ByListener, create_app, create_session_app
from ._bootstrap import bootstrap_admin_key
from ._errors import ConfigurationError
from ._plane import ControlPlane
from ._proxy import SessionProxy
from ._settings import ServerSettings

log = logging.getLogger("loom.server")

READY_LINE = "loom server ready at {endpoint}"


class _Uvicorn(uvicorn.Server):
    """uvicorn, with our own signal handling: stop streams at once, exit with status 0."""

    def __init__(self, config: uvicorn.Config, plane: ControlPlane) -> None:
        super().__init__(config)
        self._plane = plane

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl+C: stop waiting for connections
        self.should_exit = True
        # SSE streams and long-polls would hold the graceful shutdown open: end them now
        self._plane.bus.stop()


def make_private(data_dir: Path) -> None:
    """Create the data directory, or take an existing one, for the server's user alone: it
    holds the database, the secrets' key, the login secret, logs and every value."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if data_dir.stat().st_mode & 0o077:
            data_dir.chmod(0o700)
    except OSError as e:
        raise ConfigurationError(f"cannot make the data directory {data_dir} private: {e}") from e


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 picks a free one)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {e}") from e
    sock.set_inheritable(False)
    return sock


def serve(
    settings: ServerSettings, *, new_admin_key: bool = False, executor: Executor | None = None
) -> None:
    """Run the server until SIGTERM or SIGINT; print the ready line once it takes requests.

    Raises :class:`ConfigurationError` for settings it cannot start with.
    """
    make_private(settings.data_dir)
    plane = ControlPlane(settings, executor=executor)
    sock = bind(settings.host, settings.port)
    try:
        host, port = sock.getsockname()[:2]
        plane.endpoint = f"http://{settings.client_host(host)}:{port}"
        # interactive sessions have a listener, and so an origin, of their own
        session_sock = bind(settings.host, settings.session_bind_port())
    except BaseException:
        sock.close()
        raise
    sessions = create_session_app(plane)
    try:
        session_port = session_sock.getsockname()[1]
        plane.session_origin = settings.session_origin(session_port, host)
        plane.prepare()
        message = bootstrap_admin_key(
            plane.db, plane.keys, settings.config_path, plane.endpoint, new_key=new_admin_key
        )
        if message:
            print(message, file=sys.stderr, flush=True)
        config = uvicorn.Config(
            ByListener(create_app(plane), sessions, session_port),
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
            server_header=False,
        )
        asyncio.run(_run(_Uvicorn(config, plane), [sock, session_sock], sessions, plane.endpoint))
    finally:
        sock.close()
        session_sock.close()
        plane.db.dispose()


async def _run(
    server: _Uvicorn, socks: list[socket.socket], sessions: SessionProxy, endpoint: str
) -> None:
    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.005)
        print(READY_LINE.format(endpoint=endpoint), flush=True)

    announcer = asyncio.create_task(announce())
    try:
        await server.serve(sockets=socks)
    finally:
        announcer.cancel()
        await sessions.aclose()
