"""Who may come into a session, on the sessions' own origin (DESIGN §7).

Sessions are served from an origin that is not the UI's nor the API's (their own listener;
``{id}.localhost`` hosts give each session an origin of its own), so what an IDE serves can
never act with the UI's authority: the UI's login cookie is not accepted there, and the
sessions' cookie is not accepted anywhere else.

The way in is a **ticket**: when a member clicks Open in the UI (or runs ``loom open``), the
API mints a one-time ticket for that session and that key, good for a few minutes. The browser
takes it to ``<session origin>/_loom/enter?ticket=...``, which redeems it (once) for the
session cookie ``loom_session``: an HMAC-signed ``session id . key id . expiry``, HTTP-only,
SameSite=Lax, scoped to ``/sessions/<id>/``. Every proxied request checks that cookie (or an
API key in ``Authorization``), and checks again that its key still exists and is still a
member of the run's project.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

SESSION_COOKIE = "loom_session"
TICKET_TTL_S = 300.0
COOKIE_TTL_S = 12 * 3600
_PURPOSE = b"loom session cookie v1"
_MAX_TICKETS = 10_000


def session_host_label(session_id: str) -> str:
    """The host label of a session's own origin (``{id}`` in the sessions' origin): derived
    from its id, lower-case hex, so two sessions never share an origin whatever ids are
    chosen (host names are case-insensitive; ids are not)."""
    return "s" + hashlib.sha256(session_id.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Ticket:
    session_id: str
    key_id: str
    expires: float


class SessionAccess:
    """Issues and redeems tickets, and issues and checks session cookies."""

    def __init__(self, secret: Callable[[], bytes]) -> None:
        self._secret = secret
        self._key: bytes | None = None
        self._tickets: dict[str, Ticket] = {}
        self._lock = threading.Lock()

    def _sign(self, payload: str) -> str:
        if self._key is None:  # a key of its own: a session cookie is never a login cookie
            self._key = hmac.new(self._secret(), _PURPOSE, hashlib.sha256).digest()
        digest = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def ticket(self, session_id: str, key_id: str, now: float | None = None) -> str:
        """A one-time ticket into ``session_id`` for the API key ``key_id``."""
        now = time.monotonic() if now is None else now
        token = secrets.token_urlsafe(32)
        with self._lock:
            if len(self._tickets) >= _MAX_TICKETS:  # drop the expired ones
                self._tickets = {k: t for k, t in self._tickets.items() if t.expires > now}
            self._tickets[token] = Ticket(session_id, key_id, now + TICKET_TTL_S)
        return token

    def redeem(self, token: str, now: float | None = None) -> Ticket | None:
        """The ticket's grant, once: ``None`` for an unknown, used or expired one."""
        now = time.monotonic() if now is None else now
        with self._lock:
            found = self._tickets.pop(token, None)
        return found if found is not None and found.expires > now else None

    def cookie(self, session_id: str, key_id: str, now: float | None = None) -> str:
        """The cookie value that lets ``key_id``'s browser into ``session_id``."""
        expires = int((time.time() if now is None else now) + COOKIE_TTL_S)
        payload = f"1.{session_id}.{key_id}.{expires}"
        return f"{payload}.{self._sign(payload)}"

    def check_cookie(self, value: str, session_id: str, now: float | None = None) -> str | None:
        """The key id a genuine, unexpired cookie for ``session_id`` names; else ``None``."""
        parts = value.split(".")
        if len(parts) != 5 or parts[0] != "1" or not parts[3].isdigit():
            return None
        payload = ".".join(parts[:4])
        if not hmac.compare_digest(self._sign(payload).encode(), parts[4].encode()):
            return None
        if parts[1] != session_id or int(parts[3]) <= (time.time() if now is None else now):
            return None
        return parts[2]
