"""The one schema definition: Better Auth's tables, built from a naming object.

Code refers to tables and columns by their *logical* names (snake_case keys such as ``email_verified``);
the physical names (``"emailVerified"``) come from ``SchemaNames`` alone, so a later configuration can rename
tables and columns without touching a query.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = [
    "DEFAULT_COLUMNS",
    "DEFAULT_TABLES",
    "INVALIDATION_SEQ_TABLE",
    "INVALIDATION_TABLE",
    "Schema",
    "SchemaNames",
    "UTCDateTime",
]

# authsidecar's own tables (not Better Auth's): the durable log of cache invalidations that every instance
# follows, and the one-row counter that numbers its entries in commit order.
INVALIDATION_TABLE = "authsidecar_invalidation"
INVALIDATION_SEQ_TABLE = "authsidecar_invalidation_seq"

DEFAULT_TABLES: dict[str, str] = {
    "user": "user",
    "session": "session",
    "account": "account",
    "verification": "verification",
}

DEFAULT_COLUMNS: dict[str, dict[str, str]] = {
    "user": {
        "id": "id",
        "name": "name",
        "email": "email",
        "email_verified": "emailVerified",
        "image": "image",
        "created_at": "createdAt",
        "updated_at": "updatedAt",
    },
    "session": {
        "id": "id",
        "expires_at": "expiresAt",
        "token": "token",
        "created_at": "createdAt",
        "updated_at": "updatedAt",
        "ip_address": "ipAddress",
        "user_agent": "userAgent",
        "user_id": "userId",
    },
    "account": {
        "id": "id",
        "account_id": "accountId",
        "provider_id": "providerId",
        "user_id": "userId",
        "access_token": "accessToken",
        "refresh_token": "refreshToken",
        "id_token": "idToken",
        "access_token_expires_at": "accessTokenExpiresAt",
        "refresh_token_expires_at": "refreshTokenExpiresAt",
        "scope": "scope",
        "password": "password",
        "created_at": "createdAt",
        "updated_at": "updatedAt",
    },
    "verification": {
        "id": "id",
        "identifier": "identifier",
        "value": "value",
        "expires_at": "expiresAt",
        "created_at": "createdAt",
        "updated_at": "updatedAt",
    },
}


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """``timestamptz`` on Postgres; on SQLite (no time zones) values are stored as UTC and read back aware."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Require aware datetimes; SQLite gets naive UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Always return aware UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@dataclass(frozen=True)
class SchemaNames:
    """Physical table and column names, keyed by logical name."""

    tables: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TABLES))
    columns: dict[str, dict[str, str]] = field(
        default_factory=lambda: {table: dict(cols) for table, cols in DEFAULT_COLUMNS.items()}
    )

    def table(self, logical: str) -> str:
        """Physical name of a table."""
        return self.tables[logical]

    def column(self, table: str, logical: str) -> str:
        """Physical name of a column."""
        return self.columns[table][logical]


class Schema:
    """SQLAlchemy ``MetaData`` and ``Table`` objects for the four Better Auth tables."""

    def __init__(self, names: SchemaNames | None = None) -> None:
        self.names = names or SchemaNames()
        self.metadata = sa.MetaData()
        n = self.names
        text, now = sa.Text(), sa.text("CURRENT_TIMESTAMP")

        def col(table: str, logical: str, type_: Any, *args: Any, **kwargs: Any) -> sa.Column[Any]:
            return sa.Column(n.column(table, logical), type_, *args, key=logical, **kwargs)

        def fk_user(table: str) -> sa.Column[Any]:
            return col(
                table,
                "user_id",
                text,
                sa.ForeignKey(f"{n.table('user')}.{n.column('user', 'id')}", ondelete="CASCADE"),
                nullable=False,
            )

        self.user = sa.Table(
            n.table("user"),
            self.metadata,
            col("user", "id", text, primary_key=True),
            col("user", "name", text, nullable=False),
            col("user", "email", text, nullable=False),
            col("user", "email_verified", sa.Boolean(), nullable=False),
            col("user", "image", text),
            col("user", "created_at", UTCDateTime(), nullable=False, server_default=now),
            col("user", "updated_at", UTCDateTime(), nullable=False, server_default=now),
        )
        self.session = sa.Table(
            n.table("session"),
            self.metadata,
            col("session", "id", text, primary_key=True),
            col("session", "expires_at", UTCDateTime(), nullable=False),
            col("session", "token", text, nullable=False),
            col("session", "created_at", UTCDateTime(), nullable=False, server_default=now),
            col("session", "updated_at", UTCDateTime(), nullable=False),
            col("session", "ip_address", text),
            col("session", "user_agent", text),
            fk_user("session"),
        )
        self.account = sa.Table(
            n.table("account"),
            self.metadata,
            col("account", "id", text, primary_key=True),
            col("account", "account_id", text, nullable=False),
            col("account", "provider_id", text, nullable=False),
            fk_user("account"),
            col("account", "access_token", text),
            col("account", "refresh_token", text),
            col("account", "id_token", text),
            col("account", "access_token_expires_at", UTCDateTime()),
            col("account", "refresh_token_expires_at", UTCDateTime()),
            col("account", "scope", text),
            col("account", "password", text),
            col("account", "created_at", UTCDateTime(), nullable=False, server_default=now),
            col("account", "updated_at", UTCDateTime(), nullable=False),
        )
        self.verification = sa.Table(
            n.table("verification"),
            self.metadata,
            col("verification", "id", text, primary_key=True),
            col("verification", "identifier", text, nullable=False),
            col("verification", "value", text, nullable=False),
            col("verification", "expires_at", UTCDateTime(), nullable=False),
            col("verification", "created_at", UTCDateTime(), nullable=False, server_default=now),
            col("verification", "updated_at", UTCDateTime(), nullable=False, server_default=now),
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
            tbl: sa.Table = getattr(self, table)
            physical = "_".join(n.column(table, c) for c in columns)
            sa.Index(f"{n.table(table)}_{physical}_idx", *(tbl.c[c] for c in columns))
        for table, column in (("user", "email"), ("session", "token")):
            tbl = getattr(self, table)
            tbl.append_constraint(
                sa.UniqueConstraint(tbl.c[column], name=f"{n.table(table)}_{n.column(table, column)}_key")
            )
        # The invalidation log: ``seq`` comes from the counter row, whose lock is held until commit, so entries
        # become visible in ``seq`` order with no gaps; ``payload`` is JSON (see storage/invalidations.py).
        self.invalidation = sa.Table(
            INVALIDATION_TABLE,
            self.metadata,
            sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
            sa.Column("createdAt", UTCDateTime(), nullable=False, server_default=now, key="created_at"),
            sa.Column("payload", text, nullable=False),
        )
        sa.Index(f"{INVALIDATION_TABLE}_createdAt_idx", self.invalidation.c.created_at)
        self.invalidation_seq = sa.Table(
            INVALIDATION_SEQ_TABLE,
            self.metadata,
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
            sa.Column("lastSeq", sa.BigInteger(), nullable=False, key="last_seq"),
        )
