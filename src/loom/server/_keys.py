"""API keys: minting, hashing, checking, and the key service behind ``/api-keys``.

A key reads ``loom_<id>_<secret>``. The id finds the row; only a SHA-256 of the secret is
stored, and it is compared in constant time. The secret has 256 bits of entropy, so a plain
hash (no slow KDF) is enough: nobody can guess their way to a preimage.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from .. import wire
from ._db import Database
from ._errors import AuthenticationError, ConflictError, NotFoundError
from ._models import ApiKey, utcnow

_PREFIX = "loom"
_ALPHABET = string.ascii_letters + string.digits
RUNTIME_KEY_NAME = "runtime"
_CACHE_TTL_S = 30.0


@dataclass(frozen=True, slots=True)
class MintedKey:
    key_id: str
    secret_hash: str
    plaintext: str


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the API key's name and rights.

    ``key_id`` is the key's public half (what a login cookie names); ``runtime`` is true for
    the key the server hands to the action processes it starts, and only for it.
    """

    name: str
    admin: bool
    created_at: datetime
    key_id: str = ""
    runtime: bool = False

    def info(self) -> wire.ApiKeyInfo:
        return wire.ApiKeyInfo(name=self.name, admin=self.admin, created_at=self.created_at)


def mint_key() -> MintedKey:
    """A new random key; the caller stores ``key_id`` and ``secret_hash``, shows ``plaintext``."""
    key_id = secrets.token_hex(8)
    # letters and digits only: the key survives shells, URLs and YAML unquoted
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(43))  # ~256 bits
    return MintedKey(key_id, hash_secret(secret), f"{_PREFIX}_{key_id}_{secret}")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else ``None``."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != _PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    return hmac.compare_digest(hash_secret(secret).encode(), stored_hash.encode())


class KeyService:
    """Checks presented keys and manages stored ones.

    Besides stored keys it accepts one *runtime key*, minted per server process and never
    stored: the server hands it to the action processes it starts.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._runtime = mint_key()
        self._runtime_principal = Principal(
            RUNTIME_KEY_NAME,
            admin=False,
            created_at=utcnow(),
            key_id=self._runtime.key_id,
            runtime=True,
        )
        self._cache: dict[str, tuple[float, str, Principal]] = {}
        self._lock = threading.Lock()

    @property
    def runtime_key(self) -> str:
        """The key for action processes this server starts (valid while it runs)."""
        return self._runtime.plaintext

    def authenticate(self, key: str) -> Principal:
        """The principal owning ``key``; :class:`AuthenticationError` if there is none."""
        parts = split_key(key)
        if parts is None:
            raise AuthenticationError("invalid API key")
        key_id, secret = parts
        if key_id == self._runtime.key_id:
            if secret_matches(secret, self._runtime.secret_hash):
                return self._runtime_principal
            raise AuthenticationError("invalid API key")
        found = self._lookup(key_id)
        if found is None or not secret_matches(secret, found[0]):
            raise AuthenticationError("invalid API key")
        return found[1]

    def principal_for_id(self, key_id: str) -> Principal | None:
        """The principal of the key whose public half is ``key_id``, if that key still exists
        (for a login cookie, which names the key but does not carry it)."""
        if key_id == self._runtime.key_id:
            return self._runtime_principal
        found = self._lookup(key_id)
        return None if found is None else found[1]

    def _lookup(self, key_id: str) -> tuple[str, Principal] | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        with self._db.read() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
            if row is None:
                return None
            principal = Principal(row.name, row.admin, row.created_at, key_id=row.key_id)
            with self._lock:
                self._cache[key_id] = (now + _CACHE_TTL_S, row.key_hash, principal)
            return row.key_hash, principal

    def count(self) -> int:
        with self._db.read() as s:
            return s.scalar(select(func.count()).select_from(ApiKey)) or 0

    def create(self, spec: wire.ApiKeyCreate) -> wire.ApiKeyCreated:
        """Store a new key and return it, with its plaintext (shown this once)."""
        minted = mint_key()
        with self._db.write() as s:
            if s.scalar(select(ApiKey.id).where(ApiKey.name == spec.name)) is not None:
                raise ConflictError(f"an API key named {spec.name!r} already exists")
            row = ApiKey(
                name=spec.name,
                key_id=minted.key_id,
                key_hash=minted.secret_hash,
                admin=spec.admin,
                created_at=utcnow(),
            )
            s.add(row)
        return wire.ApiKeyCreated(
            name=row.name, admin=row.admin, created_at=row.created_at, key=minted.plaintext
        )

    def list(self) -> list[wire.ApiKeyInfo]:
        with self._db.read() as s:
            rows = s.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))
            return [
                wire.ApiKeyInfo(name=r.name, admin=r.admin, created_at=r.created_at) for r in rows
            ]

    def delete(self, name: str) -> None:
        """Delete the key named ``name``; the last admin key cannot go (nobody could log in)."""
        with self._db.write() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.name == name))
            if row is None:
                raise NotFoundError(f"API key {name!r} not found")
            if row.admin:
                admins = s.scalar(
                    select(func.count()).select_from(ApiKey).where(ApiKey.admin.is_(True))
                )
                if admins == 1:
                    raise ConflictError(
                        f"API key {name!r} is the last admin key; create another admin key "
                        "before deleting it"
                    )
            s.delete(row)
            with self._lock:
                self._cache.pop(row.key_id, None)
