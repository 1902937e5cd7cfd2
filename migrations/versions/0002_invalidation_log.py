"""The invalidation log: durable cache invalidations every instance follows, numbered in commit order.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

from authsidecar.storage.schema import INVALIDATION_SEQ_TABLE, INVALIDATION_TABLE, Schema
from authsidecar.storage.sync import sync_tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade(schema: Schema) -> None:
    """Create the log and its counter (one row, starting at 0)."""
    sync_tables(op.get_bind(), schema.metadata, [INVALIDATION_TABLE, INVALIDATION_SEQ_TABLE])


def downgrade(schema: Schema) -> None:
    """Drop the log and its counter."""
    op.drop_table(INVALIDATION_SEQ_TABLE)
    op.drop_table(INVALIDATION_TABLE)
