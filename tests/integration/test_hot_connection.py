"""The connection kept out of the pool for the hot statements (Postgres): used when free, replaced after a
failure, never more connections than the pool's bound, and a write on it is never run a second time."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from authsidecar.domain.fields import Registry
from authsidecar.domain.models import CREDENTIAL_PROVIDER, Account, Extra, Session, User
from authsidecar.errors import BackendUnavailable, Conflict
from authsidecar.schema_config import SchemaSettings
from authsidecar.storage.database import SqlDatabase, create_database
from authsidecar.storage.schema import Schema
from authsidecar.storage.urls import resolve_database_url
from tests.conftest import create_pg_database, drop_pg_database, migrate

pytestmark = pytest.mark.postgres


@pytest.fixture
async def database() -> AsyncIterator[tuple[SqlDatabase, str]]:
    url = create_pg_database("authsidecar_hot")
    migrate(url)
    db = create_database(resolve_database_url(url, ""), Schema(Registry()), pool_size=4, max_overflow=1)
    try:
        yield db, url
    finally:
        await db.close()
        drop_pg_database(url)


async def _session(db: SqlDatabase) -> str:
    now = datetime.now(UTC)
    user = User(secrets.token_hex(16), "Hot", f"hot-{secrets.token_hex(4)}@example.com", False, None, now, now)
    stored = hashlib.sha256(secrets.token_bytes(16)).hexdigest()
    session = Session(secrets.token_hex(16), user.id, stored, now + timedelta(days=1), now, now, None, None)
    async with db.transaction() as tx:
        await tx.insert_user(user)
        await tx.insert_session(session)
    return stored


async def _connections(url: str) -> int:
    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(url.rsplit("/", 1)[0] + "/postgres")
    try:
        return int(await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name))
    finally:
        await admin.close()


async def test_misses_stay_within_the_pool_bound_and_survive_a_killed_connection(
    database: tuple[SqlDatabase, str],
) -> None:
    db, url = database
    stored = await _session(db)
    for _ in range(300):
        found = await db.find_session(stored)
        assert found is not None and found.session.stored_token == stored
    # the busy case goes through the pool: many misses at once
    results = await asyncio.gather(*(db.find_session(stored) for _ in range(50)))
    assert all(r is not None for r in results)
    assert await _connections(url) <= 5  # pool_size + max_overflow: the hot connection is one of the pool's

    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(url.rsplit("/", 1)[0] + "/postgres")
    try:  # every connection of the database dies (a restart, a failover): answers go on, from the pool
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await admin.close()
    outcomes = []
    for _ in range(20):
        try:
            outcomes.append("ok" if await db.find_session(stored) is not None else "none")
        except Exception as exc:  # the pool's own dead connections may fail a call each, as before
            outcomes.append(type(exc).__name__)
        await asyncio.sleep(0.1)
    # each dead connection fails at most one call, as UNAVAILABLE (retry), then leaves the pool for good
    assert outcomes.count("ok") >= 15 and outcomes[-10:] == ["ok"] * 10, outcomes
    assert set(outcomes) <= {"ok", "BackendUnavailable"}, outcomes
    assert await db.find_session(stored) is not None
    assert await _connections(url) <= 5


def test_the_hot_connection_is_one_of_the_pools_and_only_when_work_connections_remain() -> None:
    """It is taken from the pool's size, and only when a connection besides the LISTEN one is left for work."""
    target = resolve_database_url("postgresql://postgres@127.0.0.1:5432/postgres", "")
    schema = Schema(Registry())
    assert create_database(target, schema, pool_size=4, max_overflow=1)._hot is not None
    assert create_database(target, schema, pool_size=4, max_overflow=1).engine.sync_engine.pool.size() == 3
    assert create_database(target, schema, pool_size=2, max_overflow=1)._hot is not None
    assert create_database(target, schema, pool_size=2, max_overflow=0)._hot is None  # LISTEN + 1 for work
    assert create_database(target, schema, pool_size=2, max_overflow=0).engine.sync_engine.pool.size() == 2
    assert create_database(target, schema, pool_size=1, max_overflow=5)._hot is None


async def _credential(db: SqlDatabase) -> tuple[User, Account]:
    now = datetime.now(UTC)
    user = User(secrets.token_hex(16), "Hot", f"hot-{secrets.token_hex(4)}@example.com", False, None, now, now)
    account = Account(secrets.token_hex(16), user.id, CREDENTIAL_PROVIDER, user.id, "$argon2id$v=19$hash", now, now)
    async with db.transaction() as tx:
        await tx.insert_user(user)
        await tx.insert_account(account)
    return user, account


def _new_session(user: User) -> Session:
    now = datetime.now(UTC)
    stored = hashlib.sha256(secrets.token_bytes(16)).hexdigest()
    return Session(secrets.token_hex(16), user.id, stored, now + timedelta(days=1), now, now, "10.0.0.1", "ua")


async def _hot_connection_open(db: SqlDatabase) -> None:
    await db.find_session("no-such-token")  # opens it in the background
    for _ in range(50):
        if db._hot is not None and db._hot._conn is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the hot connection did not open")


