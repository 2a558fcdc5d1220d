"""The server's secret store: values encrypted at rest, scoped by project and domain.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("domain", sa.String(32), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("key", "project", "domain", name="uq_secrets_scope_key"),
    )


def downgrade() -> None:
    op.drop_table("secrets")
