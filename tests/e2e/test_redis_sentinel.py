"""Redis Sentinel: a primary, a replica and three sentinels started from redis-server, the real server on them
(Postgres as the store of record), and a change of primary while ValidateSession load runs: a coordinated
failover (SENTINEL FAILOVER), and a crash (SIGKILL of the primary, which the sentinels detect and replace).

Replication is asynchronous, so a new primary may lack a tombstone or still hold a document that was deleted on
the old one. The tests make that happen on purpose: after the failover they put the revoked sessions' documents
back on the new primary (DUMP/RESTORE of the signed originals) and delete their tombstones. Revocation must hold
anyway (the invalidation log in Postgres is what makes it hold): no validation that started after a revocation
returned may succeed, before, during or after the failover.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from tests.e2e.conftest import validation_outcome as outcome
from tests.e2e.redis_topologies import RedisSentinel, connections_by_remote_port, info_field

PASSWORD = "correct horse battery"
PREFIX = "authsidecar:"
PG_PORT = urlsplit(PG_ADMIN_URL).port or 5432


@pytest.fixture
def sentinel(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisSentinel]:
    """The group; a test may pass RedisSentinel's timing arguments (indirect parametrization)."""
    group = RedisSentinel(tmp_path / "redis", **getattr(request, "param", {}))
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
class Sessions:
    """Sessions of new users, each cached on the first primary, and when each revocation returned."""

    stubs: Stubs
    ids: dict[str, str]  # token -> session id
    originals: dict[str, bytes]  # token -> DUMP of its signed document on the first primary
    revoked_at: dict[str, float] = field(default_factory=dict)

    @property
    def tokens(self) -> list[str]:
        return list(self.ids)

    @property
    def valid(self) -> list[str]:
        return [t for t in self.ids if t not in self.revoked_at]

    async def revoke(self, token: str) -> None:
        await self.stubs.sessions.RevokeSession(
            session_pb.RevokeSessionRequest(token=token, session_id=self.ids[token]), timeout=10
        )
        self.revoked_at[token] = time.monotonic()

    def plant_stale(self, port: int, tokens: list[str]) -> None:
        """Asynchronous replication at its worst: the server on ``port`` holds these sessions' original documents,
        and no tombstone."""
        raw = redis.Redis(port=port, socket_timeout=5)
        for token in tokens:
            raw.restore(document_key(token), 0, self.originals[token], replace=True)
            raw.delete(document_key(token) + ":revoked")
        raw.close()


async def cached_sessions(stubs: Stubs, primary: int, count: int = 24) -> Sessions:
    """``count`` users signed up, each session validated once (so cached on ``primary``), their documents dumped."""
    users = [await sign_up(stubs) for _ in range(count)]
    for user in users:
        assert await outcome(stubs, user.token) == "ok"  # cached on the primary
    raw = redis.Redis(port=primary, socket_timeout=5)
    dumps = {user.token: raw.dump(document_key(user.token)) for user in users}
    raw.close()
    originals = {token: dump for token, dump in dumps.items() if isinstance(dump, bytes)}
    assert len(originals) == count, "every session should be cached before the failover"
    return Sessions(stubs, {u.token: u.session.id for u in users}, originals)


@dataclass
class Load:
    """ValidateSession calls in a loop over the tokens; every answer recorded with when its call started, and the
    server's peak number of connections per remote port."""

    stubs: Stubs
    tokens: list[str]
    pid: int
    results: list[tuple[str, float, str]] = field(default_factory=list)
    peak: Counter[int] = field(default_factory=Counter)
    stopping: bool = False

    async def worker(self) -> None:
        while not self.stopping:
            token = random.choice(self.tokens)
            started = time.monotonic()
            self.results.append((token, started, await outcome(self.stubs, token)))

    async def sample_connections(self) -> None:
        while not self.stopping:
            self.peak.update(connections_by_remote_port(self.pid) - self.peak)  # keeps the maximum per port
            await asyncio.sleep(0.05)

    def outcomes(self, start: float = 0.0, end: float = float("inf")) -> Counter[str]:
        """The answers to calls started in [start, end)."""
        return Counter(o for _, started, o in self.results if start <= started < end)


