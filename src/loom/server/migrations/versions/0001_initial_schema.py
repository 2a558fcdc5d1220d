"""Initial schema: projects, API keys, bundles, runs, actions, attempts, cache, events.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(), nullable=nullable)  # naive UTC, see UTCDateTime


def upgrade() -> None:
    projects = op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("description", sa.Text(), nullable=False),
        _when("created_at", nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("key_id", sa.String(32), nullable=False, unique=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        _when("created_at", nullable=False),
    )
    op.create_table(
        "bundles",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("object_key", sa.String(255), nullable=False),
        _when("created_at", nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("domain", sa.String(32), nullable=False),
        sa.Column("task", sa.String(255), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("bundle", sa.String(64), sa.ForeignKey("bundles.digest"), nullable=False),
        sa.Column("env_vars", sa.JSON(), nullable=False),
        sa.Column("overwrite_cache", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(63), nullable=False),
        _when("created_at", nullable=False),
        _when("started_at"),
        _when("ended_at"),
        sa.Column("error", sa.JSON(), nullable=True),
    )
    op.create_index("ix_runs_phase", "runs", ["phase"])
    op.create_index("ix_runs_project_created", "runs", ["project_id", "created_at"])
    op.create_table(
        "actions",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("run_id", _ID, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("parent", sa.String(200), nullable=True),
        sa.Column("group", sa.JSON(), nullable=False),
        sa.Column("task", sa.String(255), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("inputs_key", sa.String(255), nullable=False),
        sa.Column("outputs_key", sa.String(255), nullable=True),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _when("retry_at"),
        sa.Column("cache", sa.String(16), nullable=False),
        _when("created_at", nullable=False),
        _when("started_at"),
        _when("ended_at"),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.UniqueConstraint("run_id", "name", name="uq_actions_run_name"),
    )
    op.create_index("ix_actions_phase_id", "actions", ["phase", "id"])
    op.create_index("ix_actions_run_parent", "actions", ["run_id", "parent"])
    op.create_table(
        "attempts",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("action_id", _ID, sa.ForeignKey("actions.id"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        _when("started_at"),
        _when("ended_at"),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("reported", sa.Boolean(), nullable=False),
        _when("runtime_started_at"),
        _when("heartbeat_at"),
        sa.Column("handle", sa.String(255), nullable=True),
        sa.Column("timeout_s", sa.Float(), nullable=True),
        sa.Column("log_key", sa.String(255), nullable=True),
        sa.UniqueConstraint("action_id", "number", name="uq_attempts_action_number"),
    )
    op.create_index("ix_attempts_phase", "attempts", ["phase"])
    op.create_table(
        "cache_entries",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("domain", sa.String(32), nullable=False),
        sa.Column("key_digest", sa.String(64), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("object_key", sa.String(255), nullable=False),
        sa.Column("run", sa.String(63), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        _when("created_at", nullable=False),
        sa.UniqueConstraint("project_id", "domain", "key_digest", name="uq_cache_scope_key"),
    )
    op.create_table(
        "events",
        sa.Column("seq", _ID, primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("run", sa.String(63), nullable=False),
        sa.Column("action", sa.String(200), nullable=True),
        sa.Column("phase", sa.String(16), nullable=False),
        _when("at", nullable=False),
    )
    op.create_index("ix_events_run", "events", ["run"])
    # every server has the default project from the start (its domains are wire.DOMAINS)
    op.bulk_insert(
        projects,
        [
            {
                "name": "default",
                "description": "The default project.",
                "created_at": datetime.now(UTC).replace(tzinfo=None),
            }
        ],
    )


def downgrade() -> None:
    for table in ("events", "cache_entries", "attempts", "actions", "runs"):
        op.drop_table(table)
    for table in ("bundles", "api_keys", "projects"):
        op.drop_table(table)
