"""Backends for the storage/service contract suite: Postgres + Redis and SQLite + in-process, same tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import pytest_asyncio

from authsidecar.cache import MemorySessionCache, RedisSessionCache, ResilientSessionCache
from authsidecar.cache.integrity import DocumentSigner, derive_key
from authsidecar.cache.redis import connect_redis
from authsidecar.cache.resp import PipelinedGetClient
from authsidecar.delivery import DeliveryQueue, Message
from authsidecar.domain.ports import SessionCache
from authsidecar.schema_config import SchemaSettings
from authsidecar.security.ids import id_generator
from authsidecar.security.passwords import PasswordHasher
from authsidecar.security.tokens import HashedTokenPolicy
from authsidecar.services.accounts import AccountService
from authsidecar.services.clock import utc_now
from authsidecar.services.coherence import CacheCoherence
from authsidecar.services.extra_fields import ExtraFieldRules
from authsidecar.services.profile import ProfileService
from authsidecar.services.rules import CredentialRules
from authsidecar.services.sessions import SessionManager, SessionPolicy
from authsidecar.services.verification import AccountFlows, FlowSettings
from authsidecar.storage.database import SqlDatabase, create_database
from authsidecar.storage.schema import Schema
from authsidecar.storage.urls import resolve_database_url
from tests.conftest import (
    CUSTOM_SCHEMA,
    FAST_ARGON2,
    REDIS_URL,
    TEST_SECRET,
    create_mariadb_database,
    create_pg_database,
    drop_mariadb_database,
    drop_pg_database,
    migrate,
)


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

    async def close(self) -> None:
        pass


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


KINDS = ("postgres+redis", "sqlite+memory", "mariadb+memory")
# Schema variants: Better Auth's default, the customised one, and the two ways of letting the database make ids.
VARIANTS: dict[str, SchemaSettings] = {
    "": SchemaSettings(),
    "/custom-schema": CUSTOM_SCHEMA,
    "/serial-ids": SchemaSettings(generate_id="serial"),
    "/database-ids": SchemaSettings(generate_id=False),
}
BACKENDS = [kind + variant for variant in VARIANTS for kind in KINDS]


class Databases:
    """Migrated databases of this run, one per (database, schema variant), made when first needed."""

    def __init__(self, tmp: Path, redis_prefix: str) -> None:
        self.tmp = tmp
        self.redis_prefix = redis_prefix
        self._urls: dict[tuple[str, str], str] = {}
        self._drops: list[Callable[[], None]] = []

    def url(self, kind: str, variant: str) -> str:
        key = (kind, variant)
        if key not in self._urls:
            registry = VARIANTS[variant].registry()
            if kind == "sqlite":
                url = f"sqlite:///{self.tmp / f'{len(self._urls)}.db'}"
            elif kind == "postgres":
                url = create_pg_database("authsidecar_contract")
                self._drops.append(lambda url=url: drop_pg_database(url))
            else:
                url = create_mariadb_database("authsidecar_contract")
                self._drops.append(lambda url=url: drop_mariadb_database(url))
            migrate(url, registry)
            self._urls[key] = url
        return self._urls[key]

    def drop_all(self) -> None:
        for drop in self._drops:
            drop()


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory, redis_prefix: str) -> Iterator[Databases]:
    made = Databases(tmp_path_factory.mktemp("contract"), redis_prefix)
    yield made
    made.drop_all()


@pytest_asyncio.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, databases: Databases, hasher: PasswordHasher
) -> AsyncIterator[Backend]:
    """One backend per parameter, with the default or the customised schema (tests/conftest.py)."""
    async with build_backend(request.param, databases, hasher) as built:
        yield built


@pytest_asyncio.fixture(params=[name for name in BACKENDS if name.endswith("/custom-schema")])
async def custom_backend(
    request: pytest.FixtureRequest, databases: Databases, hasher: PasswordHasher
) -> AsyncIterator[Backend]:
    """The customised schema only, on each database."""
    async with build_backend(request.param, databases, hasher) as built:
        yield built


@asynccontextmanager
async def build_backend(name: str, databases: Databases, hasher: PasswordHasher) -> AsyncIterator[Backend]:
    """The services over one backend, wired as in production."""
    cache: SessionCache
    kind, variant = name.split("+")[0], name[name.find("/") :] if "/" in name else ""
    registry = VARIANTS[variant].registry()
    db = create_database(resolve_database_url(databases.url(kind, variant), ""), Schema(registry))
    if name.startswith("postgres+redis"):
        getter = PipelinedGetClient(REDIS_URL, 0.5)
        signer = DocumentSigner(derive_key(TEST_SECRET, "cache-documents"))
        prefix = f"{databases.redis_prefix}{variant.strip('/')}:"
        redis_cache = RedisSessionCache(connect_redis(REDIS_URL, 0.5), prefix, signer, getter, registry=registry)
        cache = ResilientSessionCache(redis_cache)
    else:
        cache = MemorySessionCache()
    clock = FakeClock()
    tokens = HashedTokenPolicy()
    coherence = CacheCoherence(cache, tokens)
    db.add_commit_listener(coherence.committed)
    db.stamp = coherence.clock.stamp
    await coherence.catch_up(db)
    follower = asyncio.create_task(coherence.follow(db))
    ids = id_generator(registry.generate_id)
    user_fields = ExtraFieldRules(registry.user)
    session_fields = ExtraFieldRules(registry.session).for_create({})
    sessions = SessionManager(
        db, cache, tokens, SessionPolicy(), coherence, clock, session_fields=session_fields, ids=ids
    )
    sender = RecordingSender()
    outbox = DeliveryQueue(sender, attempts=1)
    outbox.start()
    rules = CredentialRules()
    flows = AccountFlows(db, hasher, sessions, rules, outbox, FlowSettings(), clock)
    profile = ProfileService(db, hasher, sessions, rules, clock, user_fields=user_fields)

    def make_accounts(h: PasswordHasher) -> AccountService:
        return AccountService(db, h, sessions, rules, auto_sign_in=True, clock=clock, user_fields=user_fields, ids=ids)

    yield Backend(
        name,
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
    coherence.stop()  # lets a read under way finish (a cancelled one could strand its connection)
    await asyncio.wait_for(follower, 10)
    await cache.close()
    await db.close()
