"""Alembic environment: runs on the connection Postway hands in (sync, inside run_sync)."""

from __future__ import annotations

from alembic import context

from postway.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `postway db upgrade`")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
