"""Checkpoints: what an attempt of an action saves, for the next attempt of that action.

An action's checkpoints live under ``checkpoints/<sha256 of run and action>/`` in the object
store: each save is an object of its own, and an index names the latest save of the newest
attempt and of the one before it (an attempt that saves before it loads still finds its
predecessor's); superseded saves are deleted. The server never reads a checkpoint's bytes: the
SDK unpacks a directory's archive.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ValidationError

from .. import wire
from ._errors import NotFoundError
from ._objects import ObjectStore

#: Saves the index keeps: the newest attempt's and the one before it.
_KEPT = 2


class _Saved(BaseModel):
    info: wire.CheckpointInfo
    key: str


class _Index(BaseModel):
    saved: list[_Saved] = []


class CheckpointService:
    """Stores and finds checkpoints; one writer per server process (its lock)."""

    def __init__(self, store: ObjectStore, max_data_bytes: int) -> None:
        self._store = store
        #: the server's data limit holds for checkpoints too
        self.max_bytes = min(wire.MAX_CHECKPOINT_BYTES, max_data_bytes)
        self._lock = threading.Lock()

    @staticmethod
    def _prefix(run: str, action: str) -> str:
        # hashed: run and action names need not be object-key-safe
        return "checkpoints/" + hashlib.sha256(f"{run}\0{action}".encode()).hexdigest()

    def _index(self, prefix: str) -> _Index:
        try:
            return _Index.model_validate_json(self._store.get_bytes(f"{prefix}/index.json"))
        except (NotFoundError, ValidationError):  # none yet (or a torn one: start over)
            return _Index()

    def save(
        self,
        run: str,
        action: str,
        attempt: int,
        kind: wire.CheckpointKind,
        path: Path,
        size: int,
        sha256: str,
    ) -> wire.CheckpointInfo:
        """Keep the file ``path`` (moved) as ``attempt``'s checkpoint."""
        prefix = self._prefix(run, action)
        info = wire.CheckpointInfo(attempt=attempt, kind=kind, size=size, sha256=sha256)
        key = f"{prefix}/{attempt}-{uuid.uuid4().hex}"
        self._store.put_file(key, path, move=True)
        with self._lock:
            index = self._index(prefix)
            others = [s for s in index.saved if s.info.attempt != attempt]
            saved = sorted([*others, _Saved(info=info, key=key)], key=lambda s: s.info.attempt)
            kept = saved[-_KEPT:]
            self._store.put_bytes(
                f"{prefix}/index.json", _Index(saved=kept).model_dump_json().encode()
            )
        # what no attempt will load again: this attempt's earlier save, and older ones
        for old in index.saved:
            if old.key not in {s.key for s in kept}:
                self._store.delete(old.key)
        return info

    def latest_before(self, run: str, action: str, attempt: int) -> tuple[wire.CheckpointInfo, str]:
        """The latest checkpoint saved by an attempt before ``attempt`` and its object's key;
        :class:`NotFoundError` if there is none."""
        index = self._index(self._prefix(run, action))
        earlier = [s for s in index.saved if s.info.attempt < attempt]
        if not earlier or not self._store.exists(earlier[-1].key):
            raise NotFoundError(
                f"no attempt of action {action} of run {run} before attempt {attempt} saved "
                "a checkpoint"
            )
        return earlier[-1].info, earlier[-1].key

    def source(self, key: str) -> tuple[Path | None, Iterator[bytes] | None]:
        """A local file with the checkpoint's bytes, or else its chunks."""
        local = self._store.local_path(key)
        if local is not None:
            return local, None
        return None, self._store.iter_bytes(key)
