"""Engine, unit of work and the queries behind the ``Database`` / ``UnitOfWork`` ports (SQLAlchemy Core)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NoReturn

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from authsidecar.domain.models import (
    CREDENTIAL_PROVIDER,
    Account,
    Invalidations,
    OutboxEntry,
    Session,
    SessionWithUser,
    User,
    Verification,
    version_of,
)
from authsidecar.domain.ports import Database, UnitOfWork
from authsidecar.errors import AuthSidecarError, BackendUnavailable
from authsidecar.storage.errors import connection_lost, translate_error
from authsidecar.storage.hot_connection import HotConnection
from authsidecar.storage.invalidations import decode_payload, encode_payload
from authsidecar.storage.raw_statement import RawStatement
from authsidecar.storage.rows import record, values
from authsidecar.storage.schema import SEEDED, Schema
from authsidecar.storage.urls import DatabaseTarget

__all__ = ["NOTIFY_CHANNEL", "CommitListener", "SqlDatabase", "SqlUnitOfWork", "create_database"]

log = logging.getLogger(__name__)

# Postgres: every invalidation log entry is also announced on this channel (delivered at commit), so instances
# that LISTEN learn it within milliseconds instead of at their next poll.
NOTIFY_CHANNEL = "authsidecar_invalidation"

CommitListener = Callable[[Invalidations], Awaitable[None]]


class _Statements:
    """Every statement the repositories run, built once per schema with bind parameters.

    Building a SQLAlchemy statement per call costs more CPU than the round trip it makes; a prebuilt one is
    compiled once and its cache key is memoised.
    """

    def __init__(self, schema: Schema) -> None:
        self.registry = schema.registry
        u, a, s = schema.user, schema.account, schema.session
        self._session, self._account = s, a
        p = sa.bindparam
        self.insert_user = sa.insert(u)
        self.insert_account = sa.insert(a)
        self.insert_session = sa.insert(s)
        self._session_if_credential: dict[tuple[tuple[str, ...], bool], sa.Insert] = {}
        self.account_keys = [c.key for c in a.c]
        self.user_with_credential = (
            # "account.<key>": no user field can be named so (field names are identifiers), so none is shadowed
            sa.select(*u.c, *(c.label(f"account.{c.key}") for c in a.c))
            .select_from(u.outerjoin(a, sa.and_(a.c.user_id == u.c.id, a.c.provider_id == CREDENTIAL_PROVIDER)))
            .where(u.c.email == p("email"))
            .limit(1)
        )
        self.credential_account = (
            sa.select(a).where(a.c.user_id == p("user_id"), a.c.provider_id == CREDENTIAL_PROVIDER).limit(1)
        )
        self.lock_credential = (
            sa.update(a).where(a.c.id == p("a_id"), a.c.password == p("a_password")).values(password=a.c.password)
        )
        self.update_password = (
            sa.update(a).where(a.c.id == p("a_id")).values(password=p("a_password"), updated_at=p("a_now"))
        )
        # A session that ended meanwhile (expired, or ended by another writer setting expiresAt) is not revived.
        self.refresh_session = (
            sa.update(s)
            .where(s.c.token == p("s_token"), s.c.expires_at > p("s_now"))
            .values(expires_at=p("s_expires"), updated_at=p("s_now"))
        )
        returning = list(s.c)
        self.delete_by_token = sa.delete(s).where(s.c.token == p("s_token")).returning(*returning)
        self.delete_by_id = sa.delete(s).where(s.c.id == p("s_id"), s.c.user_id == p("s_user")).returning(*returning)
        self.delete_for_user = sa.delete(s).where(s.c.user_id == p("s_user")).returning(*returning)
        self.delete_for_user_but = (
            sa.delete(s).where(s.c.user_id == p("s_user"), s.c.id != p("s_keep")).returning(*returning)
        )
        self.user_by_id = sa.select(u).where(u.c.id == p("u_id"))
        self.user_by_email = sa.select(u).where(u.c.email == p("u_email"))
        self.mark_verified = (
            sa.update(u)
            .where(u.c.id == p("u_id"), u.c.email == p("u_email"))
            .values(email_verified=True, updated_at=p("u_now"))
            .returning(*u.c)
        )
        self.change_email = (
            sa.update(u)
            .where(u.c.id == p("u_id"), u.c.email == p("u_email"))
            .values(email=p("u_new_email"), email_verified=p("u_verified"), updated_at=p("u_now"))
            .returning(*u.c)
        )
        self.delete_user = sa.delete(u).where(u.c.id == p("u_id")).returning(u.c.id)
        v = schema.verification
        self.insert_verification = sa.insert(v)
        self.consume_verification = (
            sa.delete(v).where(v.c.identifier == p("v_identifier"), v.c.expires_at > p("v_now")).returning(v.c.value)
        )
        self.verification_exists = sa.select(v.c.id).where(v.c.identifier == p("v_identifier")).limit(1)
        self.verification_table = v
        self.user_table = u
        log, seq = schema.invalidation, schema.invalidation_seq
        self.next_seq = (
            sa.update(seq).where(seq.c.id == 1).values(last_seq=seq.c.last_seq + 1).returning(seq.c.last_seq)
        )
        self.insert_invalidation = sa.insert(log)
        self.last_seq = sa.select(seq.c.last_seq).where(seq.c.id == 1)
        self.notify = sa.select(sa.func.pg_notify(p("channel"), p("seq")))
        self.invalidations_after = (
            sa.select(log.c.seq, log.c.payload).where(log.c.seq > p("l_after")).order_by(log.c.seq).limit(p("l_limit"))
        )
        self.invalidations_since = (
            sa.select(log.c.seq, log.c.payload)
            .where(log.c.created_at > p("l_since"), log.c.seq <= p("l_upto"))
            .order_by(log.c.seq)
        )
        ob, ob_seq = schema.outbox, schema.outbox_seq
        self.next_outbox_seq = (
            sa.update(ob_seq)
            .where(ob_seq.c.id == 1)
            .values(last_seq=ob_seq.c.last_seq + p("o_count"))
            .returning(ob_seq.c.last_seq)
        )
        self.insert_outbox = sa.insert(ob)
        self.session_by_token = sa.select(s).where(s.c.token == p("s_token"))
        # Batched removals of old rows, by the column that says how old they are.
        self.aged = {"session": s.c.expires_at, "verification": v.c.expires_at, "invalidation": log.c.created_at}
        self.list_sessions = (
            sa.select(s)
            .where(s.c.user_id == p("s_user"), s.c.expires_at > p("s_now"))
            .order_by(s.c.created_at.desc(), s.c.id)
        )

    def session_if_credential(self, keys: tuple[str, ...], returning_id: bool) -> sa.Insert:
        """INSERT INTO session (keys) SELECT :v0, :v1, ... FROM account WHERE id = :a_id AND password = :a_password
        FOR UPDATE: the session row exists only if the credential still has that hash, and the account row stays
        locked until commit (SQLite has no FOR UPDATE: its writes are serialised whole). Built once per column set."""
        stmt = self._session_if_credential.get((keys, returning_id))
        if stmt is None:
            s, a = self._session, self._account
            p = sa.bindparam
            select = (
                sa.select(*(p(f"v{i}", type_=s.c[key].type) for i, key in enumerate(keys)))
                .where(a.c.id == p("a_id"), a.c.password == p("a_password"))
                .with_for_update()
            )
            stmt = sa.insert(s).from_select(list(keys), select)
            if returning_id:
                stmt = stmt.returning(s.c.id)
            self._session_if_credential[(keys, returning_id)] = stmt
        return stmt


class _DirectStatements:
    """Postgres: the hot statements compiled once for asyncpg (storage/raw_statement.py) and run outside any
    transaction (each commits on its own), on the hot connection when it is free, else on a pooled connection's
    driver connection."""

    def __init__(
        self, statements: _Statements, find_session: sa.Select[Any], engine: AsyncEngine, hot: HotConnection | None
    ) -> None:
        self._statements = statements
        self._dialect = engine.dialect
        self._engine = engine  # AUTOCOMMIT
        self._hot = hot
        self.find_session = RawStatement(find_session, self._dialect)
        self.user_with_credential = RawStatement(statements.user_with_credential, self._dialect)
        self._session_if_credential: dict[tuple[str, ...], RawStatement] = {}

    def session_if_credential(self, keys: tuple[str, ...]) -> RawStatement:
        """The credential-checked session insert for this column set, RETURNING the session's id."""
        stmt = self._session_if_credential.get(keys)
        if stmt is None:
            stmt = RawStatement(self._statements.session_if_credential(keys, True), self._dialect)
            self._session_if_credential[keys] = stmt
        return stmt

    async def run(self, stmt: RawStatement, params: Mapping[str, Any], write: bool = False) -> list[Any]:
        """The statement's raw rows; driver errors leave as domain errors. A ``write`` that failed is not tried
        again elsewhere (it may have been applied)."""
        args = stmt.args(params)
        if self._hot is not None:
            try:
                rows = await self._hot.fetch(stmt.sql, *args, write=write)
            except Exception as exc:
                _raise_translated(exc)
            if rows is not None:
                return rows
        return await self._pooled(stmt.sql, args)

    async def _pooled(self, sql: str, args: list[Any]) -> list[Any]:
        try:
            async with self._engine.connect() as conn:
                raw: Any = (await conn.get_raw_connection()).driver_connection
                try:
                    return list(await raw.fetch(sql, *args))
                except BaseException as exc:
                    # SQLAlchemy did not run this statement, so it cannot tell a dead connection: unless the server
                    # answered an error about the query itself, it must not go back to the pool.
                    if connection_lost(exc) or not isinstance(exc, asyncpg.PostgresError):
                        await conn.invalidate()
                    raise
        except Exception as exc:
            _raise_translated(exc)


