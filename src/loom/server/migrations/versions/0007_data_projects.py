"""Data objects belong to the projects they were uploaded in: a key reads only its projects'.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # data uploaded before has no project: admins still read it, and whoever uploads it
    # again (as every client does when HEAD says it is missing) gives it one
    op.create_table(
        "data_objects",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id"), primary_key=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("data_objects")
