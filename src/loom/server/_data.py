"""Data: the content-addressed objects that remote ``File``, ``Dir`` and ``DataFrame`` values
refer to (``loom://data/<sha256>/<name>``, see :mod:`loom.wire`).

An object is stored once per content under ``data/<sha256>`` in the object store. Which
projects may read it is in the database (``data_objects``): a project gets an object when it
is uploaded in that project (by a member, or by a runtime of one of its runs), and reads only
what it got, whoever else stored the same bytes. The server never unpacks an object; the SDK
that downloads a ``Dir``'s archive extracts it safely.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import wire
from ._db import Database
from ._errors import BadRequestError, NotFoundError
from ._models import DataObject, Project, utcnow
from ._objects import ObjectStore

_HEX = frozenset("0123456789abcdef")


def data_key(hexdigest: str) -> str:
    return f"data/{hexdigest}"


def normalize_data_digest(digest: str) -> str:
    """The bare sha256 hex of a data digest given as ``sha256:<hex>`` or ``<hex>``."""
    hexpart = digest.removeprefix("sha256:").lower()
    if len(hexpart) != 64 or not set(hexpart) <= _HEX:
        raise BadRequestError(
            f"invalid data digest {digest!r}: expected 64 hex digits (the SHA-256 of the "
            "bytes), optionally after 'sha256:'"
        )
    return hexpart


@dataclass(frozen=True, slots=True)
class DataRef:
    """A parsed ``loom://data/<sha256>/<name>[/]`` reference (``tree``: a ``Dir``)."""

    digest: str
    name: str
    tree: bool


def parse_data_uri(uri: str) -> DataRef | None:
    """The reference ``uri`` spells, or ``None`` if it is not a well-formed one."""
    if not uri.startswith(wire.DATA_URI_PREFIX):
        return None
    digest, _, name = uri[len(wire.DATA_URI_PREFIX) :].partition("/")
    tree = name.endswith("/")
    name = name.removesuffix("/")
    if len(digest) != 64 or not set(digest) <= _HEX:
        return None
    if not name or "/" in name or "\x00" in name or name in (".", ".."):
        return None
    return DataRef(digest, name, tree)


class DataService:
    """Stores data objects in the object store, verified against their digest."""

    def __init__(self, store: ObjectStore, max_bytes: int, db: Database | None = None) -> None:
        self._store = store
        self.max_bytes = max_bytes
        self._db = db

    def grant(self, digest: str, project: str) -> None:
        """Let ``project`` read the object (it was uploaded there); idempotent."""
        assert self._db is not None
        hexdigest = normalize_data_digest(digest)
        try:
            with self._db.write() as s:
                project_id = s.scalar(select(Project.id).where(Project.name == project))
                if project_id is None:
                    raise NotFoundError(f"project {project!r} not found")
                if s.get(DataObject, (hexdigest, project_id)) is None:
                    s.add(DataObject(digest=hexdigest, project_id=project_id, created_at=utcnow()))
        except IntegrityError:
            pass  # granted at the same moment by another upload

    def readable(self, digest: str, projects: frozenset[str] | None) -> bool:
        """Whether one of ``projects`` (``None``: any, an admin's) may read the object."""
        if projects is None:
            return True
        if not projects:
            return False
        assert self._db is not None
        hexdigest = normalize_data_digest(digest)
        with self._db.read() as s:
            found = s.scalar(
                select(DataObject.digest)
                .join(Project, Project.id == DataObject.project_id)
                .where(DataObject.digest == hexdigest, Project.name.in_(projects))
                .limit(1)
            )
        return found is not None

    def size(self, digest: str) -> int | None:
        """The stored object's size when the store knows it cheaply (a local store), else
        ``None``; :class:`NotFoundError` if nothing is stored under ``digest``."""
        key = data_key(normalize_data_digest(digest))
        local = self._store.local_path(key)
        if local is not None:
            return local.stat().st_size
        if not self._store.exists(key):
            raise NotFoundError(f"data {digest} not found")
        return None

    def put(self, digest: str, path: Path, size: int, sha256: str) -> wire.DataInfo:
        """Store the uploaded file at ``path`` (consumed) under its digest; a no-op if the
        content is stored already."""
        hexdigest = normalize_data_digest(digest)
        if sha256 != hexdigest:
            raise BadRequestError(
                f"data digest mismatch: uploaded to {digest} but the body's SHA-256 is "
                f"sha256:{sha256} (did the file change while it was uploaded?)"
            )
        key = data_key(hexdigest)
        if not self._store.exists(key):
            self._store.put_file(key, path, move=True)
        return wire.DataInfo(digest=digest, size=size)

    def source(self, digest: str) -> tuple[Path | None, Iterator[bytes] | None]:
        """A local file holding the object, or else an iterator over its bytes."""
        hexdigest = normalize_data_digest(digest)
        key = data_key(hexdigest)
        local = self._store.local_path(key)
        if local is not None:
            return local, None
        if not self._store.exists(key):  # before streaming: a 404 cannot follow a 200
            raise NotFoundError(f"data sha256:{hexdigest} not found")
        return None, self._store.iter_bytes(key)
