"""The connection kept out of the pool for the cache-miss query (Postgres): used when free, replaced after a
failure, and never more connections than the pool's bound."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from authsidecar.domain.fields import Registry
from authsidecar.domain.models import Session, User
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
