"""``File``: a reference to a single file that tasks pass around."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ._handle import AsyncFile
from ._hashing import HashMethod, hash_file_with, split_hash_method
from ._remote import exists, fetch, is_data_uri, parse_data_uri

#: Methods ``File.new_remote(hash_method=...)`` asked for, by the new file's path: the hash is
#: computed when the file is closed after writing (a field would have to travel with the value).
_hashers: dict[str, HashMethod] = {}
_hashers_lock = threading.Lock()


def _local_source(path: str | os.PathLike[str], kind: str) -> Path:
    p = Path(path).expanduser().resolve()
    if kind == "file" and not p.is_file():
        raise FileNotFoundError(f"File.from_local: {path} is not an existing file")
    if kind == "dir" and not p.is_dir():
        raise FileNotFoundError(f"Dir.from_local: {path} is not an existing directory")
    return p


def existing_reference(path: str, kind: str) -> str:
    """``path`` as a reference loom can read: a ``loom://data/`` reference, or a local path
    (``file://`` URLs too); other storage has no reader here."""
    if is_data_uri(path):
        parse_data_uri(path)  # a malformed reference fails here, not on first use
        return path
    if path.startswith("file://"):
        path = path.removeprefix("file://")
    elif "://" in path:
        raise ValueError(
            f"{kind}.from_existing_remote: loom reads loom://data/ references and local paths, "
            f"not {path!r}; download it first and use {kind}.from_local"
        )
    return str(Path(path).expanduser().absolute())


def local_destination(destination: str | os.PathLike[str], kind: str) -> Path:
    """Where ``remote_destination`` puts a copy: loom's only destinations are local paths
    (a server's object store names its content by hash)."""
    text = os.fspath(destination)
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    elif "://" in text:
        raise ValueError(
            f"{kind}.from_local: remote_destination {text!r} is not a local path; loom uploads "
            "a value's content to the server's object store when it is passed on, so leave "
            "remote_destination out"
        )
    return Path(text).expanduser().absolute()


def scratch_path(name: str | None) -> Path:
    """A fresh, not yet existing path named ``name`` (or a random name) in its own temporary
    directory, which is kept: the value refers to it after the task returns."""
    parent = Path(tempfile.mkdtemp(prefix="loom-new-"))
    return parent / (name or uuid.uuid4().hex)


def _writes(mode: str) -> bool:
    return any(c in mode for c in "wax+")


class _Opened:
    """The result of ``File.open()``: usable with both ``with`` and ``async with``.

    ``with`` gives an ordinary file object; ``async with`` an :class:`AsyncFile` whose methods
    are awaited. Stored content is fetched on entering (in a worker thread with ``async with``),
    so opening a file on a server does not block an event loop while it downloads.
    """

    def __init__(self, file: File, mode: str, kwargs: dict[str, Any]) -> None:
        self._args = (file, mode, kwargs)
        self._handle: IO[Any] | None = None

    def _open(self, source: str | None) -> IO[Any]:
        file, mode, kwargs = self._args
        if _writes(mode):
            if is_data_uri(file.path):
                raise ValueError(
                    f"cannot open {file.path} with mode {mode!r}: stored content does not "
                    "change; write a new file (File.new_remote()) and return that"
                )
            Path(file.path).parent.mkdir(parents=True, exist_ok=True)
            source = file.path
        return open(source or file.download_sync(), mode, **kwargs)

    def _close(self, *exc: object) -> None:
        if self._handle is None:
            return
        self._handle.close()
        file, mode, _ = self._args
        if _writes(mode) and exc[0] is None:
            file._written()

    def __enter__(self) -> IO[Any]:
        self._handle = self._open(None)
        return self._handle

    def __exit__(self, *exc: object) -> None:
        self._close(*exc)

    async def __aenter__(self) -> AsyncFile:
        file, mode, _ = self._args
        source = None
        if is_data_uri(file.path) and not _writes(mode):
            source = await file.download()
        self._handle = self._open(source)
        return AsyncFile(self._handle)

    async def __aexit__(self, *exc: object) -> None:
        self._close(*exc)


@dataclass(frozen=True, slots=True)
class File:
    """A file passed between tasks by reference.

    Create one with ``File.from_local(path)`` (or ``from_local_sync``), or write a new one with
    ``File.new_remote()`` and ``open("wb")``; read it with ``download()`` or ``open()``, or pass
    it where a path goes (``open(file)``). In local mode the reference is the local path itself,
    so no set-up is needed; when a cached task returns a file, the cache keeps its own copy. In
    remote mode the content is uploaded to the server's object store when the file is passed
    on, and ``path`` is a ``loom://data/<sha256>/<name>`` reference whose content is downloaded
    on first use (into a cache shared by the machine's actions: read it, do not change it).

    ``hash``, when set, is the file's cache key: a cached task given this file is keyed by the
    hash instead of the content (see ``hash_method`` of :meth:`from_local`).
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
        hash_method: HashMethod | str | None = None,
    ) -> File:
        """Reference an existing local file.

        ``remote_destination``: a local path to copy the file to and reference instead (in
        remote mode loom uploads the content itself when the file is passed on). ``hash_method``:
        a string is the file's precomputed ``hash``; a :class:`HashFunction` (or any object with
        ``update`` and ``result``) computes it from the content.
        """
        p = _local_source(local_path, "file")
        hash_value, method = split_hash_method(hash_method)
        if remote_destination is not None:
            target = local_destination(remote_destination, "File")
            if target.is_dir():
                target = target / p.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
            p = target
        if method is not None:
            hash_value = hash_file_with(p, method)
        return cls(path=str(p), name=p.name, hash=hash_value)

    @classmethod
    async def from_local(
        cls,
        local_path: str | os.PathLike[str],
        remote_destination: str | None = None,
        hash_method: HashMethod | str | None = None,
    ) -> File:
        """Async form of :meth:`from_local_sync`."""
        if remote_destination is None and (hash_method is None or isinstance(hash_method, str)):
            return cls.from_local_sync(local_path, hash_method=hash_method)
        return await asyncio.to_thread(
            cls.from_local_sync, local_path, remote_destination, hash_method
        )

    @classmethod
    def new_remote(
        cls, file_name: str | None = None, hash_method: HashMethod | str | None = None
    ) -> File:
        """A new, empty reference to write into with ``open("wb")``, then return or pass on.

        The content is written to a fresh local path and travels like any local file (uploaded
        when passed on in remote mode). ``file_name`` names it (random if not given);
        ``hash_method`` is a precomputed ``hash``, or computes it from what is written.
        """
        hash_value, method = split_hash_method(hash_method)
        path = scratch_path(file_name)
        if method is not None:
            with _hashers_lock:
                _hashers[str(path)] = method
        return cls(path=str(path), name=path.name, hash=hash_value)

    @classmethod
    def from_existing_remote(cls, remote_path: str, file_cache_key: str | None = None) -> File:
        """Reference a file that exists already: a ``loom://data/`` reference (as a run's
        outputs show them) or a local path. ``file_cache_key`` becomes its ``hash``."""
        return cls(path=existing_reference(remote_path, "File"), hash=file_cache_key)

    def _written(self) -> None:
        """After writing through ``open``: compute the hash ``new_remote`` was asked for."""
        with _hashers_lock:
            method = _hashers.pop(self.path, None)
        if method is not None:
            object.__setattr__(self, "hash", hash_file_with(self.path, method))

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
        if target.is_dir() or os.fspath(local_path).endswith(os.sep):
            target = target / (self.name or Path(self.path).name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return str(target)

    async def download(self, local_path: str | os.PathLike[str] | None = None) -> str:
        """Async form of :meth:`download_sync`."""
        return await asyncio.to_thread(self.download_sync, local_path)

    def open(
        self,
        mode: str = "rb",
        block_size: int | None = None,
        cache_type: str = "readahead",
        cache_options: dict[str, Any] | None = None,
        compression: str | None = None,
        **kwargs: Any,
    ) -> _Opened:
        """Open the file: ``with`` gives an ordinary file object, ``async with`` one whose
        methods are awaited (``await fh.read()``, ``await fh.write(data)``).

        Write modes need a local file (one from ``new_remote`` or ``from_local``): stored
        content never changes. ``kwargs`` go to :func:`open` (``encoding``, ``newline``);
        ``block_size``, ``cache_type`` and ``cache_options`` are accepted for compatibility and
        have no effect on a local file.
        """
        if compression not in (None, "infer"):
            raise ValueError(
                f"File.open: compression={compression!r} is not supported; open the file and "
                "wrap the handle (gzip.open(handle)) instead"
            )
        return _Opened(self, mode, kwargs)

    def open_sync(
        self,
        mode: str = "rb",
        block_size: int | None = None,
        cache_type: str = "readahead",
        cache_options: dict[str, Any] | None = None,
        compression: str | None = None,
        **kwargs: Any,
    ) -> _Opened:
        """Open the file with ``with``: an ordinary file object (see :meth:`open`)."""
        return self.open(mode, block_size, cache_type, cache_options, compression, **kwargs)

    def exists_sync(self) -> bool:
        """Whether the content is there: the local file, or the data on the server."""
        if is_data_uri(self.path):
            return exists(self.path, tree=False)
        return os.path.isfile(self.path)

    async def exists(self) -> bool:
        """Async form of :meth:`exists_sync`."""
        return await asyncio.to_thread(self.exists_sync)

    def __fspath__(self) -> str:
        """The local path of the content (downloaded first if it is on a server)."""
        return self.download_sync()

    def __getitem__(self, index: int) -> File:
        """Flyte 2's ``run.outputs()[0]`` when a task returns one file: the file itself
        (a file is not otherwise indexable)."""
        if index in (0, -1):
            return self
        raise IndexError("a run whose task returns a File has one output, [0]")
