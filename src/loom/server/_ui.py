"""The web UI: a single-page app of plain ES modules in ``ui/``, served as they are (DESIGN §4).

No build step: the files are read once when the app is created. Every asset URL carries a
version (a digest of all the files), so browsers may cache assets for good and still never
run a stale mix after an upgrade; pages are revalidated on every load. Pages (``/``,
``/runs/...``, ``/keys``, ``/secrets``) need the login cookie, and send a browser without a
valid one to ``/login``; assets hold no data and are public, so the sign-in page can load them.

Every page carries a strict Content-Security-Policy: scripts, styles, images and connections
from this server only, no inline script or style, no framing. The app builds its markup from
escaped data and never injects HTML that came from the API.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import RedirectResponse

from .. import wire
from . import _ui_api
from ._auth import COOKIE_NAME
from ._authz import public
from ._errors import AuthenticationError
from ._plane import ControlPlane
from ._views import ViewService

UI_DIR = Path(__file__).parent / "ui"
STATIC_PREFIX = "/static/"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}
# relative module specifiers in `import ... from "./x.js"` and `import("./x.js")`
_IMPORT = re.compile(r"""((?:\bfrom|\bimport)\s*\(?\s*)(["'])(\./[\w.-]+\.js)\2""")
_GZIP_MIN_BYTES = 1024
_PRELOAD = b"<!--preload-->"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str


class Assets:
    """The UI's files, loaded and versioned once."""

    def __init__(self, directory: Path = UI_DIR) -> None:
        files = {
            p.name: p.read_bytes()
            for p in sorted(directory.iterdir())
            if p.is_file() and p.suffix in _TYPES
        }
        if "index.html" not in files:
            raise FileNotFoundError(f"the web UI is missing: no index.html in {directory}")
        digest = hashlib.sha256()
        for name, data in files.items():
            digest.update(name.encode() + b"\0" + data + b"\0")
        self.version = digest.hexdigest()[:16]
        self._files: dict[str, Asset] = {}
        for name, raw in files.items():
            data = raw
            if name.endswith(".js"):  # imports name versioned URLs too
                data = _IMPORT.sub(
                    lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}?v={self.version}{m.group(2)}",
                    raw.decode(),
                ).encode()
            elif name == "index.html":
                data = raw.replace(b"{{version}}", self.version.encode())
            self._files[name] = _asset(name, data)

    @property
    def index(self) -> Asset:
        return self._files["index.html"]

    def get(self, name: str) -> Asset | None:
        return None if name == "index.html" else self._files.get(name)


def _asset(name: str, data: bytes) -> Asset:
    gzipped = gzip.compress(data, mtime=0) if len(data) >= _GZIP_MIN_BYTES else None
    return Asset(
        body=data,
        gzipped=gzipped,
        content_type=_TYPES[Path(name).suffix],
        etag='"' + hashlib.sha256(data).hexdigest()[:20] + '"',
    )


def _send(request: Request, asset: Asset, headers: dict[str, str]) -> Response:
    headers = {**headers, "ETag": asset.etag, "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    body = asset.body
    if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=asset.content_type, headers=headers)


# pages hold no data (the app fetches it from the API): for anyone, signed in or not
pages = APIRouter(include_in_schema=False, dependencies=[Depends(public)])


def _assets(request: Request) -> Assets:
    assets: Assets = request.app.state.ui_assets
    return assets


def _signed_in(request: Request) -> bool:
    token = request.cookies.get(COOKIE_NAME)
    if not token:
        return False
    plane: ControlPlane = request.app.state.plane
    try:
        plane.auth.from_cookie(token)
    except AuthenticationError:
        return False
    return True


def _page(request: Request, preload: str | None = None) -> Response:
    """The app's page for a signed-in browser; ``preload`` is an API path the page will
    fetch first (the browser starts it while the scripts load)."""
    if not _signed_in(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(
            f"/login?next={quote(target, safe='')}", status_code=303, headers=PAGE_HEADERS
        )
    index = _assets(request).index
    if preload is not None:
        link = f'<link rel="preload" as="fetch" href="{escape(preload)}" crossorigin="anonymous">'
        index = _asset("index.html", index.body.replace(_PRELOAD, link.encode(), 1))
    return _send(request, index, PAGE_HEADERS)


@pages.api_route("/", methods=["GET", "HEAD"])
def home(request: Request) -> Response:
    return _page(request)


@pages.api_route("/runs", methods=["GET", "HEAD"])
def runs(request: Request) -> Response:
    return _page(request)


@pages.api_route("/runs/{rest:path}", methods=["GET", "HEAD"])
def run(request: Request, rest: str) -> Response:
    name = rest.split("/", 1)[0]
    # the run page's data, fetched while the scripts load (a name of safe characters only)
    preload = f"{wire.API_PREFIX}/views/runs/{name}" if _NAME.match(name) else None
    return _page(request, preload)


@pages.api_route("/keys", methods=["GET", "HEAD"])
def keys(request: Request) -> Response:
    return _page(request)


@pages.api_route("/secrets", methods=["GET", "HEAD"])
def secrets(request: Request) -> Response:
    return _page(request)


@pages.api_route("/login", methods=["GET", "HEAD"])
def login(request: Request) -> Response:
    """The sign-in page (the app shows the form when the path is ``/login``)."""
    return _send(request, _assets(request).index, PAGE_HEADERS)


@pages.api_route(STATIC_PREFIX + "{name}", methods=["GET", "HEAD"])
def static(request: Request, name: str) -> Response:
    assets = _assets(request)
    asset = assets.get(name)
    if asset is None:
        return Response(status_code=404, headers={"X-Content-Type-Options": "nosniff"})
    versioned = request.query_params.get("v") == assets.version
    return _send(
        request,
        asset,
        {
            "Cache-Control": _IMMUTABLE if versioned else "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


def mount_ui(app: FastAPI, plane: ControlPlane) -> None:
    """Add the UI's pages, assets and API endpoints to ``app``."""
    app.state.ui_assets = Assets()
    app.state.views = ViewService(plane.db, plane.runs, plane.environments)
    app.include_router(_ui_api.public)
    app.include_router(_ui_api.router)
    app.include_router(pages)
