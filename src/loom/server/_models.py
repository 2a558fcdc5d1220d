"""The metadata tables (SQLAlchemy ORM). Values live in the object store; rows hold keys.

Every schema change needs an Alembic migration in ``migrations/versions`` (a test compares the
migrated schema with these models on SQLite and PostgreSQL).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit sequence.
_BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite would drop the zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    # the public half of the key, used to find the row; the secret half is only hashed
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # {project name: "viewer" | "member"}: what a non-admin key may do, and where
    grants: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    created_at: Mapped[datetime]


class Bundle(Base):
    __tablename__ = "bundles"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex
    size: Mapped[int] = mapped_column(BigInteger)
    object_key: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]


class DataObject(Base):
    """That a project's values may refer to a data object (``loom://data/<digest>/...``):
    recorded when it is uploaded in that project. The bytes are the object store's."""

    __tablename__ = "data_objects"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    created_at: Mapped[datetime]


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_project_created", "project_id", "created_at"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    domain: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(255))
    phase: Mapped[str] = mapped_column(String(16), index=True)
    bundle: Mapped[str] = mapped_column(ForeignKey("bundles.digest"))
    env_vars: Mapped[dict[str, Any]]
    overwrite_cache: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    error: Mapped[dict[str, Any] | None]


class Action(Base):
    __tablename__ = "actions"
    __table_args__ = (
        UniqueConstraint("run_id", "name", name="uq_actions_run_name"),
        Index("ix_actions_phase_id", "phase", "id"),  # the scheduler's queue, in creation order
        Index("ix_actions_run_parent", "run_id", "parent"),
        Index("ix_actions_cache_digest", "cache_digest"),
        # the timeout sweep's: open actions past a bound (only those with one are indexed)
        Index(
            "ix_actions_phase_deadline_at",
            "phase",
            "deadline_at",
            sqlite_where=text("deadline_at IS NOT NULL"),
            postgresql_where=text("deadline_at IS NOT NULL"),
        ),
        Index(
            "ix_actions_phase_queued_until",
            "phase",
            "queued_until",
            sqlite_where=text("queued_until IS NOT NULL"),
            postgresql_where=text("queued_until IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    name: Mapped[str] = mapped_column(String(200))
    parent: Mapped[str | None] = mapped_column(String(200))
    group: Mapped[list[str]]
    task: Mapped[str] = mapped_column(String(255))
    spec: Mapped[dict[str, Any]]  # the wire TaskSpec
    inputs_key: Mapped[str] = mapped_column(String(255))
    outputs_key: Mapped[str | None] = mapped_column(String(255))
    phase: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # attempts started so far
    # what it holds while running (see ``_requests``): a share of an executor slot (1, or
    # 1/concurrency in a warm worker, which runs `concurrency` actions in the slot of one),
    # and its requests, defaults filled in, divided the same way
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")
    cpu_request: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    memory_request: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    gpu_request: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # attempts the infrastructure lost (worker lost, server restarted): retried from the
    # server's allowance, not from the task's retries
    lost_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # the warm pool its attempts run in (see ``_requests.pool_of``), if its task is reusable
    pool: Mapped[str | None] = mapped_column(String(64), default=None)
    # ``loom.custom_context`` pairs its attempts see (``None``: none)
    custom_context: Mapped[dict[str, Any] | None]
    retry_at: Mapped[datetime | None]  # when a RETRYING action may start its next attempt
    # when it fails if it has not ended (``Timeout.deadline``, from its creation), and if it
    # has not started an attempt (``Timeout.max_queued_time``, from when it may: created, or
    # due for a retry); see ``_state.time_bounds``
    deadline_at: Mapped[datetime | None]
    queued_until: Mapped[datetime | None]
    # disabled, miss, hit, overwritten, or waiting: QUEUED behind an identical call of a
    # serialized cache (not claimable until that one ends)
    cache: Mapped[str] = mapped_column(String(16), default="disabled")
    # the cache key's digest, for a task with ``Cache(serialize=True)`` only
    cache_digest: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    error: Mapped[dict[str, Any] | None]


class Attempt(Base):
    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("action_id", "number", name="uq_attempts_action_number"),
        Index("ix_attempts_phase", "phase"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id"))
    number: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    error: Mapped[dict[str, Any] | None]
    # True once the runtime's own `finished` report was accepted, so a duplicate is ignored
    reported: Mapped[bool] = mapped_column(Boolean, default=False)
    runtime_started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    handle: Mapped[str | None] = mapped_column(String(255))  # the executor's, for reclaiming
    timeout_s: Mapped[float | None] = mapped_column(Float)
    log_key: Mapped[str | None] = mapped_column(String(255))


class CacheEntry(Base):
    __tablename__ = "cache_entries"
    __table_args__ = (
        UniqueConstraint("project_id", "domain", "key_digest", name="uq_cache_scope_key"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    domain: Mapped[str] = mapped_column(String(32))
    key_digest: Mapped[str] = mapped_column(String(64))  # sha256 of the key: keys can be long
    key: Mapped[str] = mapped_column(Text)
    object_key: Mapped[str] = mapped_column(String(255))
    run: Mapped[str] = mapped_column(String(63))
    action: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class SecretRow(Base):
    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("key", "project", "domain", name="uq_secrets_scope_key"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(255))
    # "" for every project / every domain (not NULL: NULLs never collide in a unique key)
    project: Mapped[str] = mapped_column(String(63), default="")
    domain: Mapped[str] = mapped_column(String(32), default="")
    ciphertext: Mapped[str] = mapped_column(Text)  # Fernet: encrypted and authenticated
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Event(Base):
    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(_BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    run: Mapped[str] = mapped_column(String(63), index=True)
    action: Mapped[str | None] = mapped_column(String(200))
    phase: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]


class InteractiveSession(Base):
    """An IDE (code-server or Jupyter) a runtime started for one attempt of an action.

    ``token`` is the IDE's own secret (Jupyter's): the proxy adds it to what it forwards, and
    nothing else ever reads it; it is never returned by the API nor logged. The IDE listens on
    ``socket``, a Unix socket on the worker, so the proxy is the only way in.
    """

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_action_started", "action_id", "started_at"),)

    # random and unguessable (it is in the proxied URL), though never enough on its own:
    # every proxied request is authenticated too
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    socket: Mapped[str] = mapped_column(Text)
    token: Mapped[str | None] = mapped_column(Text)
    workspace: Mapped[str] = mapped_column(Text)
    max_idle_seconds: Mapped[float | None] = mapped_column(Float)
    # the pending request of a person (resume or fail) the runtime has not answered yet
    command: Mapped[str | None] = mapped_column(String(16))
    command_id: Mapped[int] = mapped_column(Integer, default=0)
    # the runtime's answer to the latest request (a wire.ResumeOutcome)
    outcome: Mapped[dict[str, Any] | None]
    started_at: Mapped[datetime]
    last_activity_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(Text)