async def test_sign_in_statements_go_to_the_driver_and_read_back_as_through_sqlalchemy(
    database: tuple[SqlDatabase, str],
) -> None:
    """A sign-in's credential read and session insert (autocommit) run on the hot connection: no connection is
    checked out of the pool for them, and their values are what the SQLAlchemy path returns and writes."""
    db, _ = database
    user, account = await _credential(db)
    await _hot_connection_open(db)
    pool: Any = db.engine.sync_engine.pool
    session = _new_session(user)
    async with db.transaction(autocommit=True) as tx:
        direct = await tx.get_user_with_credential(user.email.upper().lower())
        assert pool.checkedout() == 0
        inserted = await tx.insert_session_if_credential(account.id, account.password or "", session)
        assert pool.checkedout() == 0
        assert await tx.insert_session_if_credential(account.id, "another hash", _new_session(user)) is None
        assert await tx.get_user_with_credential("nobody@example.com") is None
    assert inserted == session
    async with db.transaction() as tx:  # a real transaction: SQLAlchemy's own execution
        assert await tx.get_user_with_credential(user.email) == direct == (user, account)
        assert await tx.get_session(session.stored_token) == session


async def test_a_failed_write_on_the_hot_connection_is_reported_and_never_run_twice(
    database: tuple[SqlDatabase, str],
) -> None:
    db, url = database
    user, account = await _credential(db)
    await _hot_connection_open(db)
    session = _new_session(user)
    async with db.transaction(autocommit=True) as tx:
        await tx.insert_session_if_credential(account.id, account.password or "", session)
    # the server refuses the statement itself (the same id again): the domain error, and the connection stays
    with pytest.raises(Conflict):
        async with db.transaction(autocommit=True) as tx:
            await tx.insert_session_if_credential(account.id, account.password or "", session)
    assert db._hot is not None and db._hot._conn is not None

    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(url.rsplit("/", 1)[0] + "/postgres")
    try:  # every connection dies: each write succeeds or fails as UNAVAILABLE; a failed one left no row
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await admin.close()
    written = 1
    outcomes = []
    for _ in range(12):
        try:
            async with db.transaction(autocommit=True) as tx:
                stored = await tx.insert_session_if_credential(account.id, account.password or "", _new_session(user))
            assert stored is not None
            written += 1
            outcomes.append("ok")
        except BackendUnavailable:
            outcomes.append("unavailable")
        await asyncio.sleep(0.1)
    assert outcomes[-5:] == ["ok"] * 5, outcomes
    async with db.transaction() as tx:
        assert len(await tx.list_user_sessions(user.id, datetime.now(UTC))) == written


class _Failing:
    """A driver connection whose statement fails as ``error`` (after it may have reached the server)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.terminated = False

    def is_closed(self) -> bool:
        return self.terminated

    async def fetch(self, *_args: Any, **_kwargs: Any) -> list[Any]:
        raise self.error

    def terminate(self) -> None:
        self.terminated = True


@pytest.mark.parametrize("error", [ConnectionResetError(), asyncpg.exceptions.ConnectionDoesNotExistError("gone")])
async def test_a_lost_connection_fails_a_write_but_sends_a_read_elsewhere(error: Exception) -> None:
    target = resolve_database_url("postgresql://postgres@127.0.0.1:5432/postgres", "")
    hot = create_database(target, Schema(Registry()))._hot
    assert hot is not None
    hot._conn = failing = _Failing(error)
    assert await hot.fetch("SELECT 1") is None  # a read: through the pool instead
    assert failing.terminated
    hot._conn = failing = _Failing(error)
    with pytest.raises(type(error)):  # a write: it may have been applied, so it is the caller's error
        await hot.fetch("INSERT ...", write=True)
    assert failing.terminated
    hot._conn = failing = _Failing(asyncpg.UniqueViolationError("duplicate key"))
    with pytest.raises(asyncpg.UniqueViolationError):  # the statement's own error: the connection stays
        await hot.fetch("INSERT ...", write=True)
    assert not failing.terminated


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
async def test_a_user_field_named_like_an_account_column_keeps_its_own_value(kind: str, tmp_path: Any) -> None:
    """The credential read labels the account's columns; a user field may be named a_password, a_id, ...: it
    must read back its own value, never the account's (found by review: the password hash once leaked into it)."""
    settings = SchemaSettings.model_validate(
        {
            "user": {
                "additional_fields": {name: {"type": "string", "required": False} for name in ("a_password", "a_id")}
            }
        }
    )
    registry = settings.registry()
    url = create_pg_database("authsidecar_hot") if kind == "postgres" else f"sqlite:///{tmp_path}/shadow.db"
    migrate(url, registry)
    db = create_database(resolve_database_url(url, ""), Schema(registry))
    try:
        now = datetime.now(UTC)
        extra = Extra({"a_password": "mine", "a_id": "my id"})
        user = User(
            secrets.token_hex(16), "Hot", f"hot-{secrets.token_hex(4)}@example.com", False, None, now, now, extra
        )
        hashed = "$argon2id$v=19$the-hash"
        account = Account(secrets.token_hex(16), user.id, CREDENTIAL_PROVIDER, user.id, hashed, now, now)
        async with db.transaction() as tx:
            await tx.insert_user(user)
            await tx.insert_account(account)
        for autocommit in (True, False):  # the direct path on Postgres, and SQLAlchemy's
            async with db.transaction(autocommit=autocommit) as tx:
                found = await tx.get_user_with_credential(user.email)
            assert found is not None
            assert found[0].additional == extra and found[1] is not None and found[1].password == hashed
    finally:
        await db.close()
        if kind == "postgres":
            drop_pg_database(url)
