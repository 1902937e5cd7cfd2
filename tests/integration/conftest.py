"""Backends for the storage/service contract suite: Postgres + Redis and SQLite + in-process, same tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pytest
import pytest_asyncio

from authsidecar.cache import MemorySessionCache, RedisSessionCache, ResilientSessionCache
from authsidecar.cache.redis import connect_redis
from authsidecar.cache.resp import PipelinedGetClient
from authsidecar.domain.ports import SessionCache
from authsidecar.security.passwords import PasswordHasher
from authsidecar.security.tokens import HashedTokenPolicy
from authsidecar.services.accounts import AccountService
from authsidecar.services.clock import utc_now
from authsidecar.services.rules import CredentialRules
from authsidecar.services.sessions import SessionManager, SessionPolicy
from authsidecar.storage.database import SqlDatabase, create_database
from authsidecar.storage.schema import Schema
from authsidecar.storage.urls import resolve_database_url
from tests.conftest import FAST_ARGON2, REDIS_URL


@dataclass
class FakeClock:
    """A settable wall clock for the services."""

    now: datetime = field(default_factory=utc_now)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Backend:
    """Everything a contract test needs, wired like app.py does."""

    name: str
    db: SqlDatabase
    cache: SessionCache
    clock: FakeClock
    tokens: HashedTokenPolicy
    sessions: SessionManager
    accounts: AccountService
    make_accounts: Callable[[PasswordHasher], AccountService]


@pytest.fixture(scope="session")
def hasher() -> Iterator[PasswordHasher]:
    """Cheap argon2id (the contract is about behaviour, not cost)."""
    h = PasswordHasher(FAST_ARGON2, workers=2, max_pending=256)
    yield h
    h.close()


@pytest_asyncio.fixture(params=["postgres+redis", "sqlite+memory"])
async def backend(
    request: pytest.FixtureRequest, pg_url: str, sqlite_url: str, redis_prefix: str, hasher: PasswordHasher
) -> AsyncIterator[Backend]:
    """One backend per parameter; the services are built over it as in production."""
    cache: SessionCache
    if request.param == "postgres+redis":
        db = create_database(resolve_database_url(pg_url, ""), Schema())
        getter = PipelinedGetClient(REDIS_URL, 0.5)
        cache = ResilientSessionCache(RedisSessionCache(connect_redis(REDIS_URL, 0.5), redis_prefix, getter))
    else:
        db = create_database(resolve_database_url(sqlite_url, ""), Schema())
        cache = MemorySessionCache()
    clock = FakeClock()
    tokens = HashedTokenPolicy()
    sessions = SessionManager(db, cache, tokens, SessionPolicy(), clock)

    def make_accounts(h: PasswordHasher) -> AccountService:
        return AccountService(db, h, sessions, CredentialRules(), auto_sign_in=True, clock=clock)

    yield Backend(request.param, db, cache, clock, tokens, sessions, make_accounts(hasher), make_accounts)
    await cache.close()
    await db.close()
