"""The secret store: named values that actions get as environment variables or files.

A secret is scoped to every project and domain, to one domain, to one project, or to one
project's domain; an action sees, for each key its task declares, the most specific secret its
run's project and domain match (project and domain, then project, then domain, then global).

Values are encrypted at rest with Fernet (AES-128-CBC and HMAC-SHA256) under a key kept next to
the server's data (``<data-dir>/secrets-key``, mode 0600): a copy of the database alone reveals
nothing. They leave the server only for a running attempt's own credential, in answer to the
action that declares them, and never appear in listings, events or logs.
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Select, or_, select

from .. import wire
from ._auth import load_or_create_key
from ._db import Database
from ._errors import BadRequestError, ConflictError, NotFoundError, ServerError
from ._models import Project, SecretRow, utcnow


class SecretService:
    """Stores, lists and resolves secrets; the encryption key is read on first use."""

    def __init__(self, db: Database, key_path: Path) -> None:
        self._db = db
        self._key_path = key_path
        self._fernet: Fernet | None = None
        self._lock = threading.Lock()

    def _cipher(self) -> Fernet:
        with self._lock:
            if self._fernet is None:
                raw = load_or_create_key(self._key_path)[:32]
                self._fernet = Fernet(base64.urlsafe_b64encode(raw))
            return self._fernet

    def create(self, spec: wire.SecretCreate) -> wire.SecretInfo:
        project, domain = spec.project or "", spec.domain or ""
        if domain and domain not in wire.DOMAINS:
            raise BadRequestError(
                f"unknown domain {domain!r}: use one of {', '.join(wire.DOMAINS)}"
            )
        ciphertext = self._cipher().encrypt(spec.value.encode()).decode()
        now = utcnow()
        with self._db.write() as s:
            if project and s.scalar(select(Project.id).where(Project.name == project)) is None:
                raise NotFoundError(f"project {project!r} not found")
            row = s.scalar(_scoped(spec.key, project, domain))
            if row is not None and not spec.overwrite:
                raise ConflictError(
                    f"secret {spec.key!r} already exists{_scope_text(project, domain)}; "
                    "pass --overwrite (overwrite: true) to replace its value"
                )
            if row is None:
                row = SecretRow(key=spec.key, project=project, domain=domain, created_at=now)
                s.add(row)
            row.ciphertext = ciphertext
            row.updated_at = now
            s.flush()
            return _info(row)

    def listing(
        self, project: str | None = None, domain: str | None = None
    ) -> list[wire.SecretInfo]:
        """Every secret, or those of exactly one scope (``""`` or ``None``: any)."""
        query = select(SecretRow).order_by(SecretRow.key, SecretRow.project, SecretRow.domain)
        if project is not None:
            query = query.where(SecretRow.project == project)
        if domain is not None:
            query = query.where(SecretRow.domain == domain)
        with self._db.read() as s:
            return [_info(r) for r in s.scalars(query)]

    def delete(self, key: str, project: str | None, domain: str | None) -> None:
        project, domain = project or "", domain or ""
        with self._db.write() as s:
            row = s.scalar(_scoped(key, project, domain))
            if row is None:
                raise NotFoundError(f"secret {key!r} not found{_scope_text(project, domain)}")
            s.delete(row)

    def resolve(self, keys: list[str], project: str, domain: str) -> wire.SecretValues:
        """The values of ``keys`` as a run of ``project`` and ``domain`` sees them."""
        if not keys:
            return wire.SecretValues()
        with self._db.read() as s:
            rows = list(
                s.scalars(
                    select(SecretRow).where(
                        SecretRow.key.in_(sorted(set(keys))),
                        or_(SecretRow.project == "", SecretRow.project == project),
                        or_(SecretRow.domain == "", SecretRow.domain == domain),
                    )
                )
            )
        best: dict[str, SecretRow] = {}
        for row in rows:  # the most specific scope wins: project beats domain beats global
            rank = (row.project != "", row.domain != "")
            known = best.get(row.key)
            if known is None or rank > (known.project != "", known.domain != ""):
                best[row.key] = row
        values: dict[str, str] = {}
        for key, row in best.items():
            try:
                values[key] = self._cipher().decrypt(row.ciphertext.encode()).decode()
            except InvalidToken as e:
                raise ServerError(
                    f"secret {key!r} cannot be decrypted: the server's secrets key "
                    f"({self._key_path}) is not the one it was stored with"
                ) from e
        return wire.SecretValues(values=values, missing=[k for k in keys if k not in values])


def _scoped(key: str, project: str, domain: str) -> Select[SecretRow]:
    return select(SecretRow).where(
        SecretRow.key == key, SecretRow.project == project, SecretRow.domain == domain
    )


def _info(row: SecretRow) -> wire.SecretInfo:
    return wire.SecretInfo(
        key=row.key,
        project=row.project or None,
        domain=row.domain or None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _scope_text(project: str, domain: str) -> str:
    if project and domain:
        return f" in project {project!r}, domain {domain!r}"
    if project:
        return f" in project {project!r} (every domain)"
    if domain:
        return f" in domain {domain!r} (every project)"
    return " for every project and domain"
