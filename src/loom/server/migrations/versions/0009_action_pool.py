"""Actions of a reusable environment name the warm pool they run in: the scheduler starts no
more of them than the pool runs at once (the rest wait in the queue, not in the pool).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # actions created before have none: they are not counted per pool, as they were not then
    with op.batch_alter_table("actions") as batch:
        batch.add_column(sa.Column("pool", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("actions") as batch:
        batch.drop_column("pool")
