"""``File``: a reference to a single file that tasks pass around."""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


def _local_source(path: str | os.PathLike[str], kind: str) -> Path:
    p = Path(path).expanduser().resolve()
    if kind == "file" and not p.is_file():
        raise FileNotFoundError(f"File.from_local: {path} is not an existing file")
    if kind == "dir" and not p.is_dir():
        raise FileNotFoundError(f"Dir.from_local: {path} is not an existing directory")
    return p


class _Opened:
    """The result of ``File.open()``: usable with both ``with`` and ``async with``."""

    def __init__(self, path: str, mode: str, kwargs: dict[str, Any]) -> None:
        self._args = (path, mode, kwargs)
        self._handle: IO[Any] | None = None

    def __enter__(self) -> IO[Any]:
        path, mode, kwargs = self._args
        self._handle = open(path, mode, **kwargs)
        return self._handle

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()

    async def __aenter__(self) -> IO[Any]:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)


@dataclass(frozen=True, slots=True)
class File:
    """A file passed between tasks by reference.

    Create one with ``File.from_local(path)`` (or ``from_local_sync``); read it with
    ``download()`` or ``open()``. In local mode the reference is the local path itself, so no
    set-up is needed; when a cached task returns a file, the cache keeps its own copy.
    """

    path: str
    name: str | None = None

    @classmethod
    def from_local_sync(cls, local_path: str | os.PathLike[str]) -> File:
        """Reference an existing local file."""
        p = _local_source(local_path, "file")
        return cls(path=str(p), name=p.name)

    @classmethod
    async def from_local(cls, local_path: str | os.PathLike[str]) -> File:
        """Reference an existing local file (async form of :meth:`from_local_sync`)."""
        return cls.from_local_sync(local_path)

    def download_sync(self, local_path: str | os.PathLike[str] | None = None) -> str:
        """A local path holding the file's content; copies it to ``local_path`` if given."""
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"the file behind {self!r} no longer exists")
        if local_path is None:
            return self.path
        target = Path(local_path)
        if target.is_dir():
            target = target / (self.name or Path(self.path).name)
        shutil.copyfile(self.path, target)
        return str(target)

    async def download(self, local_path: str | os.PathLike[str] | None = None) -> str:
        """Async form of :meth:`download_sync`."""
        return await asyncio.to_thread(self.download_sync, local_path)

    def open(self, mode: str = "rb", **kwargs: Any) -> _Opened:
        """Open the file; use with ``with`` or ``async with``."""
        return _Opened(self.download_sync(), mode, kwargs)

    def open_sync(self, mode: str = "rb", **kwargs: Any) -> _Opened:
        """Alias of :meth:`open` for symmetry with the other ``*_sync`` methods."""
        return self.open(mode, **kwargs)

    def exists_sync(self) -> bool:
        return os.path.isfile(self.path)
