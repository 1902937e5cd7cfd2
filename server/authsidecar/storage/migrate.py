"""Apply the Alembic migrations in ``migrations/`` to a database (Postgres or SQLite)."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from authsidecar.storage.schema import Schema
from authsidecar.storage.urls import DatabaseTarget

__all__ = ["alembic_config", "migrations_dir", "upgrade"]


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
