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
import ipaddress
import os
import secrets
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Response

from .. import wire
from ._credentials import AttemptCredentials
from ._errors import AuthenticationError, PermissionDeniedError
from ._keys import AttemptScope, KeyService, Principal, split_key

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

    def secret(self) -> bytes:
        """The server's signing secret (also the root of attempt credentials' key)."""
        return self._key()

    def _key(self) -> bytes:
        with self._lock:
            if self._secret is None:
                self._secret = load_or_create_key(self._path)
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


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path`` (32 random bytes or more); a new random one, written atomically
    with mode 0600, if there is none (two processes starting at once agree on whichever was
    written first)."""
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # created 0600
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
    """Turns a request's credentials into a :class:`Principal`: an API key, the login cookie,
    or an attempt's runtime credential (see ``_credentials``; ``live_attempt`` says whether
    the attempt one names still runs)."""

    def __init__(
        self,
        keys: KeyService,
        secret_path: Path,
        live_attempt: Callable[[str, str, int], AttemptScope | None],
    ) -> None:
        self.keys = keys
        self.signer = CookieSigner(secret_path)
        self.attempts = AttemptCredentials(self.signer.secret, live_attempt)

    def bearer(self, credential: str) -> Principal:
        """The principal of a bearer credential: an API key or an attempt's credential."""
        if credential.startswith(wire.ATTEMPT_CREDENTIAL_PREFIX):
            scope = self.attempts.scope(credential)
            if scope is None:
                raise AuthenticationError(
                    "invalid runtime credential: its attempt has ended, or it is not genuine"
                )
            return attempt_principal(scope)
        return self.keys.authenticate(credential)

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
            return self.bearer(credentials.strip())
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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def attempt_principal(scope: AttemptScope) -> Principal:
    """The principal of a live attempt's runtime: no key, no grants, just its attempt."""
    return Principal(
        f"runtime of {scope.run}/{scope.action}/{scope.attempt}", False, _EPOCH, attempt=scope
    )


def login_response(request: Request, token: str) -> Response:
    """A 204 that sets the login cookie ``token`` (HTTP-only, SameSite=Lax, for the whole
    server: the API and the session proxy), secure when ``request`` came over HTTPS."""
    response = Response(status_code=204)
    response.set_cookie(COOKIE_NAME, token, max_age=COOKIE_TTL_S, **_cookie_attributes(request))
    return response


def logout_response(request: Request) -> Response:
    """A 204 that clears the login cookie."""
    response = Response(status_code=204)
    # with the path and attributes it was set with, or the browser keeps it
    response.delete_cookie(COOKIE_NAME, **_cookie_attributes(request))
    return response


def _cookie_attributes(request: Request) -> dict[str, Any]:
    return {
        "path": "/",
        "httponly": True,
        "samesite": "lax",
        "secure": request.url.scheme == "https",
    }


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


# -- signing in as the local admin (the web UI's one-click login) --------------------------
#
# On the server's own machine the UI offers "Sign in as the local admin": the server signs the
# browser in with the admin key of its client configuration file (``LOOM_CONFIG``, written at
# first start), the key the CLI on this machine uses. The trade-off: a loopback connection is
# all it asks for, so it trusts the machine. Everyone who can open a TCP connection to the
# server from this machine could use it, which is why it also checks, where Linux tells
# (``/proc/net/tcp``), that the connecting process runs as the server's own user: that user
# can read the configuration file and its admin key anyway. Where the owner cannot be found
# (another OS, a hidden /proc), any local user with a shell gets admin rights through it:
# use API keys (``POST /login``) on shared machines.
#
# It is refused whenever the request could come from elsewhere: the server listens beyond
# loopback (``--allow-remote``), the peer is not a loopback address, a proxy forwarded it
# (``X-Forwarded-*``, ``Forwarded``, ``X-Real-IP``), the ``Host`` is not a loopback name (a
# DNS-rebinding page would send its own name), or, for the POST, ``Origin`` is missing or
# names another site.

_FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")
_PROC_NET = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


def local_login_refusal(
    listen_host: str,
    client: tuple[str, int] | None,
    server: tuple[str, int] | None,
    headers: Mapping[str, str],
    *,
    check_origin_header: bool,
) -> str | None:
    """Why this request may not sign in as the local admin; ``None`` if it may.

    ``listen_host`` is the address the server listens on, ``client`` and ``server`` the
    connection's two ends (the ASGI scope's ``client`` and ``server``).
    """
    if not _is_loopback_name(listen_host):
        return (
            f"the server listens on {listen_host!r}, beyond this machine: sign in with an API key"
        )
    if client is None or not _is_loopback_name(client[0]):
        return "only a browser on the server's own machine can sign in without a key"
    if any(name in headers for name in _FORWARDING_HEADERS):
        return "a proxy forwarded this request: sign in with an API key"
    host = headers.get("host", "")
    if not _is_loopback_name(urlsplit(f"//{host}").hostname or ""):
        return (
            f"open the UI at a loopback address (127.0.0.1 or localhost), not {host!r}, to sign "
            "in without a key"
        )
    if check_origin_header:
        origin = headers.get("origin", "")
        if not origin or origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
            return "cross-site request refused: sign in from this server's own page"
    if server is not None:
        uid = peer_uid(client, server)
        if uid is not None and uid != os.getuid():
            return "the browser runs as another user than the server: sign in with an API key"
    return None


def check_local_login(
    listen_host: str,
    client: tuple[str, int] | None,
    server: tuple[str, int] | None,
    headers: Mapping[str, str],
) -> None:
    """Raise :class:`PermissionDeniedError` unless this POST may sign in as the local admin."""
    reason = local_login_refusal(listen_host, client, server, headers, check_origin_header=True)
    if reason is not None:
        raise PermissionDeniedError(f"cannot sign in as the local admin: {reason}")


def _is_loopback_name(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def peer_uid(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid owning the client end of a TCP connection to this machine, from Linux's
    ``/proc/net/tcp[6]``; ``None`` where that cannot be told."""
    for table in _PROC_NET:
        try:
            text = table.read_text()
        except OSError:
            continue
        uid = find_socket_owner(text, client, server)
        if uid is not None:
            return uid
    return None


def find_socket_owner(table: str, client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid column of the row of ``table`` (the text of ``/proc/net/tcp`` or ``tcp6``)
    whose local end is ``client`` and remote end is ``server``."""
    want_local = (_normalize_ip(client[0]), client[1])
    want_remote = (_normalize_ip(server[0]), server[1])
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            local, remote = _proc_address(fields[1]), _proc_address(fields[2])
            uid = int(fields[7])
        except ValueError:
            continue
        if local == want_local and remote == want_remote:
            return uid
    return None


def _normalize_ip(host: str) -> str:
    host = host.strip("[]")
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _proc_address(field: str) -> tuple[str, int]:
    """``0100007F:1F99`` (IPv4) or 32 hex digits and a port (IPv6), each 32-bit word in the
    kernel's byte order, to ``("127.0.0.1", 8089)``."""
    hex_ip, _, hex_port = field.partition(":")
    words = [int(hex_ip[i : i + 8], 16) for i in range(0, len(hex_ip), 8)]
    packed = b"".join(struct.pack("=I", w) for w in words)
    if len(packed) not in (4, 16):
        raise ValueError(f"not an address: {field!r}")
    return _normalize_ip(str(ipaddress.ip_address(packed))), int(hex_port, 16)
