"""Where the type engine puts values that travel by reference (files, directories, tables)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol


class BlobStore(Protocol):
    """Content-addressed storage for values that are not encoded inline."""

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Store a copy of a file and return its reference."""
        ...

    def put_dir(self, path: str | os.PathLike[str]) -> str:
        """Store a copy of a directory tree and return its reference."""
        ...

    def put_bytes(self, data: bytes, name: str) -> str:
        """Store bytes under a file name and return the reference."""
        ...


def _hash_file(path: Path, h: hashlib._Hash | None = None) -> hashlib._Hash:
    h = h or hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h


def file_digest(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of a file's content."""
    return _hash_file(Path(path)).hexdigest()


def hash_dir(path: Path) -> str:
    """A digest of a directory tree: every entry's kind, name and (for files) size and content.

    Each entry is framed with its lengths, so no two different trees can produce the same
    byte stream; empty directories count too.
    """
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        name = str(p.relative_to(path)).encode()
        if p.is_dir():
            h.update(b"D%d:" % len(name) + name)
        elif p.is_file():
            h.update(b"F%d:" % len(name) + name + b"%d:" % p.stat().st_size)
            _hash_file(p, h)
    return h.hexdigest()


class LocalBlobStore:
    """A content-addressed directory: ``<root>/<sha256>/<name>``; writes are atomic."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _target(self, digest: str, name: str) -> Path:
        return self.root / digest[:2] / digest / name

    def _publish(self, staged: Path, target: Path) -> str:
        if target.exists():
            shutil.rmtree(staged.parent, ignore_errors=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(staged, target)
            except OSError:  # a concurrent writer published the same content first
                if not target.exists():
                    raise
            shutil.rmtree(staged.parent, ignore_errors=True)
        return str(target)

    def _staging(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))

    def put_file(self, path: str | os.PathLike[str]) -> str:
        src = Path(path)
        target = self._target(_hash_file(src).hexdigest(), src.name)
        if target.exists():
            return str(target)
        staged = self._staging() / src.name
        shutil.copyfile(src, staged)
        return self._publish(staged, target)

    def put_dir(self, path: str | os.PathLike[str]) -> str:
        src = Path(path)
        target = self._target(hash_dir(src), src.name or "dir")
        if target.exists():
            return str(target)
        staged = self._staging() / (src.name or "dir")
        shutil.copytree(src, staged, symlinks=False)
        return self._publish(staged, target)

    def put_bytes(self, data: bytes, name: str) -> str:
        target = self._target(hashlib.sha256(data).hexdigest(), name)
        if target.exists():
            return str(target)
        staged = self._staging() / name
        staged.write_bytes(data)
        return self._publish(staged, target)
