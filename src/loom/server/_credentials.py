"""Per-attempt runtime credentials (DESIGN §7): all a task's code ever holds.

The server mints one for each attempt it launches: ``loomat_<payload>.<signature>``, where the
payload names (run, action, attempt) and the signature is an HMAC-SHA256 with a key derived
from the server's secret (``<data dir>/auth-secret``). Nothing is stored: a credential is
checked on every use against the database, and is accepted only while its attempt is the
action's current one and has not ended. So it dies with its attempt (an ended attempt's
credential is refused at once), survives a server restart for an attempt that still runs, and
cannot be widened: what it may do is decided by ``_authz`` from the attempt it names.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable

from .. import wire
from ._keys import AttemptScope

_PREFIX = wire.ATTEMPT_CREDENTIAL_PREFIX
_PURPOSE = b"loom attempt credential v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AttemptCredentials:
    """Mints and checks attempt credentials.

    ``secret`` returns the server's signing secret (read lazily: the first use creates it);
    ``scope_of`` returns where a *live* attempt belongs, or ``None`` once it is over.
    """

    def __init__(
        self,
        secret: Callable[[], bytes],
        scope_of: Callable[[str, str, int], AttemptScope | None],
    ) -> None:
        self._secret = secret
        self._scope_of = scope_of
        self._key: bytes | None = None

    def _sign(self, payload: str) -> str:
        if self._key is None:  # a key of its own: a credential is never a valid cookie
            self._key = hmac.new(self._secret(), _PURPOSE, hashlib.sha256).digest()
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def mint(self, run: str, action: str, attempt: int) -> str:
        """The credential of one attempt (the same every time it is asked for)."""
        payload = _b64(json.dumps([run, action, attempt], separators=(",", ":")).encode())
        return f"{_PREFIX}{payload}.{self._sign(payload)}"

    def parse(self, token: str) -> tuple[str, str, int] | None:
        """The (run, action, attempt) a genuine credential names, live or not; else ``None``."""
        if not token.startswith(_PREFIX):
            return None
        payload, _, signature = token[len(_PREFIX) :].partition(".")
        if not payload or not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            return None
        try:
            run, action, attempt = json.loads(_unb64(payload))
        except (ValueError, TypeError, binascii.Error):
            return None
        if not (isinstance(run, str) and isinstance(action, str) and type(attempt) is int):
            return None
        return run, action, attempt

    def scope(self, token: str) -> AttemptScope | None:
        """The attempt a genuine credential stands for while that attempt runs; else ``None``."""
        named = self.parse(token)
        return None if named is None else self._scope_of(*named)
