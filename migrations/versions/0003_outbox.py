"""The transactional outbox of after hooks and events, its counter and its delivery lease.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

from authsidecar.storage.schema import OUTBOX_LEASE_TABLE, OUTBOX_SEQ_TABLE, OUTBOX_TABLE, Schema
from authsidecar.storage.sync import sync_tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade(schema: Schema) -> None:
    """Create the outbox, its counter (one row at 0) and its lease (one row, free)."""
    sync_tables(op.get_bind(), schema.metadata, [OUTBOX_TABLE, OUTBOX_SEQ_TABLE, OUTBOX_LEASE_TABLE])


def downgrade(schema: Schema) -> None:
    """Drop them."""
    for table in (OUTBOX_LEASE_TABLE, OUTBOX_SEQ_TABLE, OUTBOX_TABLE):
        op.drop_table(table)
