"""Data in a loom server's object store: what remote ``File``, ``Dir`` and ``DataFrame`` values
refer to, as ``loom://data/<sha256>/<name>`` (a ``Dir``: with a trailing ``/``; the format is
documented in :mod:`loom.wire`).

:class:`RemoteBlobStore` is the type engine's store in remote mode. Encoding a value whose
content is local hashes it (a ``Dir`` is packed as one reproducible .tar.gz) and gives a
reference; :meth:`RemoteBlobStore.flush` then uploads what the server may not have, once per
content and process. Reading a reference downloads it on first use into a content-addressed
cache under ``Settings.home`` (``data/``) that the processes of that home share.

Cached content is immutable: files are made read-only and every entry's mtime is set to 0, so
a change (root ignores permissions) shows as a non-zero mtime, and the next reader fetches a
fresh copy instead of reading the changed one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import (
    ApiError,
    BundleError,
    ConfigError,
    LoomError,
    NotFoundError,
    SerializationError,
    ServerUnreachableError,
)
from ..types._store import file_digest

if TYPE_CHECKING:
    from ..remote import Client

#: ``loom.wire.DATA_URI_PREFIX``, spelled out: importing the wire schema loads pydantic, which
#: local runs never need (a test holds the two equal)
PREFIX = "loom://data/"
_HEX = frozenset("0123456789abcdef")
#: Bytes below this size are uploaded without asking first whether the server has them.
_SMALL = 1 << 20
#: Stat signatures remembered per process (path, size, mtime -> digest) before starting over.
_MAX_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class DataRef:
    """A parsed reference: the content's sha256, its name, and whether it is a tree."""

    digest: str
    name: str
    tree: bool

    @property
    def uri(self) -> str:
        return f"{PREFIX}{self.digest}/{self.name}" + ("/" if self.tree else "")


def is_data_uri(path: str) -> bool:
    """Whether ``path`` is a reference to data on a server rather than a local path."""
    return path.startswith(PREFIX)


def parse_data_uri(uri: str) -> DataRef:
    """The reference ``uri`` spells; :class:`SerializationError` if it is malformed."""
    digest, _, name = uri.removeprefix(PREFIX).partition("/")
    tree = name.endswith("/")
    name = name.removesuffix("/")
    if (
        not uri.startswith(PREFIX)
        or len(digest) != 64
        or not set(digest) <= _HEX
        or not name
        or "/" in name
        or "\x00" in name
        or name in (".", "..")
    ):
        raise SerializationError(
            f"{uri!r} is not a loom data reference: expected {PREFIX}<sha256>/<name> (a "
            "directory with a trailing '/')"
        )
    return DataRef(digest, name, tree)


# -- packing a tree ---------------------------------------------------------------------------

#: One entry of a tree: its name in the archive, its path, whether it is a directory, its stat.
_Entry = tuple[str, Path, bool, os.stat_result]


def tree_entries(root: Path) -> list[_Entry]:
    """Every directory and regular file under ``root``, depth first in name order.

    Symlinks are followed (the archive holds what they point to), dangling ones skipped, and a
    link back to a directory above it is an error rather than an endless tree.
    """
    found: list[_Entry] = []

    def visit(directory: Path, prefix: str, above: frozenset[tuple[int, int]]) -> None:
        with os.scandir(directory) as it:
            names = sorted(e.name for e in it)
        for name in names:
            path = directory / name
            try:
                st = os.stat(path)
            except FileNotFoundError:  # a dangling symlink: no content to pack
                continue
            if stat.S_ISDIR(st.st_mode):
                ident = (st.st_dev, st.st_ino)
                if ident in above:
                    raise LoomError(
                        f"cannot pack directory {root}: {path} links back to a directory above "
                        "it; remove the link or pass a directory without loops"
                    )
                found.append((prefix + name, path, True, st))
                visit(path, f"{prefix}{name}/", above | {ident})
            elif stat.S_ISREG(st.st_mode):
                found.append((prefix + name, path, False, st))
            # sockets, FIFOs and devices hold no data to pass on

    top = os.stat(root)
    visit(root, "", frozenset({(top.st_dev, top.st_ino)}))
    return found


