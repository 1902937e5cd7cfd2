"""Redis Sentinel: a primary, a replica and three sentinels started from redis-server, the real server on them
(Postgres as the store of record), and a primary failover while ValidateSession load runs.

Replication is asynchronous, so a new primary may lack a tombstone or still hold a document that was deleted on
the old one. The test makes that happen on purpose: after the failover it puts the revoked sessions' documents
back on the new primary (DUMP/RESTORE of the signed originals) and deletes their tombstones. Revocation must hold
anyway (the invalidation log in Postgres is what makes it hold): no validation that started after a revocation
returned may succeed, before, during or after the failover.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2

from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import resources_pb2
from authsidecar_client.v1 import session_service_pb2 as session_pb
from tests.conftest import PG_ADMIN_URL
from tests.e2e.conftest import Server, Stubs, error_details, start_server, stubs_for
from tests.e2e.redis_topologies import RedisSentinel, connections_by_remote_port, info_field

PASSWORD = "correct horse battery"
PREFIX = "authsidecar:"
PG_PORT = urlsplit(PG_ADMIN_URL).port or 5432


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[RedisSentinel]:
    group = RedisSentinel(tmp_path / "redis")
    try:
        group.start()
        yield group
    finally:
        group.stop()


@pytest.fixture
def server(sentinel: RedisSentinel, tmp_path: Path, pg_url: str) -> Iterator[Server]:
    env = {
        "DATABASE_URL": pg_url,
        "REDIS_URL": sentinel.url,
        "AUTHSIDECAR_REDIS_TIMEOUT": "0.3",
        "AUTHSIDECAR_REDIS_RETRY_AFTER": "0.3",
        "AUTHSIDECAR_RATE_LIMIT_ENABLED": "true",
        "AUTHSIDECAR_LOCAL_CACHE_SECONDS": "0",  # hits must come from the primary, not the in-process tier
    }
    srv = start_server(tmp_path, env)
    srv.wait_for(health_pb2.HealthCheckResponse.SERVING)
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture
async def stubs(server: Server) -> AsyncIterator[Stubs]:
    s = stubs_for(server.address)
    yield s
    await s.channel.close()


def document_key(token: str) -> str:
    return f"{PREFIX}{{session:{hashlib.sha256(token.encode()).hexdigest()}}}"


def get_calls(port: int) -> int:
    """GETs a Redis server has executed."""
    stats = info_field(port, "commandstats", "cmdstat_get")  # calls=N,usec=...
    return int(stats.split(",")[0].removeprefix("calls=")) if stats else 0


async def outcome(stubs: Stubs, token: str) -> str:
    try:
        await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=token), timeout=5)
    except grpc.aio.AioRpcError as exc:
        details = error_details(exc)
        if details.reason == "INVALID_TOKEN":
            assert details.code == grpc.StatusCode.UNAUTHENTICATED
        return details.reason
    return "ok"


async def sign_up(stubs: Stubs) -> auth_pb.SignUpResponse:
    email = f"sentinel-{secrets.token_hex(6)}@example.com"
    return await stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Ada"), timeout=10)


async def test_sessions_rate_limits_and_revocation_on_the_primary(stubs: Stubs, sentinel: RedisSentinel) -> None:
    up = await sign_up(stubs)
    ip = f"203.0.113.{random.randint(1, 250)}"
    request = auth_pb.SignInRequest(
        email=up.user.email, password=PASSWORD, client=resources_pb2.ClientContext(ip_address=ip, user_agent="t")
    )
    outcomes = []
    tokens = []
    for _ in range(4):
        try:
            tokens.append((await stubs.auth.SignIn(request, timeout=10)).token)
            outcomes.append("ok")
        except grpc.aio.AioRpcError as exc:
            outcomes.append(error_details(exc).reason)
    assert outcomes == ["ok", "ok", "ok", "RATE_LIMITED"]
    primary = sentinel.primary
    assert sentinel.keys_on(primary, PREFIX + "{ratelimit}*"), "the counters live on the primary"

    assert await outcome(stubs, tokens[0]) == "ok"  # fills the cache
    assert sentinel.keys_on(primary, document_key(tokens[0]))
    before = get_calls(primary)
    for _ in range(20):
        assert await outcome(stubs, tokens[0]) == "ok"
    assert get_calls(primary) - before >= 20, "validations should be answered from the primary"
    assert get_calls(sentinel.replica) == 0, "nothing reads from the replica"

    await stubs.auth.SignOut(auth_pb.SignOutRequest(token=tokens[0]), timeout=5)
    assert await outcome(stubs, tokens[0]) == "INVALID_TOKEN"
    assert sentinel.keys_on(primary, document_key(tokens[0]) + ":revoked")
    assert await outcome(stubs, tokens[1]) == "ok"


@dataclass
class Load:
    """ValidateSession calls in a loop over the tokens; every answer recorded with when its call started."""

    stubs: Stubs
    tokens: list[str]
    results: list[tuple[str, float, str]] = field(default_factory=list)
    stopping: bool = False

    async def worker(self) -> None:
        while not self.stopping:
            token = random.choice(self.tokens)
            started = time.monotonic()
            self.results.append((token, started, await outcome(self.stubs, token)))


async def test_a_failover_under_load_loses_no_revocation(stubs: Stubs, sentinel: RedisSentinel, server: Server) -> None:
    users = [await sign_up(stubs) for _ in range(24)]
    tokens = [u.token for u in users]
    session_ids = {u.token: u.session.id for u in users}
    for token in tokens:
        assert await outcome(stubs, token) == "ok"  # cached on the primary
    old_primary = sentinel.primary
    raw = redis.Redis(port=old_primary, socket_timeout=5)
    originals = {token: raw.dump(document_key(token)) for token in tokens}
    raw.close()
    assert all(originals.values()), "every session should be cached before the failover"

    before, during = tokens[:6], tokens[6:12]
    revoked_at: dict[str, float] = {}

    async def revoke(token: str) -> None:
        await stubs.sessions.RevokeSession(
            session_pb.RevokeSessionRequest(token=token, session_id=session_ids[token]), timeout=10
        )
        revoked_at[token] = time.monotonic()

    load = Load(stubs, tokens)
    workers = [asyncio.create_task(load.worker()) for _ in range(8)]
    peak: Counter[int] = Counter()

    async def sample_connections() -> None:
        while not load.stopping:
            peak.update(connections_by_remote_port(server.process.pid) - peak)  # keeps the maximum per port
            await asyncio.sleep(0.05)

    workers.append(asyncio.create_task(sample_connections()))
    try:
        await asyncio.sleep(0.5)
        for token in before:
            await revoke(token)
        await asyncio.sleep(0.3)
        failover = asyncio.create_task(asyncio.to_thread(sentinel.fail_over))
        for token in during:  # while the primary changes
            await revoke(token)
            await asyncio.sleep(0.05)
        new_primary = await failover
        assert new_primary != old_primary

        # Asynchronous replication at its worst: the new primary holds the revoked documents, and no tombstone.
        raw = redis.Redis(port=new_primary, socket_timeout=5)
        for token in before + during:
            raw.restore(document_key(token), 0, originals[token], replace=True)
            raw.delete(document_key(token) + ":revoked")
        raw.close()
        await asyncio.sleep(2.0)  # the load goes on against the new primary
    finally:
        load.stopping = True
        await asyncio.gather(*workers)

    served_revoked = [
        (token[:8], outcome_)
        for token, started, outcome_ in load.results
        if token in revoked_at and started > revoked_at[token] and outcome_ == "ok"
    ]
    assert not served_revoked, f"revoked sessions answered as valid: {served_revoked[:5]}"
    unexpected = {o for _, _, o in load.results} - {"ok", "INVALID_TOKEN"}
    assert not unexpected, f"the failover should cost no errors (SQL answers meanwhile): {unexpected}"
    assert len(load.results) > 200, f"too little load to mean anything: {len(load.results)} calls"
    # Bounded connections (README "Connections per instance"): 5 to Postgres, LISTEN included; per Redis server
    # at most the cache's and the limiter's pools (8 each) and the hot-path connection.
    print(f"peak connections: Postgres {peak[PG_PORT]}, old primary {peak[old_primary]}, new {peak[new_primary]}")
    assert 0 < peak[PG_PORT] <= 5, f"Postgres connections: {peak[PG_PORT]}"
    for port in (old_primary, new_primary):
        assert peak[port] <= 17, f"connections to Redis on {port}: {peak[port]}"

    for token in tokens:
        expected = "INVALID_TOKEN" if token in revoked_at else "ok"
        assert await outcome(stubs, token) == expected

    # The hot path followed the failover (within a second, before Sentinel even demotes the old primary):
    # reads now go to the new primary, none to the old one.
    valid = [t for t in tokens if t not in revoked_at]
    old_before, new_before = get_calls(old_primary), get_calls(new_primary)
    for token in valid * 3:
        assert await outcome(stubs, token) == "ok"
    assert get_calls(new_primary) - new_before >= len(valid) * 3
    assert get_calls(old_primary) == old_before
