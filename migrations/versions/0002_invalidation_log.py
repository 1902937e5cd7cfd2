"""The invalidation log: durable cache invalidations every instance follows, numbered in commit order.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from authsidecar.storage.schema import INVALIDATION_SEQ_TABLE, INVALIDATION_TABLE, Schema, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade(schema: Schema) -> None:
    """Create the log and its counter (one row, starting at 0)."""
    op.create_table(
        INVALIDATION_TABLE,
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("createdAt", UTCDateTime(), nullable=False, server_default=sa.text("CURRENT_TIMESTAMP")),
        sa.Column("payload", sa.Text(), nullable=False),
    )
    op.create_index(f"{INVALIDATION_TABLE}_createdAt_idx", INVALIDATION_TABLE, ["createdAt"])
    counter = op.create_table(
        INVALIDATION_SEQ_TABLE,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("lastSeq", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(counter, [{"id": 1, "lastSeq": 0}])


def downgrade(schema: Schema) -> None:
    """Drop the log and its counter."""
    op.drop_table(INVALIDATION_SEQ_TABLE)
    op.drop_table(INVALIDATION_TABLE)
