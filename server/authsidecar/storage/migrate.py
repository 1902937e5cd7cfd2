"""Migrations: the Alembic history in ``migrations/`` plus the additive sync of the configured schema.

Every revision is additive and idempotent (storage/sync.py), so ``upgrade`` works the same on an empty database
and on one whose tables already exist (adopting a Better Auth, Drizzle or hand-made schema): it checks first and
stops on any problem before changing anything, runs the revisions, then adds what the configuration has beyond
them (additional fields). ``check`` and ``dry_run`` read only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from authsidecar.storage.schema import Schema
from authsidecar.storage.sync import Plan, SchemaProblem, apply, plan
from authsidecar.storage.urls import DatabaseTarget

__all__ = ["Status", "alembic_config", "check", "migrations_dir", "schema_status", "upgrade"]

T = TypeVar("T")


def migrations_dir() -> Path:
    """The Alembic environment: the package ``authsidecar.migrations`` (the top-level ``migrations/`` folder of
    the source tree, linked into the package, so it ships in the wheel)."""
    from authsidecar import migrations

    return Path(migrations.__file__).resolve().parent


def alembic_config(schema: Schema) -> Config:
    """An Alembic config bound to our migrations and schema definition."""
    cfg = Config()
    cfg.set_main_option("script_location", os.fspath(migrations_dir()))
    cfg.attributes["schema"] = schema
    return cfg


@dataclass(frozen=True)
class Status:
    """Where a database stands: its Alembic revision(s), the latest one, and what the schema sync would do."""

    current: frozenset[str]
    head: frozenset[str]
    plan: Plan

    @property
    def in_sync(self) -> bool:
        """The tables match the configured schema (the revision record is informational)."""
        return self.plan.in_sync

    def describe(self) -> str:
        """For people: the differences, then the revision record."""
        lines = [self.plan.describe()] if self.plan.describe() else []
        if self.current != self.head:
            lines.append(f"revision: {sorted(self.current) or 'none recorded'}, latest {sorted(self.head)}")
        return "\n".join(lines)


def _status(connection: Connection, schema: Schema) -> Status:
    heads = frozenset(ScriptDirectory.from_config(alembic_config(schema)).get_heads())
    current = frozenset(MigrationContext.configure(connection).get_current_heads())
    return Status(current, heads, plan(connection, schema.metadata))


def _one_at_a_time(connection: Connection) -> None:
    """Several `migrate` at once (an init container on every replica) queue up instead of colliding: the later
    ones then find everything in place. SQLite's write lock does this by itself."""
    name = connection.dialect.name
    if name == "postgresql":
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7415823)")  # held until this transaction ends
    elif name == "mysql":
        got = connection.exec_driver_sql("SELECT GET_LOCK('authsidecar_migrate', 300)").scalar()  # per connection
        if got != 1:
            raise SchemaProblem("another migrate held the migration lock for 5 minutes; try again")


def _upgrade(connection: Connection, schema: Schema, revision: str) -> Plan:
    _one_at_a_time(connection)
    before = plan(connection, schema.metadata)
    if before.problems:
        raise SchemaProblem("; ".join(before.problems))
    cfg = alembic_config(schema)
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)
    if revision == "head":  # what the configuration adds beyond the revisions (additional fields, plugins)
        rest = plan(connection, schema.metadata)
        if rest.problems:
            raise SchemaProblem("; ".join(rest.problems))
        apply(connection, rest.steps)
    return before


async def _run(target: DatabaseTarget, fn: Callable[[Connection], T], write: bool) -> T:
    engine = create_async_engine(target.url, connect_args=dict(target.connect_args))
    try:
        async with engine.begin() if write else engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


async def upgrade(target: DatabaseTarget, schema: Schema, revision: str = "head") -> Plan:
    """Bring the database up to ``revision`` and the configured schema, in one transaction where the database
    allows; returns what was missing. Raises SchemaProblem, changing nothing, when something cannot be added."""
    return await _run(target, lambda conn: _upgrade(conn, schema, revision), write=True)


async def check(target: DatabaseTarget, schema: Schema) -> Status:
    """Compare without changing anything."""
    return await _run(target, lambda conn: _status(conn, schema), write=False)


async def schema_status(engine: AsyncEngine, schema: Schema) -> str | None:
    """None when the tables match the configured schema, else a one-line explanation with what to do."""
    async with engine.connect() as conn:
        status = await conn.run_sync(_status, schema)
    if status.in_sync:
        return None
    first = (status.plan.problems or [f"missing {step.description}" for step in status.plan.steps])[0]
    count = len(status.plan.problems) + len(status.plan.steps)
    more = f" (and {count - 1} more)" if count > 1 else ""
    return f"database schema does not match the configuration: {first}{more}: run `authsidecar migrate`"
