"""Interactive sessions: the IDEs runtimes start for interactive actions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(), nullable=nullable)  # naive UTC, see UTCDateTime


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("action_id", _ID, sa.ForeignKey("actions.id"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("socket", sa.Text(), nullable=False),
        sa.Column("token", sa.Text(), nullable=True),
        sa.Column("workspace", sa.Text(), nullable=False),
        sa.Column("max_idle_seconds", sa.Float(), nullable=True),
        sa.Column("command", sa.String(16), nullable=True),
        sa.Column("command_id", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.JSON(), nullable=True),
        _when("started_at", nullable=False),
        _when("last_activity_at", nullable=False),
        _when("ended_at"),
        sa.Column("end_reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_sessions_action_started", "sessions", ["action_id", "started_at"])


def downgrade() -> None:
    op.drop_table("sessions")
