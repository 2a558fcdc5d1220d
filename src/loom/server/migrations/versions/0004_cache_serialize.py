"""Actions of a serialized cache carry its key's digest: identical calls wait for one.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("actions") as batch:
        batch.add_column(sa.Column("cache_digest", sa.String(64), nullable=True))
    op.create_index("ix_actions_cache_digest", "actions", ["cache_digest"])


def downgrade() -> None:
    op.drop_index("ix_actions_cache_digest", table_name="actions")
    with op.batch_alter_table("actions") as batch:
        batch.drop_column("cache_digest")
