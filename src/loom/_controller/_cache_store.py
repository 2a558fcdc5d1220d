"""The local output cache: SQLite (WAL) plus a content-addressed blob directory under
``~/.loom/cache``, shared by every process of the user."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..types import LocalBlobStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outputs (
    key TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    version TEXT NOT NULL,
    created REAL NOT NULL,
    value TEXT NOT NULL
)
"""


class LocalCacheStore:
    """Cached task outputs keyed by task, cache version and inputs."""

    def __init__(self, root: Path) -> None:
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(
                root / "cache.db", check_same_thread=False, isolation_level=None, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise ConfigError(
                f"cannot open the local cache at {root}: {e}; set LOOM_CACHE_DIR to a writable "
                "directory"
            ) from e
        self._lock = threading.Lock()
        self.blobs = LocalBlobStore(root / "blobs")

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM outputs WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, task: str, version: str, value: Any) -> None:
        text = json.dumps(value)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO outputs (key, task, version, created, value) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, task, version, time.time(), text),
            )

    def clear(self, task: str | None = None) -> int:
        """Delete entries (of one task, or all); returns how many went."""
        with self._lock:
            if task is None:
                cur = self._db.execute("DELETE FROM outputs")
            else:
                cur = self._db.execute("DELETE FROM outputs WHERE task = ?", (task,))
        return cur.rowcount


_stores: dict[Path, LocalCacheStore] = {}
_stores_lock = threading.Lock()


def cache_store(root: Path) -> LocalCacheStore:
    """The process-wide store for ``root`` (opened once)."""
    with _stores_lock:
        store = _stores.get(root)
        if store is None:
            store = _stores[root] = LocalCacheStore(root)
        return store
