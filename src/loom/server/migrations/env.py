"""Alembic environment: runs on the connection the server hands over (see ``_db.Database``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from loom.server._models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the server always passes one
    raise RuntimeError("loom's migrations run through loom.server, which passes a connection")
_run(connection)
