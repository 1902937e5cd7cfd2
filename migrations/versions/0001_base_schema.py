"""Base schema: Better Auth's user, session, account and verification tables, as configured.

Additive and idempotent (storage/sync.py): on an empty database it creates the tables and indexes; on a database
whose tables were created by Better Auth, by Drizzle or by hand, it adds only what is missing.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

from authsidecar.storage.schema import Schema
from authsidecar.storage.sync import sync_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _core(schema: Schema) -> list[str]:
    return [model.table for model in schema.registry.models()]


def upgrade(schema: Schema) -> None:
    """Create or complete the four tables."""
    sync_tables(op.get_bind(), schema.metadata, _core(schema))


def downgrade(schema: Schema) -> None:
    """Drop the four tables."""
    for table in reversed(_core(schema)):
        op.drop_table(table)
