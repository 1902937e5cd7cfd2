"""Backends for the storage/service contract suite: Postgres + Redis and SQLite + in-process, same tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pytest
import pytest_asyncio

from authsidecar.cache import MemorySessionCache, RedisSessionCache, ResilientSessionCache
from authsidecar.cache.integrity import DocumentSigner, derive_key
from authsidecar.cache.redis import connect_redis
from authsidecar.cache.resp import PipelinedGetClient
from authsidecar.delivery import DeliveryQueue, Message
from authsidecar.domain.ports import SessionCache
from authsidecar.security.passwords import PasswordHasher
from authsidecar.security.tokens import HashedTokenPolicy
from authsidecar.services.accounts import AccountService
from authsidecar.services.clock import utc_now
from authsidecar.services.coherence import CacheCoherence
from authsidecar.services.profile import ProfileService
from authsidecar.services.rules import CredentialRules
from authsidecar.services.sessions import SessionManager, SessionPolicy
from authsidecar.services.verification import AccountFlows, FlowSettings
from authsidecar.storage.database import SqlDatabase, create_database
from authsidecar.storage.schema import Schema
from authsidecar.storage.urls import resolve_database_url
from tests.conftest import FAST_ARGON2, REDIS_URL, TEST_SECRET


@dataclass
class FakeClock:
    """A settable wall clock for the services."""

    now: datetime = field(default_factory=utc_now)

    def __call__(self) -> datetime:
        return self.now


class RecordingSender:
    """Delivery boundary for the contract suite: keeps the messages (the e2e tests use real SMTP and HTTP)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def send(self, message: Message) -> None:
        self.messages.append(message)


@dataclass
class Backend:
    """Everything a contract test needs, wired like app.py does."""

    name: str
    db: SqlDatabase
    cache: SessionCache
    coherence: CacheCoherence
    clock: FakeClock
    tokens: HashedTokenPolicy
    sessions: SessionManager
    accounts: AccountService
    make_accounts: Callable[[PasswordHasher], AccountService]
    flows: AccountFlows
    profile: ProfileService
    outbox: DeliveryQueue
    sender: RecordingSender

    async def delivered(self) -> list[Message]:
        """Every message sent so far, once the queue is idle."""
        await self.outbox.drain()
        return self.sender.messages


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
        signer = DocumentSigner(derive_key(TEST_SECRET, "cache-documents"))
        cache = ResilientSessionCache(RedisSessionCache(connect_redis(REDIS_URL, 0.5), redis_prefix, signer, getter))
    else:
        db = create_database(resolve_database_url(sqlite_url, ""), Schema())
        cache = MemorySessionCache()
    clock = FakeClock()
    tokens = HashedTokenPolicy()
    coherence = CacheCoherence(cache, tokens)
    db.add_commit_listener(coherence.committed)
    await coherence.catch_up(db)
    follower = asyncio.create_task(coherence.follow(db))
    sessions = SessionManager(db, cache, tokens, SessionPolicy(), coherence, clock)
    sender = RecordingSender()
    outbox = DeliveryQueue(sender, attempts=1)
    outbox.start()
    rules = CredentialRules()
    flows = AccountFlows(db, hasher, sessions, rules, outbox, FlowSettings(), clock)
    profile = ProfileService(db, hasher, sessions, rules, clock)

    def make_accounts(h: PasswordHasher) -> AccountService:
        return AccountService(db, h, sessions, rules, auto_sign_in=True, clock=clock)

    yield Backend(
        request.param,
        db,
        cache,
        coherence,
        clock,
        tokens,
        sessions,
        make_accounts(hasher),
        make_accounts,
        flows,
        profile,
        outbox,
        sender,
    )
    await outbox.stop(5)
    follower.cancel()
    await asyncio.gather(follower, return_exceptions=True)
    await cache.close()
    await db.close()