def pack_tree(entries: list[_Entry], out: IO[bytes]) -> None:
    """Write ``entries`` as a .tar.gz that depends only on names, contents and exec bits."""
    with (
        # no file name and mtime 0 in the gzip header, or equal trees would differ
        gzip.GzipFile(filename="", fileobj=out, mode="wb", mtime=0, compresslevel=1) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, path, is_dir, st in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if is_dir:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
                continue
            info.size = st.st_size
            info.mode = 0o755 if st.st_mode & 0o111 else 0o644
            with path.open("rb") as f:
                tar.addfile(info, f)


# -- the cache's integrity --------------------------------------------------------------------


def _seal(path: Path) -> None:
    """Make cached content read-only and set its mtimes to 0 (see the module docstring)."""
    if path.is_dir():
        for directory, _, files in os.walk(path, topdown=False):
            for name in files:
                file = os.path.join(directory, name)
                if not os.path.islink(file):  # (loom packs none; another archive might)
                    os.chmod(file, os.stat(file).st_mode & 0o555)
                    os.utime(file, ns=(0, 0))
            os.utime(directory, ns=(0, 0))  # after its entries: changing them touches it
    else:
        os.chmod(path, 0o444)
        os.utime(path, ns=(0, 0))


def _intact(path: Path, tree: bool) -> bool:
    """Whether cached content is there and unchanged since it was sealed."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    if not tree:
        return stat.S_ISREG(st.st_mode) and st.st_mtime_ns == 0
    if not stat.S_ISDIR(st.st_mode) or st.st_mtime_ns:
        return False
    for directory, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            st = os.lstat(os.path.join(directory, name))
            if st.st_mtime_ns and not stat.S_ISLNK(st.st_mode):
                return False
    return True


def _discard(path: Path) -> None:
    """Move changed (or half-made) cached content aside and remove it."""
    if not os.path.lexists(path):
        return
    aside = path.with_name(f".stale-{uuid.uuid4().hex}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another reader discarded it first
        return
    if aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


# -- the store --------------------------------------------------------------------------------


class _Abandoned(LoomError):
    """An upload's uploader was cancelled; the upload is queued again."""


@dataclass(frozen=True, slots=True)
class _Upload:
    what: str  # for errors: the local path, or a description
    path: Path | None = None
    data: bytes | None = None
    temporary: bool = False  # a packed tree: removed once uploaded


class RemoteBlobStore:
    """The type engine's store for one server's object store (see the module docstring).

    Thread-safe: sync tasks encode their children's inputs in worker threads.
    """

    def __init__(
        self, endpoint: str, api_key: str | None, home: Path, project: str | None = None
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._api_key = api_key
        #: the project uploads are for (``None``: the server's choice, an attempt's own)
        self.project = project
        self.root = home / "data"
        self._lock = threading.Lock()
        self._pending: dict[str, _Upload] = {}
        # uploads under way, whoever started them: anyone about to hand out a reference waits
        self._running: dict[str, concurrent.futures.Future[None]] = {}
        self._stored: set[str] = set()  # digests the server is known to hold
        self._digests: dict[tuple[Any, ...], str] = {}  # stat signature -> digest
        self._fetching: dict[str, threading.Lock] = {}

    @property
    def busy(self) -> bool:
        """Whether :meth:`flush` has anything to do (cheap: asked on every task call)."""
        return bool(self._pending or self._running)

    # -- encoding: BlobStore --------------------------------------------------------------

    def put_file(self, path: str | os.PathLike[str]) -> str:
        src = Path(path)
        try:
            st = os.stat(src)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"cannot pass the file {src} on: it does not exist (any more)"
            ) from None
        key = ("file", str(src), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        digest = self._digests.get(key)
        if digest is None:
            digest = file_digest(src)
            self._remember(key, digest)
        self._want(digest, _Upload(str(src), path=src))
        return DataRef(digest, src.name or "file", tree=False).uri

    def put_dir(self, path: str | os.PathLike[str]) -> str:
        src = Path(path)
        if not src.is_dir():
            raise FileNotFoundError(
                f"cannot pass the directory {src} on: it does not exist (any more)"
            )
        entries = tree_entries(src)
        signature = tuple(
            (n, d, 0 if d else st.st_size, 0 if d else st.st_mtime_ns) for n, _, d, st in entries
        )
        key = ("dir", str(src), signature)
        ref_name = src.name or "dir"
        digest = self._digests.get(key)
        if digest is not None and self._known(digest):
            return DataRef(digest, ref_name, tree=True).uri
        fd, name = tempfile.mkstemp(prefix=".pack-", suffix=".tar.gz", dir=self._staging())
        archive = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                pack_tree(entries, f)
            digest = file_digest(archive)
        except BaseException:
            archive.unlink(missing_ok=True)
            raise
        self._remember(key, digest)
        if not self._want(digest, _Upload(str(src), path=archive, temporary=True)):
            archive.unlink(missing_ok=True)
        return DataRef(digest, ref_name, tree=True).uri

    def put_bytes(self, data: bytes, name: str) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self._want(digest, _Upload(f"{len(data)} bytes of {name}", data=data))
        return DataRef(digest, name, tree=False).uri

    def _remember(self, key: tuple[Any, ...], digest: str) -> None:
        if len(self._digests) >= _MAX_REMEMBERED:
            self._digests.clear()
        self._digests[key] = digest

    def _known(self, digest: str) -> bool:
        return digest in self._stored or digest in self._running or digest in self._pending

    def _want(self, digest: str, upload: _Upload) -> bool:
        """Queue an upload unless the digest is stored, queued or on its way already."""
        with self._lock:
            if self._known(digest):
                return False
            self._pending[digest] = upload
            return True

    def _staging(self) -> Path:
        staging = self.root / ".staging"
        staging.mkdir(parents=True, exist_ok=True)
        return staging

    # -- uploading ------------------------------------------------------------------------

    async def flush(self, client: Client) -> None:
        """Upload what was encoded since the last flush, then wait for every upload under
        way, also those other calls started: a value may only be handed on once the data it
        refers to is stored. ``client`` must belong to the running loop."""
        while self.busy:
            with self._lock:
                mine = list(self._pending.items())
                self._pending.clear()
                for digest, _ in mine:
                    self._running[digest] = concurrent.futures.Future()
                waits = list(self._running.values())
            try:
                await asyncio.gather(*(self._upload(client, d, u) for d, u in mine))
            except BaseException:  # cancelled: what did not finish goes back in the queue
                for digest, upload in mine:
                    self._settle(digest, upload, requeue=True)
                raise
            try:
                for future in waits:
                    await asyncio.wrap_future(future)
            except _Abandoned:  # its uploader was cancelled and queued it again: upload it
                continue
            return

    async def _upload(self, client: Client, digest: str, upload: _Upload) -> None:
        """Upload one item; the outcome goes to its future (this raises only when
        cancelled)."""
        source = upload.data if upload.data is not None else upload.path
        assert source is not None
        try:
            if isinstance(source, bytes) and len(source) < _SMALL:
                # cheaper than asking first
                await client.upload_data(digest, source, self.project)
            elif not await client.has_data(digest, self.project):
                await client.upload_data(digest, source, self.project)
        except asyncio.CancelledError:
            self._settle(digest, upload, requeue=True)
            raise
        except ApiError as e:
            message = f"cannot upload {upload.what} to the server at {self.endpoint}: {e}"
            self._settle(digest, upload, error=type(e)(message, e.status))
        except Exception as e:
            self._settle(digest, upload, error=e)
        else:
            self._settle(digest, upload)

    def _settle(
        self,
        digest: str,
        upload: _Upload,
        *,
        error: BaseException | None = None,
        requeue: bool = False,
    ) -> None:
        """Record how an upload ended and tell whoever waits for it (once)."""
        with self._lock:
            future = self._running.pop(digest, None)
            if future is None:  # settled already
                return
            if requeue:
                self._pending.setdefault(digest, upload)
            elif error is None:
                self._stored.add(digest)
        if upload.temporary and upload.path is not None and not requeue:
            upload.path.unlink(missing_ok=True)
        if requeue:
            future.set_exception(_Abandoned(f"the upload of {upload.what} was cancelled"))
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(None)

    # -- reading --------------------------------------------------------------------------

    def cached(self, ref: DataRef) -> Path:
        """Where ``ref``'s content lives in the cache (whether it is there yet or not)."""
        kind = "trees" if ref.tree else "files"
        return self.root / kind / ref.digest[:2] / ref.digest / ref.name

    def local_path(self, ref: DataRef) -> Path:
        """A local path with ``ref``'s content (a file, or the tree of a ``Dir``), downloaded
        on first use. Do not change it: it is shared (pass a target to ``download`` for a
        copy of your own)."""
        target = self.cached(ref)
        if _intact(target, ref.tree):
            return target
        with self._lock:
            lock = self._fetching.setdefault(ref.digest, threading.Lock())
        with lock:  # one download per content in this process; others wait for it
            if _intact(target, ref.tree):
                return target
            _discard(target)
            if not ref.tree and self._link_sibling(ref, target):
                return target
            from .._sync import run_sync

            run_sync(self._fetch(ref, target))
        return target

    def _link_sibling(self, ref: DataRef, target: Path) -> bool:
        """Reuse the same content cached under another name, instead of downloading it."""
        try:
            siblings = [p for p in target.parent.iterdir() if not p.name.startswith(".")]
        except FileNotFoundError:
            return False
        for sibling in siblings:
            if _intact(sibling, tree=False):
                try:
                    os.link(sibling, target)  # the same inode: sealed already
                except FileExistsError:
                    pass
                except OSError:
                    continue
                return _intact(target, tree=False)
        return False

    async def _fetch(self, ref: DataRef, target: Path) -> None:
        from ..remote import Client, extract_bundle

        fd, name = tempfile.mkstemp(prefix=".download-", dir=self._staging())
        os.close(fd)
        download = Path(name)
        unpacked = download.with_name(download.name + ".tree")
        try:
            try:
                async with Client(self.endpoint, self._api_key) as client:
                    await client.download_data(ref.digest, download)
            except NotFoundError:
                raise FileNotFoundError(
                    f"{ref.uri} is not in the object store of the server at {self.endpoint}: it "
                    "was never uploaded there, or has been removed (is this the server the run "
                    "was on?)"
                ) from None
            except ServerUnreachableError as e:
                raise ServerUnreachableError(
                    f"cannot download {ref.uri}: nothing answers at {self.endpoint}. Start the "
                    "server (`loom server start`) or point LOOM_ENDPOINT at the one that ran "
                    "the task"
                ) from e
            target.parent.mkdir(parents=True, exist_ok=True)
            if ref.tree:
                try:
                    # the bundle extraction: no absolute paths, no '..', no links out
                    extract_bundle(download, unpacked)  # streamed: a tree may be large
                except BundleError as e:
                    raise BundleError(f"cannot unpack directory {ref.uri}: {e}") from e
                _seal(unpacked)
                _rename(unpacked, target)
                os.utime(target, ns=(0, 0))  # in case moving a directory touched it
            else:
                _seal(download)
                _rename(download, target)
            with self._lock:
                self._stored.add(ref.digest)  # it is on the server: no need to upload it back
        finally:
            download.unlink(missing_ok=True)
            if unpacked.exists():
                shutil.rmtree(unpacked, ignore_errors=True)

    def exists(self, ref: DataRef) -> bool:
        """Whether the content is cached here or stored on the server."""
        if _intact(self.cached(ref), ref.tree):
            return True
        from .._sync import run_sync

        return run_sync(self._exists(ref.digest))

    async def _exists(self, digest: str) -> bool:
        from ..remote import Client

        async with Client(self.endpoint, self._api_key) as client:
            return await client.has_data(digest, self.project)


def _rename(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError:
        if not _intact(target, target.is_dir()):  # not a concurrent fetch of the same content
            raise


# -- the process's stores ---------------------------------------------------------------------

_stores: dict[tuple[str, str | None, Path, str | None], RemoteBlobStore] = {}
_current: RemoteBlobStore | None = None
_registry_lock = threading.Lock()


def remote_store(
    endpoint: str, api_key: str | None, home: Path, project: str | None = None
) -> RemoteBlobStore:
    """The process's store for one server, key, home and project (what uploads are for; a
    runtime's credential has its own), made once. It becomes the one that references decoded
    in this process download through (a process talks to one server)."""
    global _current
    key = (endpoint.rstrip("/"), api_key, home, project)
    with _registry_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = RemoteBlobStore(*key)
        _current = store
    return store


def _reading_store() -> RemoteBlobStore:
    if _current is not None:
        return _current
    from .._settings import Settings

    settings = Settings.load()
    if not settings.endpoint:
        raise ConfigError(
            f"this value refers to data on a loom server ({PREFIX}...), but no server is "
            f"configured: start one with `loom server start` (it writes {settings.config_path}), "
            "or set LOOM_ENDPOINT and LOOM_API_KEY"
        )
    return remote_store(settings.endpoint, settings.api_key, settings.home)


def fetch(uri: str, *, tree: bool, store: object = None) -> Path:
    """A local path with the content ``uri`` refers to (see :meth:`RemoteBlobStore.local_path`),
    through ``store`` if it is a :class:`RemoteBlobStore`, else the process's."""
    ref = parse_data_uri(uri)
    if ref.tree != tree:
        kind, other = ("a directory", "Dir") if ref.tree else ("a file", "File")
        raise SerializationError(f"{uri} refers to {kind}: read it as a loom.io.{other}")
    reader = store if isinstance(store, RemoteBlobStore) else _reading_store()
    return reader.local_path(ref)


def exists(uri: str, *, tree: bool) -> bool:
    ref = parse_data_uri(uri)
    return ref.tree == tree and _reading_store().exists(ref)
