"""The store of record: engine, transactions and connections behind the ``Database`` port (SQLAlchemy Core), the
invalidation log's read side and the hot path's cache-miss query. The unit of work is in unit_of_work/, the
statements it runs in statements.py, Postgres's direct asyncpg path in direct.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from authsidecar.domain.models import Invalidations, Session, SessionWithUser, User
from authsidecar.domain.ports import Database, UnitOfWork
from authsidecar.errors import AuthSidecarError, BackendUnavailable
from authsidecar.storage.direct import DirectStatements, OnDemandConnection
from authsidecar.storage.errors import raise_translated
from authsidecar.storage.hot_connection import HotConnection
from authsidecar.storage.invalidations import NOTIFY_CHANNEL, decode_payload
from authsidecar.storage.rows import record
from authsidecar.storage.schema import SEEDED, Schema
from authsidecar.storage.statements import Statements
from authsidecar.storage.unit_of_work import SqlUnitOfWork
from authsidecar.storage.urls import DatabaseTarget

__all__ = ["NOTIFY_CHANNEL", "CommitListener", "SqlDatabase", "SqlUnitOfWork", "create_database"]

log = logging.getLogger(__name__)

CommitListener = Callable[[Invalidations], Awaitable[None]]


class SqlDatabase:
    """The store of record over an AsyncEngine (asyncpg for Postgres, aiomysql for MySQL/MariaDB, aiosqlite for
    the embedded default)."""

    def __init__(self, engine: AsyncEngine, schema: Schema, hot: HotConnection | None = None) -> None:
        self.engine = engine
        self._hot = hot  # Postgres: a connection out of the pool for the hot statements (storage/hot_connection.py)
        self._listeners: list[CommitListener] = []
        self._outbox_listeners: list[Callable[[], None]] = []
        # Single statements need no explicit transaction: no BEGIN/COMMIT round trips around them.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.schema = schema
        self._statements = Statements(schema)
        # What snapshots read here are stamped with (Unix seconds): the database's clock once the app wires in the
        # coherence's estimate of it (services/clock.py DatabaseClock).
        self.stamp: Callable[[], float] = time.time
        self._clock_sql = sa.text(
            {
                "postgresql": "SELECT extract(epoch FROM clock_timestamp())::float8",
                "mysql": "SELECT UNIX_TIMESTAMP(NOW(6))",
            }.get(engine.dialect.name, "SELECT (julianday('now') - 2440587.5) * 86400.0")
        )
        s, u = schema.session, schema.user
        # The hot path's cache-miss query, built once: session JOIN user by token, one round trip.
        self._session_keys = [c.key for c in s.c]
        self._user_keys = [c.key for c in u.c]
        self._find_session = (
            sa.select(*s.c, *u.c)
            .select_from(s.join(u, s.c.user_id == u.c.id))
            .where(s.c.token == sa.bindparam("token"))
        )
        # On Postgres it goes to asyncpg directly, as do sign-in's statements (DirectStatements).
        self._direct: DirectStatements | None = None
        if engine.dialect.name == "postgresql":
            self._direct = DirectStatements(self._statements, self._find_session, self._autocommit, hot)

    @asynccontextmanager
    async def transaction(self, autocommit: bool = False) -> AsyncIterator[UnitOfWork]:
        """One transaction; driver errors leave as domain errors, nothing half-written.

        ``autocommit``: each statement commits on its own, with no BEGIN/COMMIT round trips; for a block of
        ONE write, or of reads that need no common snapshot.
        """
        invalidations = Invalidations()
        events = False
        try:
            async with self._connection(autocommit) as conn:
                uow = SqlUnitOfWork(conn, self._statements, autocommit, self._direct if autocommit else None)
                yield uow
                if uow.events:
                    await uow.write_events()
                    events = True
                invalidations = uow.invalidations()
                if invalidations:
                    invalidations = replace(invalidations, seq=await uow.log_invalidations(invalidations))
        except AuthSidecarError:
            raise
        except Exception as exc:
            raise_translated(exc)
        if events:
            for wake in self._outbox_listeners:
                wake()
        if invalidations:
            # Committed: the listeners (cache coherence) run even if the caller is cancelled meanwhile.
            await asyncio.shield(self._notify(invalidations))

    @asynccontextmanager
    async def _connection(self, autocommit: bool) -> AsyncIterator[AsyncConnection | OnDemandConnection]:
        if not autocommit or self._direct is None:
            async with (self._autocommit if autocommit else self.engine).begin() as conn:
                yield conn
            return
        on_demand = OnDemandConnection(self._autocommit)
        try:
            yield on_demand
        finally:
            await on_demand.close()

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Call ``listener`` after every commit that invalidated cached snapshots, in this process."""
        self._listeners.append(listener)

    def add_outbox_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every commit of this process that wrote outbox entries."""
        self._outbox_listeners.append(listener)

    async def _notify(self, invalidations: Invalidations) -> None:
        for listener in self._listeners:
            await listener(invalidations)

    @asynccontextmanager
    async def autocommit_connection(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection whose statements commit one by one; driver errors leave as domain errors."""
        try:
            async with self._autocommit.connect() as conn:
                yield conn
        except AuthSidecarError:
            raise
        except Exception as exc:
            raise_translated(exc)

    @asynccontextmanager
    async def transaction_connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction (committed when the block exits cleanly), for statements on tables the
        unit of work does not know (plugins' own); driver errors leave as domain errors."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except AuthSidecarError:
            raise
        except Exception as exc:
            raise_translated(exc)

    async def _read(self, stmt: sa.Executable, params: dict[str, Any]) -> list[Any]:
        """One statement outside any transaction; every row."""
        try:
            async with self._autocommit.connect() as conn:
                return list(await conn.execute(stmt, params))
        except Exception as exc:
            raise_translated(exc)

    async def listen_for_invalidations(self, wake: Callable[[], None], retry_after: float = 1.0) -> None:
        """Call ``wake`` whenever another instance logs an invalidation, until cancelled (Postgres LISTEN on one
        pooled connection, re-established after a failure). Elsewhere there is nothing to listen to: returns."""
        if self.engine.dialect.name != "postgresql":
            return
        while True:
            try:
                await self._listen_once(wake)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dead pooled connection after a restart, the server gone, ...: again later
                log.info("LISTEN connection lost (%s); polling meanwhile", type(exc).__name__)
            await asyncio.sleep(retry_after)

    async def _listen_once(self, wake: Callable[[], None]) -> None:
        """LISTEN on one pooled connection until it is lost."""
        async with self.engine.connect() as conn:
            raw: Any = (await conn.get_raw_connection()).driver_connection
            lost = asyncio.Event()
            raw.add_termination_listener(lambda *_: lost.set())
            await raw.add_listener(NOTIFY_CHANNEL, lambda *_: wake())
            wake()  # whatever was logged before LISTEN took effect is read now
            await lost.wait()

    async def ensure_invalidation_counter(self) -> None:
        """Create the rows of the counters (invalidation log, outbox) and of the outbox lease if a schema made
        elsewhere (drizzle-kit, by hand) lacks them."""
        for table in (self.schema.invalidation_seq, self.schema.outbox_seq, self.schema.outbox_lease):
            row = SEEDED[table.name]
            missing = sa.insert(table).from_select(
                list(row), sa.select(*(sa.literal(v) for v in row.values())).where(~sa.exists().where(table.c.id == 1))
            )
            try:
                async with self._autocommit.connect() as conn:
                    await conn.execute(missing)
            except sa.exc.IntegrityError:
                pass  # another instance created it at the same moment

    async def database_time(self) -> float:
        """The database server's wall clock now (Unix seconds; SQLite's is this machine's)."""
        rows = await self._read(self._clock_sql, {})
        return float(rows[0][0])

    async def invalidation_cursor(self) -> int:
        """The sequence number of the last committed invalidation log entry (0: none yet)."""
        rows = await self._read(self._statements.last_seq, {})
        return int(rows[0][0]) if rows else 0

    async def invalidations_after(self, seq: int, limit: int) -> list[tuple[int, Invalidations]]:
        """Up to ``limit`` log entries after ``seq``, in order."""
        rows = await self._read(self._statements.invalidations_after, {"l_after": seq, "l_limit": limit})
        return [(int(row[0]), decode_payload(row[1], int(row[0]))) for row in rows]

    async def invalidations_since(self, since: datetime, upto: int) -> list[tuple[int, Invalidations]]:
        """Log entries written after ``since`` with a sequence number up to ``upto``, in order."""
        rows = await self._read(self._statements.invalidations_since, {"l_since": since, "l_upto": upto})
        return [(int(row[0]), decode_payload(row[1], int(row[0]))) for row in rows]

    async def find_session(self, stored_token: str) -> SessionWithUser | None:
        """Session joined with its user, by stored token; ``checked_at`` is taken before the query."""
        checked_at = self.stamp()
        if self._direct is not None:
            stmt = self._direct.find_session
            rows = [stmt.values(r) for r in await self._direct.run(stmt, {"token": stored_token})]
        else:
            rows = await self._read(self._find_session, {"token": stored_token})
        if not rows:
            return None
        row = rows[0]
        n = len(self._session_keys)
        registry = self.schema.registry
        session = record(Session, registry.session, dict(zip(self._session_keys, row[:n], strict=True)))
        user = record(User, registry.user, dict(zip(self._user_keys, row[n:], strict=True)))
        return SessionWithUser(session, user, checked_at)

    async def ping(self, within: float = 2.0) -> None:
        """SELECT 1, or BackendUnavailable."""
        try:
            async with asyncio.timeout(within), self._autocommit.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception as exc:
            raise BackendUnavailable() from exc

    async def close(self) -> None:
        """Close the hot-path connection and dispose of the pool."""
        if self._hot is not None:
            await self._hot.close()
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    for pragma in ("foreign_keys=ON", "journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def create_database(
    target: DatabaseTarget,
    schema: Schema,
    pool_size: int = 4,
    max_overflow: int = 1,
    connect_timeout: float = 5.0,
    pool_recycle: int = 1800,
) -> SqlDatabase:
    """Build the engine for a resolved target (no connection is opened yet)."""
    connect_args = dict(target.connect_args)
    hot = False
    if target.is_sqlite:
        engine = create_async_engine(target.url, connect_args={"timeout": 5.0, **connect_args}, hide_parameters=True)
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        if target.is_mysql:
            connect_args.setdefault("connect_timeout", max(1, round(connect_timeout)))
            # Dates are stored as naive UTC: CURRENT_TIMESTAMP defaults must be UTC too, whatever the server's zone.
            connect_args.setdefault("init_command", "SET time_zone = '+00:00'")
        else:
            connect_args.setdefault("timeout", connect_timeout)
            connect_args.setdefault("command_timeout", 30)
            # A connection that stalls inside a transaction must not hold row locks (the invalidation log's
            # counter) for long: Postgres ends such sessions, and lock waits give up instead of queueing forever.
            connect_args.setdefault(
                "server_settings", {"idle_in_transaction_session_timeout": "15000", "lock_timeout": "10000"}
            )
        # Postgres: one of the pool_size connections is kept out of the pool for the hot path's cache miss.
        # (only when the pool keeps a connection for work besides the one LISTENing for invalidations)
        hot = not target.is_mysql and pool_size >= 2 and pool_size + max_overflow >= 3
        engine = create_async_engine(
            target.url,
            connect_args=connect_args,
            pool_size=pool_size - 1 if hot else pool_size,
            max_overflow=max_overflow,
            pool_recycle=pool_recycle,
            pool_timeout=connect_timeout,
            hide_parameters=True,  # bound values (password hashes, token digests) never reach a log line
        )
    db = SqlDatabase(engine, schema, HotConnection(engine, connect_args.get("command_timeout", 30)) if hot else None)
    _check: Database = db
    return db
