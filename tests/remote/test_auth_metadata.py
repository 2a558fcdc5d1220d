"""``loom.remote.auth_metadata``: extra headers on the requests made inside the block."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator

import pytest

import loom.remote as remote
from loom.errors import ApiError
from loom.remote import Client


@pytest.fixture
def seen() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A loopback HTTP server that records each request's headers and answers 404."""
    headers: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers.append({k.lower(): v for k, v in self.headers.items()})
            body = b'{"detail": "no such run"}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", headers
    finally:
        server.shutdown()


def test_pairs_go_with_requests_in_the_block_only(seen: tuple[str, list[dict[str, str]]]) -> None:
    endpoint, headers = seen

    async def get() -> None:
        async with Client(endpoint, "loom_key") as client:
            with pytest.raises(ApiError):
                await client.get_run("some-run")

    with remote.auth_metadata(("x-team", "ml"), ("Authorization", "Bearer stolen")):
        with remote.auth_metadata(("x-trace", "t1")):
            asyncio.run(get())
    asyncio.run(get())
    inside, after = headers
    assert inside["x-team"] == "ml" and inside["x-trace"] == "t1"
    assert inside["authorization"] == "Bearer loom_key"  # the credential is not replaced
    assert "x-team" not in after and "x-trace" not in after


def test_pairs_must_be_pairs_of_strings() -> None:
    with pytest.raises(TypeError, match="pairs of str"), remote.auth_metadata(("k", 1)):  # type: ignore[arg-type]
        pass
