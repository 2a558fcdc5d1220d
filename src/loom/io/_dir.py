"""``Dir``: a reference to a directory tree that tasks pass around."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._file import File, _local_source
from ._remote import exists, fetch, is_data_uri


@dataclass(frozen=True, slots=True)
class Dir:
    """A directory passed between tasks by reference (see :class:`File`).

    In remote mode the tree travels as one archive, and ``download()`` without a target gives
    the cached tree, shared by the machine's actions: pass a target for a copy to change.
    """

    path: str
    name: str | None = None

    @classmethod
    def from_local_sync(cls, local_path: str | os.PathLike[str]) -> Dir:
        """Reference an existing local directory."""
        p = _local_source(local_path, "dir")
        return cls(path=str(p), name=p.name)

    @classmethod
    async def from_local(cls, local_path: str | os.PathLike[str]) -> Dir:
        """Async form of :meth:`from_local_sync`."""
        return cls.from_local_sync(local_path)

    def download_sync(self, local_path: str | os.PathLike[str] | None = None) -> str:
        """A local path holding the tree; copies it to ``local_path`` if given."""
        if is_data_uri(self.path):
            source = str(fetch(self.path, tree=True))
            if local_path is None:
                return source
            # the cached files are read-only; the copy is the caller's to change
            shutil.copytree(source, local_path, dirs_exist_ok=True, copy_function=_writable_copy)
            return str(local_path)
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"the directory behind {self!r} no longer exists")
        if local_path is None:
            return self.path
        shutil.copytree(self.path, local_path, dirs_exist_ok=True)
        return str(local_path)

    async def download(self, local_path: str | os.PathLike[str] | None = None) -> str:
        """Async form of :meth:`download_sync`."""
        return await asyncio.to_thread(self.download_sync, local_path)

    def exists_sync(self) -> bool:
        """Whether the tree is there: the local directory, or the data on the server."""
        if is_data_uri(self.path):
            return exists(self.path, tree=True)
        return os.path.isdir(self.path)

    def __fspath__(self) -> str:
        """The local path of the tree (downloaded first if it is on a server)."""
        return self.download_sync()

    def walk_sync(self) -> Iterator[File]:
        """Every file under the directory, in a stable order."""
        root = Path(self.download_sync())
        for p in sorted(root.rglob("*")):
            if p.is_file():
                yield File(path=str(p), name=p.name)

    def list_files_sync(self) -> list[File]:
        return list(self.walk_sync())

    async def list_files(self) -> list[File]:
        return await asyncio.to_thread(self.list_files_sync)


def _writable_copy(src: str, dst: str) -> None:
    shutil.copyfile(src, dst)
    os.chmod(dst, (os.stat(src).st_mode & 0o777) | 0o200)
