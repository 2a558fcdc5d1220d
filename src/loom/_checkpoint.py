"""Checkpoints: what an attempt of an action saves, the next attempt of the same action loads.

``loom.ctx().checkpoint`` is a :class:`Checkpoint` in every task, with Flyte 2's shape:
``load()``/``save(data)`` in async code, ``load_sync()``/``save_sync(data)`` in sync code, a
local directory ``path`` and ``prev_exists()``. A task that fails after saving resumes from its
checkpoint on the retry; the first attempt loads ``None``.

``save`` takes ``bytes``, a file or a directory; one checkpoint is one object (a later save of
the same attempt replaces it). ``load`` gives ``path / "payload"`` for bytes and files, and
``path`` itself, with the directory's contents unpacked into it, for a directory. Unlike Flyte,
which guesses from the bytes whether a checkpoint is a tar archive, loom records what was saved:
a ``.tar.gz`` saved as a file loads as that file.

Where checkpoints live is the run's business (a :class:`CheckpointStore`): a local run keeps
them in its scratch directory, a remote one on the server (see ``loom._controller._checkpoints``).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import wire
from .errors import PayloadTooLargeError

if TYPE_CHECKING:
    from ._context import TaskContext


#: Where ``load`` puts a checkpoint saved from bytes or a file (Flyte 2's name).
PAYLOAD = "payload"
_Kind = wire.CheckpointKind


def latest_checkpoint(
    root: Path | str,
    glob_pattern: str = "**/last.ckpt",
    *,
    key: Callable[[Path], Any] | None = None,
) -> Path | None:
    """The file under ``root`` matching ``glob_pattern`` that ranks highest by ``key`` (by
    default the newest modification time), or ``None`` if none matches: e.g. Lightning's
    ``last.ckpt`` in a tree restored by :meth:`Checkpoint.load`."""
    matches = [p for p in Path(root).glob(glob_pattern) if p.is_file()]
    if not matches:
        return None
    return max(matches, key=key if key is not None else (lambda p: p.stat().st_mtime))


def too_large(size: int, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"checkpoint of {size} bytes is over the limit of {limit} bytes; save less (the "
        "state needed to resume, not every artefact), or pass large results on as "
        "loom.io.File/Dir outputs",
        413,
    )


# -- where checkpoints are kept ---------------------------------------------------------------


class CheckpointStore(ABC):
    """Keeps the checkpoints of a run's actions: each attempt's latest save, for the attempts
    after it. The sync methods may block; the async ones default to running them in a thread
    (a remote store talks to the server on its event loop instead)."""

    @abstractmethod
    def previous_sync(self, action: str, attempt: int) -> bool:
        """Whether an attempt of ``action`` before ``attempt`` saved a checkpoint."""

    @abstractmethod
    def fetch_sync(self, action: str, attempt: int, target: Path) -> wire.CheckpointKind | None:
        """Write the latest checkpoint saved before ``attempt`` into the file ``target``; its
        kind, or ``None`` if there is none (``target`` is then left alone)."""

    @abstractmethod
    def save_sync(
        self, action: str, attempt: int, kind: wire.CheckpointKind, blob: bytes | Path
    ) -> None:
        """Keep ``blob`` as the checkpoint of ``attempt`` (replacing its earlier one)."""

    async def fetch(self, action: str, attempt: int, target: Path) -> wire.CheckpointKind | None:
        return await asyncio.to_thread(self.fetch_sync, action, attempt, target)

    async def save(
        self, action: str, attempt: int, kind: wire.CheckpointKind, blob: bytes | Path
    ) -> None:
        await asyncio.to_thread(self.save_sync, action, attempt, kind, blob)


class LocalCheckpoints(CheckpointStore):
    """A local run's checkpoints, as files ``<action>/<attempt>.<kind>`` under a directory
    (made on first save; the run removes it when it ends)."""

    def __init__(self, directory: Callable[[], Path]) -> None:
        self._directory = directory
        self._lock = threading.Lock()

    def _action_dir(self, action: str) -> Path:
        # action names are the run's own (``a0``, ``square-3``): still, never a path
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in action).lstrip(".")
        return self._directory() / (safe or "_")

    def _latest(self, action: str, attempt: int) -> tuple[Path, wire.CheckpointKind] | None:
        found: tuple[int, Path, wire.CheckpointKind] | None = None
        try:
            entries = list(os.scandir(self._action_dir(action)))
        except FileNotFoundError:
            return None
        for entry in entries:
            number, _, kind = entry.name.partition(".")
            if not number.isdigit() or kind not in _Kind.__members__.values():
                continue
            n = int(number)
            if n < attempt and (found is None or n > found[0]):
                found = (n, Path(entry.path), _Kind(kind))
        return None if found is None else (found[1], found[2])

    def previous_sync(self, action: str, attempt: int) -> bool:
        return self._latest(action, attempt) is not None

    def fetch_sync(self, action: str, attempt: int, target: Path) -> wire.CheckpointKind | None:
        latest = self._latest(action, attempt)
        if latest is None:
            return None
        shutil.copyfile(latest[0], target)
        return latest[1]

    def save_sync(
        self, action: str, attempt: int, kind: wire.CheckpointKind, blob: bytes | Path
    ) -> None:
        directory = self._action_dir(action)
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".save-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                if isinstance(blob, bytes):
                    f.write(blob)
                else:
                    with blob.open("rb") as src:
                        shutil.copyfileobj(src, f)
            with self._lock:  # one checkpoint per attempt: the kind may change between saves
                for other in _Kind:
                    (directory / f"{attempt}.{other.value}").unlink(missing_ok=True)
                os.replace(name, directory / f"{attempt}.{kind.value}")
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise


# -- the task's view --------------------------------------------------------------------------


class BaseCheckpoint(ABC):
    """What a task's checkpoint offers (Flyte 2's ``BaseCheckpoint``)."""

    @property
    @abstractmethod
    def path(self) -> Path:
        """The local directory ``load`` restores into (and that a task may write in)."""

    @abstractmethod
    def prev_exists(self) -> bool:
        """Whether an earlier attempt of this action saved a checkpoint to resume from."""

    @abstractmethod
    async def load(self) -> Path | None:
        """Restore the previous attempt's checkpoint (async)."""

    @abstractmethod
    async def save(self, data: Path | str | bytes) -> None:
        """Save this attempt's checkpoint (async)."""

    @abstractmethod
    def load_sync(self) -> Path | None:
        """Restore the previous attempt's checkpoint (sync task code)."""

    @abstractmethod
    def save_sync(self, data: Path | str | bytes) -> None:
        """Save this attempt's checkpoint (sync task code)."""


