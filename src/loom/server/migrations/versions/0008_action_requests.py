"""Actions keep their resource requests (the scheduler packs them against the machine) and
count the attempts the infrastructure lost (retried apart from the task's retries).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # actions created before hold only their slot (requests of 0), as they did then
    with op.batch_alter_table("actions") as batch:
        batch.add_column(sa.Column("cpu_request", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("memory_request", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("gpu_request", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("lost_attempts", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("actions") as batch:
        batch.drop_column("lost_attempts")
        batch.drop_column("gpu_request")
        batch.drop_column("memory_request")
        batch.drop_column("cpu_request")
