"""Code bundles: content-addressed ``.tar.gz`` archives of a run's source root.

A bundle is checked at upload, before anything could extract it: it must be a gzip-compressed
tar whose members all stay inside the archive's root (no absolute paths, no ``..``, no links
pointing out, no device files), and whose SHA-256 is the digest it was uploaded under. Links
are followed as the filesystem follows them once the archive is extracted (a link to a link,
a ``..`` after a link, a member written through a linked directory), so no chain of links
that each look harmless leads out either.
"""

from __future__ import annotations

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


#: Links followed in resolving one path before giving up, as Linux does (ELOOP).
_MAX_LINK_HOPS = 40


class _Links:
    """The symbolic links of an archive as extraction makes them, by where they land (their
    real path's components inside the root), to resolve paths as the filesystem would."""

    def __init__(self) -> None:
        self.targets: dict[tuple[str, ...], str] = {}

    def resolve(self, path: tuple[str, ...]) -> tuple[str, ...] | None:
        """The real path of ``path`` (components from the root), following every link on
        the way and then into what they point to; ``None`` if it leaves the root or loops."""
        real: list[str] = []
        hops = 0
        pending = list(reversed(path))
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not real:
                    return None  # above the root
                real.pop()
                continue
            target = self.targets.get((*real, part))
            if target is None:
                real.append(part)
                continue
            hops += 1
            if hops > _MAX_LINK_HOPS or target.startswith("/"):
                return None
            pending.extend(reversed(target.split("/")))  # from the link's own directory
        return tuple(real)


def _parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in name.split("/") if p not in ("", "."))


def validate_bundle(path: Path, max_unpacked: int) -> None:
    """Raise :class:`BadRequestError` unless ``path`` is a safe gzip-compressed tar."""
    total = 0
    links = _Links()
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            for member in archive:
                name = member.name
                if _unsafe_path(name):
                    raise BadRequestError(
                        f"bundle rejected: member {name!r} escapes the archive root (absolute "
                        "path or '..')"
                    )
                parts = _parts(name)
                directory = links.resolve(parts[:-1])
                if directory is None:
                    raise BadRequestError(
                        f"bundle rejected: member {name!r} escapes the archive root through a "
                        "linked directory"
                    )
                where = (*directory, *parts[-1:])
                links.targets.pop(where, None)  # a later member replaces an earlier one
                if member.issym():
                    target = member.linkname
                    links.targets[where] = target
                    if not parts or links.resolve(where) is None:
                        raise BadRequestError(
                            f"bundle rejected: symlink {name!r} -> {target!r} points outside "
                            "the archive root (or into a loop of links)"
                        )
                elif member.islnk():
                    target = member.linkname
                    if not parts or _unsafe_path(target) or links.resolve(_parts(target)) is None:
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
        # a link may lead out only through a link that came later in the archive
        for where, target in links.targets.items():
            if links.resolve(where) is None:
                raise BadRequestError(
                    f"bundle rejected: symlink {'/'.join(where)!r} -> {target!r} points outside "
                    "the archive root through the links the archive makes"
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
