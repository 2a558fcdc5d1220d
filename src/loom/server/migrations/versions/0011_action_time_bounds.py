"""Actions keep when their ``Timeout`` bounds expire: ``deadline_at`` (``deadline``, from the
action's creation) and ``queued_until`` (``max_queued_time``, from when it may start), each
indexed by phase for the server's timeout sweep, and only where set.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("actions") as batch:
        batch.add_column(sa.Column("deadline_at", sa.DateTime(), nullable=True))  # naive UTC
        batch.add_column(sa.Column("queued_until", sa.DateTime(), nullable=True))
    for column in ("deadline_at", "queued_until"):
        op.create_index(
            f"ix_actions_phase_{column}",
            "actions",
            ["phase", column],
            sqlite_where=sa.text(f"{column} IS NOT NULL"),
            postgresql_where=sa.text(f"{column} IS NOT NULL"),
        )


def downgrade() -> None:
    for column in ("deadline_at", "queued_until"):
        op.drop_index(f"ix_actions_phase_{column}", "actions")
    with op.batch_alter_table("actions") as batch:
        batch.drop_column("queued_until")
        batch.drop_column("deadline_at")