@contextlib.asynccontextmanager
async def validation_load(stubs: Stubs, server: Server, tokens: list[str], workers: int = 8) -> AsyncIterator[Load]:
    """``workers`` ValidateSession calls in flight (and the connection sampler) for the body of the block, which
    starts after half a second of load."""
    load = Load(stubs, tokens, server.process.pid)
    tasks = [asyncio.create_task(load.worker()) for _ in range(workers)]
    tasks.append(asyncio.create_task(load.sample_connections()))
    try:
        await asyncio.sleep(0.5)
        yield load
    finally:
        load.stopping = True
        await asyncio.gather(*tasks)


def check_revocations_held(load: Load, sessions: Sessions) -> None:
    """No call that started after a revocation returned was answered as valid; enough load to mean something."""
    served_revoked = [
        (token[:8], outcome_)
        for token, started, outcome_ in load.results
        if token in sessions.revoked_at and started > sessions.revoked_at[token] and outcome_ == "ok"
    ]
    assert not served_revoked, f"revoked sessions answered as valid: {served_revoked[:5]}"
    assert len(load.results) > 200, f"too little load to mean anything: {len(load.results)} calls"


def check_connections(load: Load, old_primary: int, new_primary: int) -> None:
    """Bounded connections (README "Connections per instance"): 5 to Postgres, LISTEN included; per Redis server
    at most the cache's and the limiter's pools (8 each) and the hot-path connection."""
    peak = load.peak
    print(f"peak connections: Postgres {peak[PG_PORT]}, old primary {peak[old_primary]}, new {peak[new_primary]}")
    assert 0 < peak[PG_PORT] <= 5, f"Postgres connections: {peak[PG_PORT]}"
    for port in (old_primary, new_primary):
        assert peak[port] <= 17, f"connections to Redis on {port}: {peak[port]}"


async def check_served_from(stubs: Stubs, sessions: Sessions, old_primary: int, new_primary: int) -> None:
    """Every session answers as it should; valid ones are read from the new primary, and nothing from the old."""
    for token in sessions.tokens:
        expected = "INVALID_TOKEN" if token in sessions.revoked_at else "ok"
        assert await outcome(stubs, token) == expected
    old_before, new_before = get_calls(old_primary), get_calls(new_primary)
    for token in sessions.valid * 3:
        assert await outcome(stubs, token) == "ok"
    assert get_calls(new_primary) - new_before >= len(sessions.valid) * 3
    assert get_calls(old_primary) == old_before


def check_log(server: Server) -> None:
    log = server.log()
    assert "Traceback" not in log, log[-4000:]


async def test_a_failover_under_load_loses_no_revocation(stubs: Stubs, sentinel: RedisSentinel, server: Server) -> None:
    old_primary = sentinel.primary
    sessions = await cached_sessions(stubs, old_primary)
    before, during = sessions.tokens[:6], sessions.tokens[6:12]

    async with validation_load(stubs, server, sessions.tokens) as load:
        for token in before:
            await sessions.revoke(token)
        await asyncio.sleep(0.3)
        failover = asyncio.create_task(asyncio.to_thread(sentinel.fail_over))
        for token in during:  # while the primary changes
            await sessions.revoke(token)
            await asyncio.sleep(0.05)
        new_primary = await failover
        assert new_primary != old_primary
        sessions.plant_stale(new_primary, before + during)
        await asyncio.sleep(2.0)  # the load goes on against the new primary

    check_revocations_held(load, sessions)
    unexpected = set(load.outcomes()) - {"ok", "INVALID_TOKEN"}
    assert not unexpected, f"the failover should cost no errors (SQL answers meanwhile): {unexpected}"
    check_connections(load, old_primary, new_primary)
    # The hot path followed the failover (within a second, before Sentinel even demotes the old primary):
    # reads now go to the new primary, none to the old one.
    await check_served_from(stubs, sessions, old_primary, new_primary)
    check_log(server)


# A crash is detected after down-after-milliseconds; 300 ms keeps the outage short. A failover-timeout of 3 s
# bounds the wait should an election produce no leader (the sentinels retry after twice that).
QUICK_DETECTION = {"down_after_ms": 300, "failover_timeout_ms": 3000}


