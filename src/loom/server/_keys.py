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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from .. import wire
from ._db import Database
from ._errors import AuthenticationError, BadRequestError, ConflictError, NotFoundError
from ._models import ApiKey, Project, utcnow

_PREFIX = "loom"
_ALPHABET = string.ascii_letters + string.digits
_CACHE_TTL_S = 30.0


@dataclass(frozen=True, slots=True)
class MintedKey:
    key_id: str
    secret_hash: str
    plaintext: str


@dataclass(frozen=True, slots=True)
class AttemptScope:
    """The one attempt a runtime credential stands for, and where its run lives."""

    run: str
    action: str
    attempt: int
    project: str
    domain: str
    bundle: str


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an API key's name and rights, or one attempt's runtime.

    ``key_id`` is an API key's public half (what a login cookie names); ``grants`` its role in
    each project (an admin key needs none); ``attempt`` is set for a per-attempt runtime
    credential, and only for one: it grants nothing beyond that attempt (see ``_authz``).
    """

    name: str
    admin: bool
    created_at: datetime
    key_id: str = ""
    grants: Mapping[str, wire.Role] = field(default_factory=dict)
    attempt: AttemptScope | None = None

    def info(self) -> wire.ApiKeyInfo:
        return wire.ApiKeyInfo(
            name=self.name, admin=self.admin, created_at=self.created_at, projects=dict(self.grants)
        )


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
    """Checks presented keys and manages stored ones."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[str, tuple[float, str, Principal]] = {}
        self._lock = threading.Lock()

    def authenticate(self, key: str) -> Principal:
        """The principal owning ``key``; :class:`AuthenticationError` if there is none."""
        parts = split_key(key)
        if parts is None:
            raise AuthenticationError("invalid API key")
        key_id, secret = parts
        found = self._lookup(key_id)
        if found is None or not secret_matches(secret, found[0]):
            raise AuthenticationError("invalid API key")
        return found[1]

    def principal_for_id(self, key_id: str) -> Principal | None:
        """The principal of the key whose public half is ``key_id``, if that key still exists
        (for a login cookie, which names the key but does not carry it)."""
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
            principal = Principal(
                row.name, row.admin, row.created_at, key_id=row.key_id, grants=_grants(row)
            )
            with self._lock:
                self._cache[key_id] = (now + _CACHE_TTL_S, row.key_hash, principal)
            return row.key_hash, principal

    def count(self) -> int:
        with self._db.read() as s:
            return s.scalar(select(func.count()).select_from(ApiKey)) or 0

    def create(self, spec: wire.ApiKeyCreate) -> wire.ApiKeyCreated:
        """Store a new key and return it, with its plaintext (shown this once)."""
        if spec.admin == bool(spec.projects):
            raise BadRequestError(
                "an API key is either an admin key or has a role in named projects: give "
                "`admin: true` (`loom create api-key NAME --admin`) or `projects` "
                "(`--project P [--role viewer|member]`), not "
                + ("both" if spec.admin else "neither")
            )
        minted = mint_key()
        with self._db.write() as s:
            if s.scalar(select(ApiKey.id).where(ApiKey.name == spec.name)) is not None:
                raise ConflictError(f"an API key named {spec.name!r} already exists")
            if spec.projects:
                known = set(s.scalars(select(Project.name).where(Project.name.in_(spec.projects))))
                unknown = sorted(set(spec.projects) - known)
                if unknown:
                    raise NotFoundError(
                        f"project {unknown[0]!r} not found: create it first with "
                        f"`loom create project {unknown[0]}`"
                    )
            row = ApiKey(
                name=spec.name,
                key_id=minted.key_id,
                key_hash=minted.secret_hash,
                admin=spec.admin,
                grants={p: r.value for p, r in sorted(spec.projects.items())},
                created_at=utcnow(),
            )
            s.add(row)
        return wire.ApiKeyCreated(
            name=row.name,
            admin=row.admin,
            created_at=row.created_at,
            projects=_grants(row),
            key=minted.plaintext,
        )

    def list(self) -> list[wire.ApiKeyInfo]:
        with self._db.read() as s:
            rows = s.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))
            return [
                wire.ApiKeyInfo(
                    name=r.name, admin=r.admin, created_at=r.created_at, projects=_grants(r)
                )
                for r in rows
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


def _grants(row: ApiKey) -> dict[str, wire.Role]:
    stored: dict[str, Any] = row.grants or {}
    return {project: wire.Role(role) for project, role in stored.items()}
