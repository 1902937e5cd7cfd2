"""The SQL schema, built from the field registry (domain/fields.py): Better Auth's four tables as configured
(names, additional fields, id strategy), and authsidecar's own invalidation log.

Columns are keyed by logical field name (``email_verified``); physical names (``"emailVerified"`` or whatever the
configuration says) appear only here, so no query depends on them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from authsidecar.domain.fields import FieldDef, ModelDef, Registry

__all__ = [
    "INVALIDATION_SEQ_TABLE",
    "INVALIDATION_TABLE",
    "OUTBOX_LEASE_TABLE",
    "OUTBOX_SEQ_TABLE",
    "OUTBOX_TABLE",
    "SEEDED",
    "Schema",
    "UTCDateTime",
    "column_type",
]

# authsidecar's own tables (not Better Auth's): the durable log of cache invalidations that every instance
# follows, and the one-row counter that numbers its entries in commit order.
INVALIDATION_TABLE = "authsidecar_invalidation"
INVALIDATION_SEQ_TABLE = "authsidecar_invalidation_seq"
# The transactional outbox of after hooks and events: entries numbered in commit order by their own counter, and
# the lease that lets one instance at a time deliver them.
OUTBOX_TABLE = "authsidecar_outbox"
OUTBOX_SEQ_TABLE = "authsidecar_outbox_seq"
OUTBOX_LEASE_TABLE = "authsidecar_outbox_lease"
# The one row each of these tables must hold (created by migrate, and at start-up if a schema made elsewhere lacks it).
SEEDED: dict[str, dict[str, object]] = {
    INVALIDATION_SEQ_TABLE: {"id": 1, "last_seq": 0},
    OUTBOX_SEQ_TABLE: {"id": 1, "last_seq": 0},
    OUTBOX_LEASE_TABLE: {"id": 1},
}


_NAIVE = ("sqlite", "mysql")  # databases without time zones: naive UTC is stored (MariaDB's dialect is "mysql")


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """``timestamptz`` on Postgres; ``DATETIME(6)`` on MySQL/MariaDB and a text date on SQLite, both holding UTC
    (no time zones there); always read back aware."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        """Microsecond precision on MySQL (its DATETIME drops fractions by default)."""
        if dialect.name == "mysql":
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Require aware datetimes; databases without zones get naive UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name in _NAIVE else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Always return aware UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class utc_now_default(FunctionElement[dt.datetime]):
    """The column default "now": CURRENT_TIMESTAMP, at microsecond precision where the type needs it."""

    type = sa.DateTime()
    inherit_cache = True


@compiles(utc_now_default)
def _now_default(element: Any, compiler: Any, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(utc_now_default, "mysql")
def _now_default_mysql(element: Any, compiler: Any, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP(6)"


class new_uuid_default(FunctionElement[str]):
    """The id column default with ``generate_id = false``: a random UUID made by the database."""

    type = sa.Text()
    inherit_cache = True


@compiles(new_uuid_default, "postgresql")
def _uuid_postgres(element: Any, compiler: Any, **kw: Any) -> str:
    return "gen_random_uuid()"


@compiles(new_uuid_default, "mysql")
def _uuid_mysql(element: Any, compiler: Any, **kw: Any) -> str:
    return "(uuid())"


@compiles(new_uuid_default, "sqlite")
def _uuid_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return (
        "(lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2)"
        " || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-'"
        " || lower(hex(randomblob(6))))"
    )


class IntId(sa.types.TypeDecorator[str]):
    """Integer ids (``generate_id = "serial"``) seen as strings by everything above storage. A string that is
    not a number binds as -1, which matches no row (ids from clients are never trusted to be numeric)."""

    impl = sa.Integer()
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        """str -> int."""
        if value is None:
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            return -1

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        """int -> str."""
        return None if value is None else str(value)


class UuidId(sa.types.TypeDecorator[str]):
    """UUID ids: native ``uuid`` on Postgres (as Better Auth creates them), VARCHAR elsewhere. A string that is not
    a UUID binds as the nil UUID on Postgres, which matches no row, instead of failing the statement."""

    impl = sa.Text()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        """uuid / VARCHAR(255) / TEXT."""
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.UUID(as_uuid=False))
        if dialect.name == "mysql":
            return dialect.type_descriptor(sa.String(255))
        return dialect.type_descriptor(sa.Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        """Malformed ids match nothing."""
        if value is None or dialect.name != "postgresql":
            return value
        try:
            return str(uuid.UUID(str(value)))
        except ValueError:
            return _NIL_UUID


_NIL_UUID = "00000000-0000-0000-0000-000000000000"
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# MySQL cannot index or key TEXT without a length: string columns that are keys or indexed are VARCHAR there.
_KEY_STRING = sa.Text().with_variant(sa.String(255), "mysql")


def column_type(f: FieldDef) -> sa.types.TypeEngine[Any]:
    """The SQL type of a field (Better Auth's mapping: number is an integer, json and arrays are JSON)."""
    if f.type == "string":
        return sa.Text()
    if f.type == "number":
        return sa.BigInteger() if f.bigint else sa.Integer()
    if f.type == "boolean":
        return sa.Boolean()
    if f.type == "date":
        return UTCDateTime()
    return _JSON


def _server_default(f: FieldDef) -> Any:
    if f.db_default == "now":
        return utc_now_default()
    if f.db_default == "false":
        return sa.false()
    return None


def _fit(name: str, limit: int = 63) -> str:
    """A constraint or index name within the databases' identifier limit (63 on Postgres, 64 on MySQL): longer
    ones keep their start and end with a short digest of the whole."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]  # noqa: S324 - a name, not a secret
    return f"{name[: limit - 14]}_{digest}{name[-5:]}"


class Schema:
    """SQLAlchemy ``MetaData`` and ``Table`` objects for the configured models and the invalidation log."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        self.metadata = sa.MetaData()
        self.user = self._table(self.registry.user)
        self.session = self._table(self.registry.session)
        self.account = self._table(self.registry.account)
        self.verification = self._table(self.registry.verification)
        # Tables of enabled plugins, by model name (created by migrate like the core ones).
        self.plugin_tables = {model.name: self._table(model) for model in self.registry.plugin_models}
        now = utc_now_default()
        # The invalidation log: ``seq`` comes from the counter row, whose lock is held until commit, so entries
        # become visible in ``seq`` order with no gaps; ``payload`` is JSON (see storage/invalidations.py).
        self.invalidation = sa.Table(
            INVALIDATION_TABLE,
            self.metadata,
            sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
            sa.Column("createdAt", UTCDateTime(), nullable=False, server_default=now, key="created_at"),
            sa.Column("payload", sa.Text(), nullable=False),
        )
        sa.Index(f"{INVALIDATION_TABLE}_createdAt_idx", self.invalidation.c.created_at)
        self.invalidation_seq = sa.Table(
            INVALIDATION_SEQ_TABLE,
            self.metadata,
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
            sa.Column("lastSeq", sa.BigInteger(), nullable=False, key="last_seq"),
        )
        # The outbox: one row per (event, target), ``seq`` from its counter row (locked until commit, like the
        # invalidation log's), so entries become visible in commit order; delivered rows are deleted.
        self.outbox = sa.Table(
            OUTBOX_TABLE,
            self.metadata,
            sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
            sa.Column("target", _KEY_STRING, nullable=False),
            sa.Column("orderingKey", _KEY_STRING, nullable=False, key="ordering_key"),
            sa.Column("payload", sa.Text(), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
            sa.Column("nextAttemptAt", UTCDateTime(), nullable=False, server_default=now, key="next_attempt_at"),
            sa.Column("createdAt", UTCDateTime(), nullable=False, server_default=now, key="created_at"),
            sa.Column("lastError", sa.Text(), nullable=True, key="last_error"),
            sa.Column("dead", sa.Boolean(), nullable=False, server_default=sa.false()),
        )
        sa.Index(f"{OUTBOX_TABLE}_group_idx", self.outbox.c.target, self.outbox.c.ordering_key, self.outbox.c.seq)
        self.outbox_seq = sa.Table(
            OUTBOX_SEQ_TABLE,
            self.metadata,
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
            sa.Column("lastSeq", sa.BigInteger(), nullable=False, key="last_seq"),
        )
        self.outbox_lease = sa.Table(
            OUTBOX_LEASE_TABLE,
            self.metadata,
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
            sa.Column("holder", sa.Text(), nullable=True),
            sa.Column("leaseUntil", UTCDateTime(), nullable=True, key="lease_until"),
        )

    def _table(self, model: ModelDef) -> sa.Table:
        keyed = {name for index in model.indexes for name in index}
        columns = [self._column(model, f, f.name in keyed) for f in model]
        table = sa.Table(model.table, self.metadata, *columns, info={"default_name": model.name})
        for f in model:
            if f.unique:
                name = _fit(f"{model.table}_{f.column}_key")
                table.append_constraint(sa.UniqueConstraint(table.c[f.name], name=name))
        for fields in model.indexes:
            physical = "_".join(model[name].column for name in fields)
            sa.Index(_fit(f"{model.table}_{physical}_idx"), *(table.c[name] for name in fields))
        return table

    def _column(self, model: ModelDef, f: FieldDef, indexed: bool) -> sa.Column[Any]:
        args: list[Any] = []
        if f.references is not None:
            target_model = self.registry.model(f.references[0])
            target = target_model[f.references[1]]
            args.append(sa.ForeignKey(f"{target_model.table}.{target.column}", ondelete="CASCADE"))
        type_ = column_type(f)
        is_key = f.primary_key or f.references is not None or f.unique or indexed
        if f.type == "string" and is_key:
            type_ = _KEY_STRING
        is_id = f.primary_key or f.references is not None
        server_default = _server_default(f)
        autoincrement = False
        if self.registry.uuid_ids and is_id:
            type_ = UuidId()
            if f.primary_key and self.registry.generate_id == "false":
                server_default = new_uuid_default()
        elif self.registry.generate_id == "serial" and is_id:
            type_ = IntId()
            if f.primary_key:
                args.append(sa.Identity())
                autoincrement = True
        return sa.Column(
            f.column,
            type_,
            *args,
            key=f.name,
            primary_key=f.primary_key,
            nullable=not (f.required and f.default is None) and not f.primary_key,
            server_default=server_default,
            autoincrement=autoincrement,
            info={"default_name": f.key, "builtin": f.builtin},  # Better Auth's name: to recognise a renamed column
        )