@pytest.mark.parametrize("sentinel", [QUICK_DETECTION], indirect=True, ids=["down-after-300ms"])
async def test_a_crashed_primary_under_load_loses_no_revocation(
    stubs: Stubs, sentinel: RedisSentinel, server: Server
) -> None:
    """SIGKILL of the primary: no shutdown, no SENTINEL FAILOVER. Until the sentinels promote the replica, every
    Redis call fails (connection refused; then the sentinels report the primary down) and validation is answered
    from SQL; revocations made meanwhile commit to Postgres and their Redis deletes are lost, so the new primary
    still holds those documents without tombstones (planted again below, with the earlier revocations', in case
    the server met and removed them first). Then the old primary comes back, empty and calling itself a primary,
    until a sentinel turns it into a replica: the server must not read from it."""
    old_primary = sentinel.primary
    sessions = await cached_sessions(stubs, old_primary)
    before, outage, after = sessions.tokens[:6], sessions.tokens[6:12], sessions.tokens[12:15]

    async with validation_load(stubs, server, sessions.tokens) as load:
        for token in before:
            await sessions.revoke(token)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(sentinel.kill, old_primary)  # SIGKILL
        crashed_at = time.monotonic()
        await asyncio.sleep(0.05)  # the load meets the crash first
        for token in outage:
            await sessions.revoke(token)
        role = await asyncio.to_thread(info_field, sentinel.replica, "replication", "role")
        assert role == "slave", "these revocations should have been made before the promotion"
        new_primary = await asyncio.to_thread(sentinel.await_new_primary, old_primary)
        promoted_at = time.monotonic()
        assert new_primary == sentinel.replica
        sessions.plant_stale(new_primary, before + outage)
        for token in after:
            await sessions.revoke(token)
        await asyncio.sleep(1.5)  # the load goes on against the new primary

        await asyncio.to_thread(sentinel.restart, old_primary)
        restarted_at = time.monotonic()
        await asyncio.to_thread(sentinel.await_replica_of, old_primary, new_primary)
        rejoined_at = time.monotonic()
    print(
        f"outage revocations done {max(sessions.revoked_at[t] for t in outage) - crashed_at:.2f} s after the crash;"
        f" promoted {promoted_at - crashed_at:.2f} s after it; the old primary rejoined as a replica"
        f" {rejoined_at - restarted_at:.2f} s after its restart"
    )
    for name, start, end in [
        ("before the crash", 0.0, crashed_at),
        ("outage", crashed_at, promoted_at),
        ("new primary", promoted_at, restarted_at),
        ("old primary back", restarted_at, float("inf")),
    ]:
        print(f"{name}: {dict(load.outcomes(start, end))}")

    check_revocations_held(load, sessions)
    # While no primary answers, validation falls back to SQL: the valid sessions stay valid throughout, and no
    # call fails (Postgres is up; a Redis failure costs at most the Redis timeout, then the breaker skips Redis).
    unexpected = set(load.outcomes()) - {"ok", "INVALID_TOKEN"}
    assert not unexpected, f"the crash should cost no errors (SQL answers meanwhile): {unexpected}"
    valid = set(sessions.valid)
    refused = Counter(o for token, _, o in load.results if token in valid and o != "ok")
    assert not refused, f"sessions never revoked were refused: {refused}"
    assert load.outcomes(crashed_at, promoted_at)["ok"] > 0, "no validation ran during the outage"

    check_connections(load, old_primary, new_primary)
    # The restarted old primary is a replica now; the server reads from the new primary only, and holds no
    # connection to the old one (it counts its GETs from zero: nothing was read from it since its restart).
    await check_served_from(stubs, sessions, old_primary, new_primary)
    assert get_calls(old_primary) == 0
    connections = connections_by_remote_port(server.process.pid)
    assert connections[new_primary] > 0 and connections[old_primary] == 0, connections
    log = server.log()
    assert "secondary storage unavailable" in log and "secondary storage is back" in log, log[-4000:]
    check_log(server)