class Checkpoint(BaseCheckpoint):
    """One attempt's checkpoint, from ``loom.ctx().checkpoint`` (see the module docstring).

    ``load()`` returns ``None`` in the first attempt (and whenever no earlier attempt saved),
    ``path / "payload"`` for a checkpoint saved from bytes or a file, and ``path`` for one
    saved from a directory; it restores once per attempt, later calls return the same path.
    ``save(data)`` takes bytes, a file path or a directory path; the latest save of an attempt
    is what the next attempt loads.
    """

    def __init__(self, store: CheckpointStore, action: str, attempt: int) -> None:
        self._store = store
        self.action = action
        self.attempt = attempt
        self._dir: Path | None = None
        self._restored: tuple[wire.CheckpointKind | None] | None = None
        self._previous: bool | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Checkpoint(action={self.action!r}, attempt={self.attempt})"

    @property
    def path(self) -> Path:
        if self._dir is None:
            with self._lock:
                if self._dir is None:
                    directory = Path(tempfile.mkdtemp(prefix="loom-checkpoint-"))
                    # removed with the attempt's checkpoint object (or at exit)
                    weakref.finalize(self, shutil.rmtree, directory, ignore_errors=True)
                    self._dir = directory
        return self._dir

    def prev_exists(self) -> bool:
        if self._restored is not None:
            return self._restored[0] is not None
        if self._previous is None:
            self._previous = self.attempt > 1 and self._store.previous_sync(
                self.action, self.attempt
            )
        return self._previous

    # -- load -------------------------------------------------------------------------------

    def _download_target(self) -> Path:
        fd, name = tempfile.mkstemp(prefix=".download-", dir=self.path)
        os.close(fd)
        return Path(name)

    def _restore(self, download: Path, kind: wire.CheckpointKind | None) -> Path | None:
        """Unpack what was downloaded into :attr:`path` (emptied first) and say where it is."""
        root = self.path
        try:
            for child in root.iterdir():
                if child == download:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            if kind == _Kind.DIR:
                import tarfile  # (not on ``import loom``'s path)

                try:
                    with tarfile.open(download, "r:gz") as tar:
                        tar.extractall(root, filter="data")  # nothing outside root, no links out
                except (tarfile.TarError, EOFError) as e:
                    raise OSError(f"cannot unpack the checkpoint of {self.action}: {e}") from e
            elif kind == _Kind.FILE:
                os.replace(download, root / PAYLOAD)
        finally:
            download.unlink(missing_ok=True)
        self._restored = (kind,)
        return self._loaded()

    def _loaded(self) -> Path | None:
        assert self._restored is not None
        kind = self._restored[0]
        if kind is None:
            return None
        return self.path if kind == _Kind.DIR else self.path / PAYLOAD

    async def load(self) -> Path | None:
        if self._restored is not None:
            return self._loaded()
        if self.attempt <= 1 or self._previous is False:
            self._restored = (None,)
            return None
        download = self._download_target()
        try:
            kind = await self._store.fetch(self.action, self.attempt, download)
        except BaseException:
            download.unlink(missing_ok=True)
            raise
        return await asyncio.to_thread(self._restore, download, kind)

    def load_sync(self) -> Path | None:
        if self._restored is not None:
            return self._loaded()
        if self.attempt <= 1 or self._previous is False:
            self._restored = (None,)
            return None
        download = self._download_target()
        try:
            kind = self._store.fetch_sync(self.action, self.attempt, download)
        except BaseException:
            download.unlink(missing_ok=True)
            raise
        return self._restore(download, kind)

    # -- save -------------------------------------------------------------------------------

    def _blob(self, data: Path | str | bytes) -> tuple[wire.CheckpointKind, bytes | Path, bool]:
        """What to store for ``data``: its kind, the bytes or a file, and whether that file is
        a temporary one of ours (a packed directory)."""
        limit = wire.MAX_CHECKPOINT_BYTES
        if isinstance(data, bytes | bytearray | memoryview):
            blob = bytes(data)
            if len(blob) > limit:
                raise too_large(len(blob), limit)
            return _Kind.FILE, blob, False
        if not isinstance(data, str | os.PathLike):
            raise TypeError(
                f"a checkpoint is bytes, a file or a directory (a str or pathlib.Path), "
                f"not {type(data).__name__}"
            )
        source = Path(data)
        if source.is_dir():
            from .io._remote import pack_tree, tree_entries

            entries = tree_entries(source)
            fd, name = tempfile.mkstemp(prefix="loom-checkpoint-", suffix=".tar.gz")
            archive = Path(name)
            try:
                with os.fdopen(fd, "wb") as f:
                    pack_tree(entries, f)
                size = archive.stat().st_size
                if size > limit:
                    raise too_large(size, limit)
            except BaseException:
                archive.unlink(missing_ok=True)
                raise
            return _Kind.DIR, archive, True
        if source.is_file():
            size = source.stat().st_size
            if size > limit:
                raise too_large(size, limit)
            return _Kind.FILE, source, False
        raise FileNotFoundError(f"cannot save checkpoint {source}: no such file or directory")

    async def save(self, data: Path | str | bytes) -> None:
        kind, blob, temporary = await asyncio.to_thread(self._blob, data)
        try:
            await self._store.save(self.action, self.attempt, kind, blob)
        finally:
            if temporary:
                assert isinstance(blob, Path)
                blob.unlink(missing_ok=True)

    def save_sync(self, data: Path | str | bytes) -> None:
        kind, blob, temporary = self._blob(data)
        try:
            self._store.save_sync(self.action, self.attempt, kind, blob)
        finally:
            if temporary:
                assert isinstance(blob, Path)
                blob.unlink(missing_ok=True)


# -- finding a task's store -------------------------------------------------------------------

_fallback: dict[str, LocalCheckpoints] = {}
_fallback_lock = threading.Lock()


def checkpoint_of(context: TaskContext) -> Checkpoint:
    """A new :class:`Checkpoint` for the context's current attempt, kept by its run's store
    (``run.checkpoints``), or by a temporary one of the process for a host without a store."""
    store = getattr(context.run, "checkpoints", None)
    if not isinstance(store, CheckpointStore):
        with _fallback_lock:
            store = _fallback.get(context.run.name)
            if store is None:
                directory = Path(tempfile.mkdtemp(prefix="loom-checkpoints-"))
                atexit.register(shutil.rmtree, directory, ignore_errors=True)
                store = _fallback[context.run.name] = LocalCheckpoints(lambda: directory)
    return Checkpoint(store, str(context.action), max(context.attempt, 1))
