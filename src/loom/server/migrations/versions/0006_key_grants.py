"""API keys carry their roles in projects (viewer or member); admin keys need none.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        # existing keys were all-powerful or admin: a non-admin one keeps member in every
        # project that exists now, so an upgrade locks nobody out of their work
        batch.add_column(sa.Column("grants", sa.JSON(), nullable=False, server_default="{}"))
    projects = [row[0] for row in op.get_bind().execute(sa.text("SELECT name FROM projects"))]
    if projects:
        keys = sa.table("api_keys", sa.column("admin", sa.Boolean), sa.column("grants", sa.JSON))
        op.execute(
            keys.update()
            .where(keys.c.admin.is_(False))
            .values(grants=dict.fromkeys(projects, "member"))
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("grants")
