"""The unit of work's core, shared by its per-aggregate query groups: the connection and statements it runs on,
statement execution (RETURNING emulated on MySQL, inserts that return the row's id), and what the transaction
made stale or queued (revoked sessions, changed users, outbox entries), written at its end."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from authsidecar.domain.models import Invalidations, OutboxEntry, Session, User, version_of
from authsidecar.storage.direct import DirectStatements, OnDemandConnection
from authsidecar.storage.invalidations import NOTIFY_CHANNEL, encode_payload
from authsidecar.storage.statements import Statements

__all__ = ["UnitOfWorkBase"]


class UnitOfWorkBase:
    """State and helpers of a unit of work (``SqlUnitOfWork`` composes it with the query groups)."""

    def __init__(
        self,
        conn: AsyncConnection | OnDemandConnection,
        statements: Statements,
        autocommit: bool = False,
        direct: DirectStatements | None = None,
    ) -> None:
        self._conn = conn
        self._q = statements
        self._direct = direct  # autocommit on Postgres: the hot statements go to asyncpg directly
        # MySQL has no RETURNING (MariaDB only on DELETE/INSERT): emulated with SELECT ... FOR UPDATE.
        self._emulate_returning = conn.dialect.name == "mysql"
        self._autocommit = autocommit
        self._revoked: dict[str, str] = {}  # stored token -> user id
        self._changed: dict[str, str] = {}  # user id -> version
        self.events: list[OutboxEntry] = []

    def _expect_effects(self) -> None:
        if self._autocommit:
            raise RuntimeError("a write that invalidates cached sessions needs transaction(autocommit=False)")

    def _sessions_gone(self, sessions: list[Session]) -> list[Session]:
        for session in sessions:
            self._revoked[session.stored_token] = session.user_id
        return sessions

    def _user_changed(self, user: User | None) -> User | None:
        if user is not None:
            self._changed[user.id] = version_of(user)
        return user

    def invalidations(self) -> Invalidations:
        """What this transaction made stale so far."""
        return Invalidations(
            tuple((user_id, token) for token, user_id in self._revoked.items()), tuple(self._changed.items())
        )

    async def log_invalidations(self, invalidations: Invalidations) -> int:
        """Append to the invalidation log (last statement before COMMIT: the counter row stays locked only
        until then); returns the entry's sequence number."""
        seq = int((await self._execute(self._q.next_seq, {})).scalar_one())  # the row: seeded, or made at start
        await self._execute(self._q.insert_invalidation, {"seq": seq, "payload": encode_payload(invalidations)})
        if self._conn.dialect.name == "postgresql":
            await self._execute(self._q.notify, {"channel": NOTIFY_CHANNEL, "seq": str(seq)})
        return seq

    def record_event(self, entry: OutboxEntry) -> None:
        """Queue an outbox entry; written at the end of the transaction (``write_events``)."""
        if self._autocommit:
            raise RuntimeError("outbox entries need transaction(autocommit=False)")
        self.events.append(entry)

    async def write_events(self) -> None:
        """Write the queued outbox entries, numbered from the outbox counter (whose row stays locked until COMMIT,
        so entries become visible in commit order)."""
        count = len(self.events)
        last = int((await self._execute(self._q.next_outbox_seq, {"o_count": count})).scalar_one())
        now = datetime.now(UTC)  # due at once by the clock of the instances that deliver (not the database's)
        rows = [
            {"seq": last - count + 1 + i, "target": e.target, "ordering_key": e.key, "payload": e.payload}
            | {"next_attempt_at": now, "created_at": now}
            for i, e in enumerate(self.events)
        ]
        await self._conn.execute(self._q.insert_outbox, rows)

    async def _execute(self, stmt: sa.Executable, params: dict[str, Any]) -> sa.Result[Any]:
        if self._emulate_returning and isinstance(stmt, sa.Update | sa.Delete) and stmt._returning:
            return await self._returning(stmt, params)
        return await self._conn.execute(stmt, params)

    async def _returning(self, stmt: sa.Update | sa.Delete, params: dict[str, Any]) -> sa.Result[Any]:
        """UPDATE/DELETE ... RETURNING where the database has none: lock the rows the statement matches, run it
        without RETURNING, and answer what RETURNING would have (rows after an UPDATE, before a DELETE)."""
        table, where = stmt.table, stmt.whereclause
        assert isinstance(table, sa.Table)
        assert where is not None
        pk = list(table.primary_key.columns)
        returning = list(stmt._returning)
        plain = stmt._generate()
        plain._returning = ()
        if isinstance(stmt, sa.Delete):
            before = (await self._conn.execute(sa.select(*returning).where(where).with_for_update(), params)).freeze()
            await self._conn.execute(plain, params)
            return before()
        keys = (await self._conn.execute(sa.select(*pk).where(where).with_for_update(), params)).all()
        await self._conn.execute(plain, params)
        if not keys:
            return (await self._conn.execute(sa.select(*returning).where(sa.false()))).freeze()()
        return await self._conn.execute(sa.select(*returning).where(pk[0].in_([k[0] for k in keys])))

    async def _insert(self, stmt: sa.Insert, row: dict[str, Any]) -> str:
        """Insert one row; returns its id (the database's own when ``row`` has an empty one)."""
        if row.get("id"):
            await self._conn.execute(stmt, row)
            return str(row["id"])
        row.pop("id", None)
        key = (await self._conn.execute(stmt, row)).inserted_primary_key
        if key is None or key[0] is None:
            raise RuntimeError("the database returned no id: generate_id = false needs INSERT ... RETURNING")
        return str(key[0])
