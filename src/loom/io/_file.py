"""``File``: a reference to a single file that tasks pass around."""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ._remote import exists, fetch, is_data_uri


def _local_source(path: str | os.PathLike[str], kind: str) -> Path:
    p = Path(path).expanduser().resolve()
    if kind == "file" and not p.is_file():
        raise FileNotFoundError(f"File.from_local: {path} is not an existing file")
    if kind == "dir" and not p.is_dir():
        raise FileNotFoundError(f"Dir.from_local: {path} is not an existing directory")
    return p


class _Opened:
    """The result of ``File.open()``: usable with both ``with`` and ``async with``.

    The content is fetched on entering (in a worker thread with ``async with``), so opening a
    file on a server does not block an event loop while it downloads."""

    def __init__(self, file: File, mode: str, kwargs: dict[str, Any]) -> None:
        self._args = (file, mode, kwargs)
        self._handle: IO[Any] | None = None

    def __enter__(self) -> IO[Any]:
        file, mode, kwargs = self._args
        self._handle = open(file.download_sync(), mode, **kwargs)
        return self._handle

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()

    async def __aenter__(self) -> IO[Any]:
        file, mode, kwargs = self._args
        path = await file.download() if is_data_uri(file.path) else file.download_sync()
        self._handle = open(path, mode, **kwargs)  # noqa: SIM115  (closed in __aexit__)
        return self._handle

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)


@dataclass(frozen=True, slots=True)
class File:
    """A file passed between tasks by reference.

    Create one with ``File.from_local(path)`` (or ``from_local_sync``); read it with
    ``download()`` or ``open()``, or pass it where a path goes (``open(file)``). In local mode
    the reference is the local path itself, so no set-up is needed; when a cached task returns
    a file, the cache keeps its own copy. In remote mode the content is uploaded to the
    server's object store when the file is passed on, and ``path`` is a
    ``loom://data/<sha256>/<name>`` reference whose content is downloaded on first use (into
    a cache shared by the machine's actions: read it, do not change it).
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
        if is_data_uri(self.path):
            source = str(fetch(self.path, tree=False))
        elif os.path.isfile(self.path):
            source = self.path
        else:
            raise FileNotFoundError(f"the file behind {self!r} no longer exists")
        if local_path is None:
            return source
        target = Path(local_path)
        if target.is_dir():
            target = target / (self.name or Path(self.path).name)
        shutil.copyfile(source, target)
        return str(target)

    async def download(self, local_path: str | os.PathLike[str] | None = None) -> str:
        """Async form of :meth:`download_sync`."""
        return await asyncio.to_thread(self.download_sync, local_path)

    def open(self, mode: str = "rb", **kwargs: Any) -> _Opened:
        """Open the file; use with ``with`` or ``async with``."""
        return _Opened(self, mode, kwargs)

    def open_sync(self, mode: str = "rb", **kwargs: Any) -> _Opened:
        """Alias of :meth:`open` for symmetry with the other ``*_sync`` methods."""
        return self.open(mode, **kwargs)

    def exists_sync(self) -> bool:
        """Whether the content is there: the local file, or the data on the server."""
        if is_data_uri(self.path):
            return exists(self.path, tree=False)
        return os.path.isfile(self.path)

    def __fspath__(self) -> str:
        """The local path of the content (downloaded first if it is on a server)."""
        return self.download_sync()
