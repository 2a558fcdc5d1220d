"""The metadata database: engine, sessions, migrations and the single-writer lock."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from ._errors import ConfigurationError

T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest migration. Starting skips Alembic (and its import cost) when the database is
#: already there; a test checks this matches the scripts.
HEAD_REVISION = "0011"


class Database:
    """One engine for the server process.

    Writes go through :meth:`write`, which holds one process-wide lock: the server is the only
    writer of run state (DESIGN §4), and serialising its transactions makes event ``seq``
    numbers commit in order (an SSE reader never skips one) on PostgreSQL as on SQLite.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                _private_sqlite_file(Path(path))
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            kwargs.update(pool_size=20, max_overflow=20)
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except Exception as e:  # bad URL, missing driver...
            raise ConfigurationError(f"cannot use database {_redact(url)}: {e}") from e
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.lock = threading.RLock()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading; it never commits."""
        _check_may_block()
        with self._sessions() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction under the writer lock; committed when the block ends normally."""
        _check_may_block()
        with self.lock, self._sessions() as session, session.begin():
            yield session

    def migrate(self) -> None:
        """Bring the schema to the newest revision (``alembic upgrade head``)."""
        try:
            with self.engine.connect() as conn:
                if _current_revision(conn) == HEAD_REVISION:
                    return
                from alembic import command
                from alembic.config import Config

                config = Config()
                config.set_main_option("script_location", str(MIGRATIONS))
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
                conn.commit()
        except ConfigurationError:
            raise
        except Exception as e:
            raise ConfigurationError(
                f"cannot prepare database {_redact(self.url)}: {type(e).__name__}: {e}"
            ) from e

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


class WouldBlock(Exception):
    """Code run by :func:`without_blocking` needed the database."""


_blocking_forbidden: ContextVar[bool] = ContextVar("loom_db_forbidden", default=False)


def _check_may_block() -> None:
    if _blocking_forbidden.get():
        raise WouldBlock


def without_blocking(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` where using the database raises :class:`WouldBlock`:
    on the event loop, for what caches usually answer (the caller then runs it in a thread)."""
    token = _blocking_forbidden.set(True)
    try:
        return function(*args, **kwargs)
    finally:
        _blocking_forbidden.reset(token)


def _current_revision(conn: Any) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    conn.rollback()  # leave no transaction open for Alembic to trip over
    return None if row is None else str(row[0])


def _private_sqlite_file(path: Path) -> None:
    """Make the SQLite database readable by the server's user only, new or not: it holds key
    hashes, secrets (encrypted) and every run's metadata. SQLite gives its ``-wal`` and
    ``-shm`` files the database file's mode, so those follow."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # (an empty file is a new db)
        for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
            if file.exists() and file.stat().st_mode & 0o077:
                file.chmod(0o600)
    except OSError as e:  # not ours to change: the operator chose it
        logging.getLogger("loom.server").warning("cannot make %s private: %s", path, e)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run while the one writer commits; NORMAL is durable across app crashes
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"
