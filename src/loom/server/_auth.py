"""Who is calling: an API key in ``Authorization: Bearer``, or the login cookie (DESIGN §7).

``POST /api/v1/login`` trades an API key for the cookie ``loom_auth``, which browsers send to
the API and to the session proxy (a browser cannot put a header on a WebSocket or a link). The
cookie holds no key: it is ``1.<key id>.<expiry>.<signature>``, an HMAC-SHA256 with a secret
the server generates once (``<data dir>/auth-secret``, mode 0600). It is checked against the
key it names on every use, so deleting the key ends its logins; it expires after 12 hours.

The cookie is HTTP-only and SameSite=Lax, so other sites cannot make a browser send it with a
POST or a WebSocket. As a second line, a request that relies on the cookie for anything but
reading must come from a page of this server: its ``Origin``, when the browser sends one, must
name the host it is sent to; so must a WebSocket's.

Neither keys nor cookies are ever logged or put in an error message.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from ._errors import AuthenticationError, PermissionDeniedError
from ._keys import KeyService, Principal, split_key

COOKIE_NAME = "loom_auth"
COOKIE_TTL_S = 12 * 3600
_VERSION = "1"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CookieSigner:
    """Issues and checks login tokens with the server's secret, read (or created) on first use."""

    def __init__(self, secret_path: Path) -> None:
        self._path = secret_path
        self._secret: bytes | None = None
        self._lock = threading.Lock()

    def _key(self) -> bytes:
        with self._lock:
            if self._secret is None:
                self._secret = _load_or_create_secret(self._path)
            return self._secret

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._key(), payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, key_id: str, now: float | None = None) -> str:
        """A token naming ``key_id``, valid for :data:`COOKIE_TTL_S` seconds."""
        expires = int((time.time() if now is None else now) + COOKIE_TTL_S)
        payload = f"{_VERSION}.{key_id}.{expires}"
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str, now: float | None = None) -> str | None:
        """The key id a genuine, unexpired ``token`` names; ``None`` for anything else."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _VERSION or not parts[2].isdigit():
            return None
        payload = ".".join(parts[:3])
        if not hmac.compare_digest(self._sign(payload).encode(), parts[3].encode()):
            return None
        if int(parts[2]) <= (time.time() if now is None else now):
            return None
        return parts[1]


def _load_or_create_secret(path: Path) -> bytes:
    """The secret in ``path``; a new random one, written atomically with mode 0600, if there
    is none (two processes starting at once agree on whichever was written first)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    if len(data) >= 32:
        with contextlib.suppress(OSError):  # someone loosened it: a readable secret is no secret
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
        return data
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".auth-secret-")  # created 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
            f.flush()
            os.fsync(f.fileno())
        if data:  # a truncated file (a crash while it was written long ago): replace it
            os.replace(tmp, path)
        else:
            with contextlib.suppress(FileExistsError):  # another process won the race
                os.link(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path.read_bytes()


class Authenticator:
    """Turns a request's credentials into a :class:`Principal`."""

    def __init__(self, keys: KeyService, secret_path: Path) -> None:
        self.keys = keys
        self.signer = CookieSigner(secret_path)

    def login(self, api_key: str) -> tuple[Principal, str]:
        """Check ``api_key``; return its principal and a cookie value for it."""
        principal = self.keys.authenticate(api_key)
        parts = split_key(api_key)
        assert parts is not None  # authenticate accepted it
        return principal, self.signer.issue(parts[0])

    def from_cookie(self, token: str) -> Principal:
        """The principal a login cookie stands for; :class:`AuthenticationError` if it is
        forged, expired, or its key has been deleted."""
        key_id = self.signer.verify(token)
        principal = None if key_id is None else self.keys.principal_for_id(key_id)
        if principal is None:
            raise AuthenticationError(
                "the login cookie is invalid or expired, or its API key was deleted: log in again"
            )
        return principal

    def authenticate(
        self,
        method: str,
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        *,
        websocket: bool = False,
    ) -> Principal:
        """The caller of a request or WebSocket handshake.

        A bearer key wins over the cookie; an invalid one is refused, not ignored. With only
        the cookie, a state-changing request or a WebSocket (which no same-origin policy
        protects) must pass :func:`check_origin`.
        """
        authorization = headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return self.keys.authenticate(credentials.strip())
        token = cookies.get(COOKIE_NAME)
        if not token:
            raise AuthenticationError(
                "missing credentials: send 'Authorization: Bearer <API key>', or log in with "
                "POST /api/v1/login"
            )
        principal = self.from_cookie(token)
        if websocket or method.upper() not in _SAFE_METHODS:
            check_origin(headers)
        return principal


def check_origin(headers: Mapping[str, str]) -> None:
    """Refuse (403) a browser request whose ``Origin`` is another site than the host it was
    sent to: a cookie-borne request must come from this server's own pages. Requests without
    an ``Origin`` (non-browser clients, same-origin navigations) pass."""
    origin = headers.get("origin")
    if not origin:
        return
    host = (headers.get("x-forwarded-host") or headers.get("host") or "").split(",")[0].strip()
    origin_host = urlsplit(origin).netloc if origin != "null" else ""
    if not host or origin_host.lower() != host.lower():
        raise PermissionDeniedError(
            f"cross-site request refused: the page at {origin!r} may not use this server's "
            "login cookie"
        )