class _OnDemandConnection:
    """An autocommit connection taken from the pool at its first statement: a block whose statements all run
    directly (_DirectStatements) never checks one out."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.dialect = engine.dialect
        self._engine = engine  # AUTOCOMMIT
        self._conn: AsyncConnection | None = None

    async def execute(self, statement: sa.Executable, parameters: Any = None) -> sa.CursorResult[Any]:
        """As AsyncConnection.execute."""
        if self._conn is None:
            self._conn = await self._engine.connect()
        return await self._conn.execute(statement, parameters)

    async def close(self) -> None:
        """Give the connection back, if one was taken."""
        if self._conn is not None:
            await self._conn.close()


class SqlUnitOfWork:
    """UnitOfWork over one SQLAlchemy connection inside an open transaction. Never commits by itself.

    Every write that makes a cached snapshot stale records it here (deleted sessions, changed users); the
    transaction logs those invalidations in the same commit and hands them to the commit listener after it.
    Such writes need a real transaction: in autocommit mode they raise before touching anything.
    """

    def __init__(
        self,
        conn: AsyncConnection | _OnDemandConnection,
        statements: _Statements,
        autocommit: bool = False,
        direct: _DirectStatements | None = None,
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

    async def insert_user(self, user: User) -> User:
        """Insert a user row; returns it with its id."""
        return replace(user, id=await self._insert(self._q.insert_user, values(self._q.registry.user, user)))

    async def get_user_with_credential(self, email: str) -> tuple[User, Account | None] | None:
        """The user with that email and their credential account, in one round trip (LEFT JOIN)."""
        m: Mapping[Any, Any]
        if self._direct is not None:
            stmt = self._direct.user_with_credential
            rows = await self._direct.run(stmt, {"email": email})
            if not rows:
                return None
            m = stmt.mapping(rows[0])
        else:
            row = (await self._execute(self._q.user_with_credential, {"email": email})).first()
            if row is None:
                return None
            m = row._mapping
        user = record(User, self._q.registry.user, m)
        if m["account.id"] is None:  # no credential account (LEFT JOIN)
            return user, None
        return user, record(
            Account, self._q.registry.account, {key: m[f"account.{key}"] for key in self._q.account_keys}
        )

    async def _one_user(self, stmt: sa.Executable, params: dict[str, Any]) -> User | None:
        row = (await self._execute(stmt, params)).first()
        return record(User, self._q.registry.user, row._mapping) if row else None

    async def get_user_by_id(self, user_id: str) -> User | None:
        """The user with that id."""
        return await self._one_user(self._q.user_by_id, {"u_id": user_id})

    async def get_user_by_email(self, email: str) -> User | None:
        """The user with that email."""
        return await self._one_user(self._q.user_by_email, {"u_email": email})

    async def list_users(
        self, limit: int, after: tuple[datetime, str] | None = None, email_prefix: str = ""
    ) -> list[User]:
        """A page of users in (createdAt, id) order (the seeded createdAt index serves it)."""
        u = self._q.user_table
        stmt = sa.select(u)
        if email_prefix:
            stmt = stmt.where(u.c.email.startswith(email_prefix, autoescape=True))
        if after is not None:
            created, last_id = after
            stmt = stmt.where(sa.or_(u.c.created_at > created, sa.and_(u.c.created_at == created, u.c.id > last_id)))
        result = await self._execute(stmt.order_by(u.c.created_at, u.c.id).limit(limit), {})
        return [record(User, self._q.registry.user, row._mapping) for row in result]

    async def mark_email_verified(self, user_id: str, email: str, now: datetime) -> User | None:
        """Set emailVerified if the user still has that email."""
        self._expect_effects()
        params = {"u_id": user_id, "u_email": email, "u_now": now}
        return self._user_changed(await self._one_user(self._q.mark_verified, params))

    async def change_email(
        self, user_id: str, old_email: str, new_email: str, now: datetime, verified: bool = True
    ) -> User | None:
        """Replace the email (and set emailVerified) if it is still ``old_email``."""
        self._expect_effects()
        params = {"u_id": user_id, "u_email": old_email, "u_new_email": new_email, "u_now": now, "u_verified": verified}
        return self._user_changed(await self._one_user(self._q.change_email, params))

    async def update_user(self, user_id: str, changes: dict[str, Any], now: datetime) -> User | None:
        """Set the given profile fields."""
        self._expect_effects()
        u = self._q.user_table
        stmt = sa.update(u).where(u.c.id == user_id).values(**changes, updated_at=now).returning(*u.c)
        return self._user_changed(await self._one_user(stmt, {}))

    async def delete_user(self, user_id: str) -> bool:
        """Delete the user, its sessions first (so they are logged as revoked); accounts cascade."""
        await self.delete_user_sessions(user_id)
        return (await self._execute(self._q.delete_user, {"u_id": user_id})).first() is not None

    async def insert_verification(self, verification: Verification) -> str:
        """Insert a verification row; returns its id."""
        return await self._insert(self._q.insert_verification, values(self._q.registry.verification, verification))

    async def consume_verification(self, identifier: str, now: datetime) -> str | None:
        """One DELETE ... RETURNING: two concurrent consumers cannot both get the value."""
        row = (await self._execute(self._q.consume_verification, {"v_identifier": identifier, "v_now": now})).first()
        return str(row[0]) if row else None

    async def verification_exists(self, identifier: str) -> bool:
        """Whether the identifier is present (expired or not)."""
        return (await self._execute(self._q.verification_exists, {"v_identifier": identifier})).first() is not None

    async def delete_user_verifications(self, user_id: str, purposes: tuple[str, ...] = ()) -> int:
        """Payloads start with {"userId":"<id>", (the services write them so), or are the bare user id (Better
        Auth's reset-password rows); ``purposes``: only identifiers "<purpose>:..." of those."""
        head = '{"userId":' + json.dumps(user_id)
        v = self._q.verification_table
        mine = sa.or_(v.c.value == head + "}", v.c.value.startswith(head + ",", autoescape=True), v.c.value == user_id)
        if purposes:
            mine = sa.and_(mine, sa.or_(*(v.c.identifier.startswith(f"{p}:", autoescape=True) for p in purposes)))
        return (await self._conn.execute(sa.delete(v).where(mine))).rowcount

    async def _delete_batch(self, name: str, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` rows of ``name`` older than ``before``."""
        column = self._q.aged[name]
        table = column.table
        if self._emulate_returning:  # MySQL: no LIMIT inside an IN subquery, but DELETE ... LIMIT
            stmt = sa.delete(table).where(column < before).with_dialect_options(mysql_limit=limit)
        else:
            pk = next(iter(table.primary_key))
            oldest = sa.select(pk).where(column < before).limit(limit).scalar_subquery()
            stmt = sa.delete(table).where(pk.in_(oldest))
        return (await self._conn.execute(stmt)).rowcount

    async def delete_expired(self, table: str, now: datetime, limit: int) -> int:
        """One batch of expired rows."""
        return await self._delete_batch(table, now, limit)

    async def delete_old_invalidations(self, before: datetime, limit: int) -> int:
        """One batch of invalidation log entries written before ``before``."""
        return await self._delete_batch("invalidation", before, limit)

    async def insert_account(self, account: Account) -> str:
        """Insert an account row; returns its id."""
        return await self._insert(self._q.insert_account, values(self._q.registry.account, account))

    async def get_credential_account(self, user_id: str) -> Account | None:
        """The user's email/password account."""
        row = (await self._execute(self._q.credential_account, {"user_id": user_id})).first()
        return record(Account, self._q.registry.account, row._mapping) if row else None

    async def lock_credential(self, account_id: str, password_hash: str) -> bool:
        """A no-op UPDATE of the account, conditional on its hash: it takes the row lock (Postgres, MySQL) or the
        write lock (SQLite, where a SELECT would not even begin the transaction) until commit."""
        params = {"a_id": account_id, "a_password": password_hash}
        return (await self._conn.execute(self._q.lock_credential, params)).rowcount > 0

    async def update_account_password(self, account: Account, password_hash: str, now: datetime) -> None:
        """Replace an account's password hash."""
        await self._execute(self._q.update_password, {"a_id": account.id, "a_password": password_hash, "a_now": now})

    async def insert_session(self, session: Session) -> Session:
        """Insert a session row; returns it with its id."""
        return replace(
            session, id=await self._insert(self._q.insert_session, values(self._q.registry.session, session))
        )

    async def insert_session_if_credential(
        self, account_id: str, password_hash: str, session: Session
    ) -> Session | None:
        """Insert the session in the statement that locks the credential account and checks its hash: one round
        trip, atomic without a transaction; None when the hash changed."""
        row = values(self._q.registry.session, session)
        generated = not row.get("id")
        if generated:  # an empty id: the database makes it
            row.pop("id", None)
        keys = tuple(row)
        params = {f"v{i}": row[key] for i, key in enumerate(keys)} | {"a_id": account_id, "a_password": password_hash}
        if self._direct is not None:
            stmt = self._direct.session_if_credential(keys)
            rows = await self._direct.run(stmt, params, write=True)
            if not rows:
                return None
            return replace(session, id=str(stmt.values(rows[0])[0])) if generated else session
        returning = generated and self._conn.dialect.insert_returning
        result = await self._conn.execute(self._q.session_if_credential(keys, returning), params)
        if not generated:
            return session if result.rowcount > 0 else None
        made = result.scalar_one_or_none() if returning else (result.lastrowid if result.rowcount > 0 else None)
        return None if made is None else replace(session, id=str(made))

    async def refresh_session(self, session: Session, expires_at: datetime, now: datetime) -> bool:
        """Extend a session; False when it no longer exists."""
        params = {"s_token": session.stored_token, "s_expires": expires_at, "s_now": now}
        return (await self._conn.execute(self._q.refresh_session, params)).rowcount > 0

    async def get_session(self, stored_token: str) -> Session | None:
        """The session with that stored token."""
        row = (await self._execute(self._q.session_by_token, {"s_token": stored_token})).first()
        return record(Session, self._q.registry.session, row._mapping) if row else None

    async def _delete_sessions(self, stmt: sa.Executable, params: dict[str, Any]) -> list[Session]:
        self._expect_effects()
        model = self._q.registry.session
        return self._sessions_gone([record(Session, model, row._mapping) for row in await self._execute(stmt, params)])

    async def delete_session_by_token(self, stored_token: str) -> Session | None:
        """Delete one session by token."""
        deleted = await self._delete_sessions(self._q.delete_by_token, {"s_token": stored_token})
        return deleted[0] if deleted else None

    async def delete_session_by_id(self, user_id: str, session_id: str) -> Session | None:
        """Delete one of the user's sessions by id."""
        deleted = await self._delete_sessions(self._q.delete_by_id, {"s_id": session_id, "s_user": user_id})
        return deleted[0] if deleted else None

    async def delete_user_sessions(self, user_id: str, except_session_id: str | None = None) -> list[Session]:
        """Delete the user's sessions, optionally sparing one."""
        if except_session_id is None:
            return await self._delete_sessions(self._q.delete_for_user, {"s_user": user_id})
        params = {"s_user": user_id, "s_keep": except_session_id}
        return await self._delete_sessions(self._q.delete_for_user_but, params)

    async def list_user_sessions(self, user_id: str, now: datetime) -> list[Session]:
        """The user's unexpired sessions, newest first."""
        result = await self._execute(self._q.list_sessions, {"s_user": user_id, "s_now": now})
        return [record(Session, self._q.registry.session, row._mapping) for row in result]


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
        self._statements = _Statements(schema)
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
        # On Postgres it goes to asyncpg directly, as do sign-in's statements (_DirectStatements).
        self._direct: _DirectStatements | None = None
        if engine.dialect.name == "postgresql":
            self._direct = _DirectStatements(self._statements, self._find_session, self._autocommit, hot)

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
            _raise_translated(exc)
        if events:
            for wake in self._outbox_listeners:
                wake()
        if invalidations:
            # Committed: the listeners (cache coherence) run even if the caller is cancelled meanwhile.
            await asyncio.shield(self._notify(invalidations))

    @asynccontextmanager
    async def _connection(self, autocommit: bool) -> AsyncIterator[AsyncConnection | _OnDemandConnection]:
        if not autocommit or self._direct is None:
            async with (self._autocommit if autocommit else self.engine).begin() as conn:
                yield conn
            return
        on_demand = _OnDemandConnection(self._autocommit)
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
            _raise_translated(exc)

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
            _raise_translated(exc)

    async def _read(self, stmt: sa.Executable, params: dict[str, Any]) -> list[Any]:
        """One statement outside any transaction; every row."""
        try:
            async with self._autocommit.connect() as conn:
                return list(await conn.execute(stmt, params))
        except Exception as exc:
            _raise_translated(exc)

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


def _raise_translated(exc: Exception) -> NoReturn:
    """Re-raise a driver error as its domain error (the one translation point), or as it is when unknown."""
    translated = translate_error(exc)
    if translated is None:
        raise exc
    raise translated from exc


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
