"""Migrations create exactly what the schema definition describes, on Postgres and on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from authsidecar.storage.migrate import alembic_config
from authsidecar.storage.schema import Schema
from authsidecar.storage.urls import resolve_database_url
from tests.conftest import (
    create_mariadb_database,
    create_pg_database,
    drop_mariadb_database,
    drop_pg_database,
    migrate,
)


@pytest.fixture(params=["postgres", "sqlite", "mariadb"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    if request.param == "mariadb":
        url = create_mariadb_database("authsidecar_migr")
        try:
            yield url
        finally:
            drop_mariadb_database(url)
        return
    url = create_pg_database("authsidecar_migr")
    try:
        yield url
    finally:
        drop_pg_database(url)


async def _inspect(url: str, fn: Any) -> Any:
    target = resolve_database_url(url, "")
    engine = create_async_engine(target.url, connect_args=dict(target.connect_args))
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _diff(conn: sa.Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Schema().metadata))


def _schema_facts(conn: sa.Connection) -> dict[str, Any]:
    inspector = sa.inspect(conn)
    facts: dict[str, Any] = {}
    for table in ("user", "session", "account", "verification"):
        facts[table] = {
            "columns": sorted(c["name"] for c in inspector.get_columns(table)),
            "indexes": sorted(i["name"] for i in inspector.get_indexes(table) if i["name"]),
            "fks": [(fk["referred_table"], fk["options"].get("ondelete")) for fk in inspector.get_foreign_keys(table)],
        }
    return facts


async def test_models_and_migrations_do_not_drift(fresh_url: str) -> None:
    migrate(fresh_url)
    assert await _inspect(fresh_url, _diff) == []


async def test_better_auth_tables_columns_and_indexes(fresh_url: str) -> None:
    migrate(fresh_url)
    facts = await _inspect(fresh_url, _schema_facts)
    assert facts["user"]["columns"] == sorted(
        ["id", "name", "email", "emailVerified", "image", "createdAt", "updatedAt"]
    )
    assert facts["session"]["columns"] == sorted(
        ["id", "expiresAt", "token", "createdAt", "updatedAt", "ipAddress", "userAgent", "userId"]
    )
    assert "accessTokenExpiresAt" in facts["account"]["columns"] and "providerId" in facts["account"]["columns"]
    assert facts["verification"]["columns"] == sorted(
        ["id", "identifier", "value", "expiresAt", "createdAt", "updatedAt"]
    )
    assert {"session_userId_idx", "session_expiresAt_idx"} <= set(facts["session"]["indexes"])
    assert {"account_userId_idx", "account_providerId_accountId_idx"} <= set(facts["account"]["indexes"])
    assert {"verification_identifier_idx", "verification_expiresAt_idx"} <= set(facts["verification"]["indexes"])
    assert "user_createdAt_idx" in facts["user"]["indexes"]
    assert facts["session"]["fks"] == [("user", "CASCADE")]
    assert facts["account"]["fks"] == [("user", "CASCADE")]


def _downgrade_then_upgrade(conn: sa.Connection) -> list[str]:
    cfg = alembic_config(Schema())
    cfg.attributes["connection"] = conn
    command.downgrade(cfg, "base")
    after_down = sorted(sa.inspect(conn).get_table_names())
    command.upgrade(cfg, "head")
    return after_down


async def test_downgrade_and_upgrade_again(fresh_url: str) -> None:
    migrate(fresh_url)
    migrate(fresh_url)  # idempotent at head
    assert await _inspect(fresh_url, _downgrade_then_upgrade) == ["alembic_version"]
    assert await _inspect(fresh_url, _diff) == []
