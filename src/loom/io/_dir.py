"""``Dir``: a reference to a directory tree that tasks pass around."""

from __future__ import annotations

import asyncio
import fnmatch
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from ._file import File, _local_source, existing_reference, local_destination, scratch_path
from ._remote import exists, fetch, is_data_uri


@dataclass(frozen=True, slots=True)
class Dir:
    """A directory passed between tasks by reference (see :class:`File`).

    In remote mode the tree travels as one archive, and ``download()`` without a target gives
    the cached tree, shared by the machine's actions: pass a target for a copy to change.
    ``hash``, when set, is the directory's cache key (see ``dir_cache_key`` of
    :meth:`from_local`).
    """

    path: str
    name: str | None = None
    format: str = ""
    hash: str | None = None

    def __post_init__(self) -> None:
        if self.name is None:  # the last part of the path (a reference ends with the name)
            object.__setattr__(self, "name", Path(self.path.rstrip("/")).name or None)

    @classmethod
    def from_local_sync(
        cls,
        local_path: str | os.PathLike[str],
        remote_destination: str | None = None,
        dir_cache_key: str | None = None,
    ) -> Dir:
        """Reference an existing local directory.

        ``remote_destination``: a local path to copy the tree to and reference instead (in
        remote mode loom uploads the content itself when the directory is passed on).
        ``dir_cache_key`` becomes its ``hash``: cached tasks given this directory are keyed by
        it instead of by the content.
        """
        p = _local_source(local_path, "dir")
        if remote_destination is not None:
            target = local_destination(remote_destination, "Dir")
            shutil.copytree(p, target, dirs_exist_ok=True)
            return cls(path=str(target), name=target.name, hash=dir_cache_key)
        return cls(path=str(p), name=p.name, hash=dir_cache_key)

    @classmethod
    async def from_local(
        cls,
        local_path: str | os.PathLike[str],
        remote_destination: str | None = None,
        dir_cache_key: str | None = None,
        batch_size: int | None = None,
    ) -> Dir:
        """Async form of :meth:`from_local_sync` (``batch_size`` is accepted for
        compatibility: a tree travels as one archive)."""
        if remote_destination is None:
            return cls.from_local_sync(local_path, dir_cache_key=dir_cache_key)
        return await asyncio.to_thread(
            cls.from_local_sync, local_path, remote_destination, dir_cache_key
        )

    @classmethod
    def new_remote(cls, dir_name: str | None = None, hash: str | None = None) -> Dir:
        """A new, empty directory to write files into (under ``path``), then return or pass
        on; ``dir_name`` names it (random if not given), ``hash`` is its cache key."""
        path = scratch_path(dir_name)
        path.mkdir()
        return cls(path=str(path), name=path.name, hash=hash)

    @classmethod
    def from_existing_remote(cls, remote_path: str, dir_cache_key: str | None = None) -> Dir:
        """Reference a directory that exists already: a ``loom://data/`` reference (as a run's
        outputs show them) or a local path. ``dir_cache_key`` becomes its ``hash``."""
        if is_data_uri(remote_path) and not remote_path.endswith("/"):
            remote_path += "/"  # a directory's reference ends with a slash
        return cls(path=existing_reference(remote_path, "Dir"), hash=dir_cache_key)

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

    async def exists(self) -> bool:
        """Async form of :meth:`exists_sync`."""
        return await asyncio.to_thread(self.exists_sync)

    def __fspath__(self) -> str:
        """The local path of the tree (downloaded first if it is on a server)."""
        return self.download_sync()

    def __getitem__(self, index: int) -> Dir:
        """Flyte 2's ``run.outputs()[0]`` when a task returns one directory: the directory itself
        (a directory is not otherwise indexable)."""
        if index in (0, -1):
            return self
        raise IndexError("a run whose task returns a Dir has one output, [0]")

    def walk_sync(
        self, recursive: bool = True, file_pattern: str = "*", max_depth: int | None = None
    ) -> Iterator[File]:
        """Every file under the directory, depth first in name order.

        ``recursive=False`` lists only the top level (as ``max_depth=1`` does); ``max_depth``
        limits how many levels down files are found; ``file_pattern`` is a glob matched
        against each file's name (``"*.csv"``). A stored tree is downloaded first, and the
        files refer to its shared cached copy.
        """
        return _walk(Path(self.download_sync()), 1 if not recursive else max_depth, file_pattern)

    async def walk(
        self, recursive: bool = True, max_depth: int | None = None, file_pattern: str = "*"
    ) -> AsyncIterator[File]:
        """Async form of :meth:`walk_sync`: ``async for file in d.walk(): ...``."""
        root = Path(await self.download())
        depth = 1 if not recursive else max_depth
        files = await asyncio.to_thread(lambda: list(_walk(root, depth, file_pattern)))
        for file in files:
            yield file

    def list_files_sync(self) -> list[File]:
        """The files at the top level of the directory (:meth:`walk_sync` finds them all)."""
        return list(self.walk_sync(recursive=False))

    async def list_files(self) -> list[File]:
        """Async form of :meth:`list_files_sync`."""
        return [f async for f in self.walk(recursive=False)]

    def get_file_sync(self, file_name: str) -> File | None:
        """The file ``file_name`` (a name, or a relative path inside the directory), or
        ``None`` if there is none."""
        root = Path(self.download_sync())
        target = root / file_name
        try:
            target.resolve().relative_to(root.resolve())
        except ValueError:  # '..' or an absolute path: not inside this directory
            return None
        return File(path=str(target), name=target.name) if target.is_file() else None

    async def get_file(self, file_name: str) -> File | None:
        """Async form of :meth:`get_file_sync`."""
        return await asyncio.to_thread(self.get_file_sync, file_name)


def _walk(root: Path, max_depth: int | None, pattern: str) -> Iterator[File]:
    def visit(directory: Path, depth: int) -> Iterator[File]:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.is_dir():
                if max_depth is None or depth < max_depth:
                    yield from visit(Path(entry.path), depth + 1)
            elif entry.is_file() and fnmatch.fnmatch(entry.name, pattern):
                yield File(path=entry.path, name=entry.name)

    return visit(root, 1)


def _writable_copy(src: str, dst: str) -> None:
    shutil.copyfile(src, dst)
    os.chmod(dst, (os.stat(src).st_mode & 0o777) | 0o200)
