"""Code bundles: content-addressed ``.tar.gz`` archives of a run's source root.

A bundle is checked at upload, before anything could extract it: it must be a gzip-compressed
tar whose members all stay inside the archive's root (no absolute paths, no ``..``, no links
pointing out, no device files), and whose SHA-256 is the digest it was uploaded under.
"""

from __future__ import annotations

import posixpath
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select

from .. import wire
from ._db import Database
from ._errors import BadRequestError, NotFoundError
from ._models import Bundle, utcnow
from ._objects import ObjectStore
from ._runs import normalize_digest

#: Unpacked size allowed per packed byte: a bundle that expands more is a zip bomb.
_MAX_EXPANSION = 100


def bundle_key(digest: str) -> str:
    return f"bundles/{digest}.tar.gz"


def _unsafe_path(name: str) -> bool:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return True
    return ".." in name.replace("\\", "/").split("/")


def validate_bundle(path: Path, max_unpacked: int) -> None:
    """Raise :class:`BadRequestError` unless ``path`` is a safe gzip-compressed tar."""
    total = 0
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            for member in archive:
                name = member.name
                if _unsafe_path(name):
                    raise BadRequestError(
                        f"bundle rejected: member {name!r} escapes the archive root (absolute "
                        "path or '..')"
                    )
                if member.issym():
                    target = member.linkname
                    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
                    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                        raise BadRequestError(
                            f"bundle rejected: symlink {name!r} -> {target!r} points outside "
                            "the archive root"
                        )
                elif member.islnk():
                    target = member.linkname
                    if _unsafe_path(target):
                        raise BadRequestError(
                            f"bundle rejected: hard link {name!r} -> {target!r} points outside "
                            "the archive root"
                        )
                elif not (member.isfile() or member.isdir()):
                    raise BadRequestError(
                        f"bundle rejected: member {name!r} is a device or FIFO; bundles hold "
                        "files, directories and links only"
                    )
                total += member.size
                if total > max_unpacked:
                    raise BadRequestError(
                        f"bundle rejected: it unpacks to more than {max_unpacked} bytes"
                    )
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise BadRequestError(
            f"bundle rejected: not a gzip-compressed tar archive ({type(e).__name__}: {e})"
        ) from None


class BundleService:
    """Stores bundles in the object store and their metadata in the database."""

    def __init__(self, db: Database, store: ObjectStore, max_bytes: int) -> None:
        self._db = db
        self._store = store
        self.max_bytes = max_bytes

    def info(self, digest: str) -> wire.BundleInfo:
        """The stored bundle's info; :class:`NotFoundError` if it is not uploaded."""
        hexdigest = normalize_digest(digest)
        with self._db.read() as s:
            row = s.get(Bundle, hexdigest)
            if row is None:
                raise NotFoundError(f"bundle {digest} not found")
            return wire.BundleInfo(digest=digest, size=row.size)

    def put(self, digest: str, path: Path, size: int, sha256: str) -> wire.BundleInfo:
        """Check the uploaded file at ``path`` and store it (a no-op if already stored)."""
        hexdigest = normalize_digest(digest)
        if sha256 != hexdigest:
            raise BadRequestError(
                f"bundle digest mismatch: uploaded to {digest} but the body's SHA-256 is "
                f"sha256:{sha256}"
            )
        with self._db.read() as s:
            if s.get(Bundle, hexdigest) is not None:
                return wire.BundleInfo(digest=digest, size=size)
        validate_bundle(path, max(size, 1 << 20) * _MAX_EXPANSION)
        key = bundle_key(hexdigest)
        self._store.put_file(key, path, move=True)
        with self._db.write() as s:
            if s.get(Bundle, hexdigest) is None:
                s.add(Bundle(digest=hexdigest, size=size, object_key=key, created_at=utcnow()))
        return wire.BundleInfo(digest=digest, size=size)

    def source(self, digest: str) -> tuple[Path | None, Iterator[bytes] | None, int]:
        """A local file with the bundle, or else a byte iterator; and its size."""
        hexdigest = normalize_digest(digest)
        with self._db.read() as s:
            row = s.scalar(select(Bundle).where(Bundle.digest == hexdigest))
            if row is None:
                raise NotFoundError(f"bundle {digest} not found")
            key, size = row.object_key, row.size
        local = self._store.local_path(key)
        if local is not None:
            return local, None, size
        return None, self._store.iter_bytes(key), size
