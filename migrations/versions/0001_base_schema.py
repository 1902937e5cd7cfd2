"""Base schema: Better Auth's user, session, account and verification tables.

Column types and constraints are written out here (a migration is history, frozen); only the physical names
come from the schema definition, so configured table/column names apply.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from authsidecar.storage.schema import Schema, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade(schema: Schema) -> None:
    """Create the four tables and their indexes."""
    n = schema.names
    now = sa.text("CURRENT_TIMESTAMP")

    def c(table: str, logical: str, type_: sa.types.TypeEngine[object], **kw: object) -> sa.Column[object]:
        return sa.Column(n.column(table, logical), type_, **kw)  # type: ignore[arg-type]

    def ts(table: str, logical: str, **kw: object) -> sa.Column[object]:
        return c(table, logical, UTCDateTime(), **kw)  # type: ignore[arg-type]

    user, uid = n.table("user"), n.column("user", "id")

    def user_fk(table: str) -> sa.Column[object]:
        return sa.Column(
            n.column(table, "user_id"),
            sa.Text(),
            sa.ForeignKey(f"{user}.{uid}", ondelete="CASCADE"),
            nullable=False,
        )

    op.create_table(
        user,
        c("user", "id", sa.Text(), primary_key=True),
        c("user", "name", sa.Text(), nullable=False),
        c("user", "email", sa.Text(), nullable=False),
        c("user", "email_verified", sa.Boolean(), nullable=False),
        c("user", "image", sa.Text()),
        ts("user", "created_at", nullable=False, server_default=now),
        ts("user", "updated_at", nullable=False, server_default=now),
        sa.UniqueConstraint(n.column("user", "email"), name=f"{user}_{n.column('user', 'email')}_key"),
    )
    session = n.table("session")
    op.create_table(
        session,
        c("session", "id", sa.Text(), primary_key=True),
        ts("session", "expires_at", nullable=False),
        c("session", "token", sa.Text(), nullable=False),
        ts("session", "created_at", nullable=False, server_default=now),
        ts("session", "updated_at", nullable=False),
        c("session", "ip_address", sa.Text()),
        c("session", "user_agent", sa.Text()),
        user_fk("session"),
        sa.UniqueConstraint(n.column("session", "token"), name=f"{session}_{n.column('session', 'token')}_key"),
    )
    account = n.table("account")
    op.create_table(
        account,
        c("account", "id", sa.Text(), primary_key=True),
        c("account", "account_id", sa.Text(), nullable=False),
        c("account", "provider_id", sa.Text(), nullable=False),
        user_fk("account"),
        c("account", "access_token", sa.Text()),
        c("account", "refresh_token", sa.Text()),
        c("account", "id_token", sa.Text()),
        ts("account", "access_token_expires_at"),
        ts("account", "refresh_token_expires_at"),
        c("account", "scope", sa.Text()),
        c("account", "password", sa.Text()),
        ts("account", "created_at", nullable=False, server_default=now),
        ts("account", "updated_at", nullable=False),
    )
    verification = n.table("verification")
    op.create_table(
        verification,
        c("verification", "id", sa.Text(), primary_key=True),
        c("verification", "identifier", sa.Text(), nullable=False),
        c("verification", "value", sa.Text(), nullable=False),
        ts("verification", "expires_at", nullable=False),
        ts("verification", "created_at", nullable=False, server_default=now),
        ts("verification", "updated_at", nullable=False, server_default=now),
    )
    for table, columns in (
        ("user", ("created_at",)),
        ("session", ("user_id",)),
        ("session", ("expires_at",)),
        ("account", ("user_id",)),
        ("account", ("provider_id", "account_id")),
        ("verification", ("identifier",)),
        ("verification", ("expires_at",)),
    ):
        physical = [n.column(table, col) for col in columns]
        op.create_index(f"{n.table(table)}_{'_'.join(physical)}_idx", n.table(table), physical)


def downgrade(schema: Schema) -> None:
    """Drop the four tables."""
    n = schema.names
    for table in ("verification", "account", "session", "user"):
        op.drop_table(n.table(table))
