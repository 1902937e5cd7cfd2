"""Apply the Alembic migrations in ``migrations/`` to a database (Postgres or SQLite)."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from authsidecar.storage.schema import Schema
from authsidecar.storage.urls import DatabaseTarget

__all__ = ["alembic_config", "migrations_dir", "schema_status", "upgrade"]


def migrations_dir() -> Path:
    """The ``migrations/`` folder of the source tree this package runs from."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "migrations"
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("migrations/ not found next to the authsidecar sources")


def alembic_config(schema: Schema) -> Config:
    """An Alembic config bound to our migrations and schema definition."""
    cfg = Config()
    cfg.set_main_option("script_location", os.fspath(migrations_dir()))
    cfg.attributes["schema"] = schema
    return cfg


def _upgrade(connection: Connection, cfg: Config, revision: str) -> None:
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def upgrade(target: DatabaseTarget, schema: Schema, revision: str = "head") -> None:
    """Run migrations up to ``revision`` in one connection."""
    engine = create_async_engine(target.url, connect_args=dict(target.connect_args))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, alembic_config(schema), revision)
    finally:
        await engine.dispose()


def _current_revisions(connection: Connection) -> set[str]:
    return set(MigrationContext.configure(connection).get_current_heads())


async def schema_status(engine: AsyncEngine) -> str | None:
    """None when the database is at the latest migration, else a one-line explanation."""
    heads = set(ScriptDirectory.from_config(alembic_config(Schema())).get_heads())
    async with engine.connect() as conn:
        current = await conn.run_sync(_current_revisions)
    if current == heads:
        return None
    return f"database schema is at {sorted(current) or 'nothing'}, needs {sorted(heads)}: run `authsidecar migrate`"
