"""Alembic environment. Run through ``authsidecar migrate`` (which passes the connection and schema)."""

from __future__ import annotations

from alembic import context

from authsidecar.storage.schema import Schema

config = context.config
schema: Schema = config.attributes.get("schema") or Schema()
target_metadata = schema.metadata


def run_migrations_online() -> None:
    """Migrate over the connection given by the caller."""
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `authsidecar migrate`")
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations(schema=schema)


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) mode is not supported; use `authsidecar migrate`")
run_migrations_online()
