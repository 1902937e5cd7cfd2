"""Redis Cluster: a real three-master cluster started from redis-server, the real server on it (Postgres as the
store of record), and the cache's own operations run straight on the cluster, which refuses any script or
transaction whose keys span slots (CROSSSLOT): so every key a script touches is proven to share one slot."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from grpc_health.v1 import health_pb2
from redis.exceptions import RedisClusterException

from authsidecar.cache.cluster_get import SlotRoutedGetClient
from authsidecar.cache.integrity import DocumentSigner, derive_key
from authsidecar.cache.ratelimit import Limit, RedisRateLimiter
from authsidecar.cache.redis import RedisSessionCache
from authsidecar.cache.stream import RedisEventStream
from authsidecar.cache.topology import connect_redis, hot_path_getter, parse_redis_url
from authsidecar.config import ConfigError, load_settings
from authsidecar.domain.models import Session, SessionWithUser, User
from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import resources_pb2
from authsidecar_client.v1 import session_service_pb2 as session_pb
from tests.conftest import TEST_SECRET
from tests.e2e.conftest import Server, Stubs, error_details, start_server, stubs_for, wait_for
from tests.e2e.redis_topologies import RedisCluster, cli

PASSWORD = "correct horse battery"
PREFIX = "authsidecar:"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    redis_cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        redis_cluster.start()  # fails unless every node answers and reports cluster_state:ok in time
        for port in redis_cluster.ports:  # each node sees the whole cluster: three masters, every slot served
            info = dict(line.split(":", 1) for line in cli(port, "cluster", "info").splitlines() if ":" in line)
            assert (info["cluster_state"], info["cluster_size"], info["cluster_known_nodes"]) == ("ok", "3", "3"), info
            assert info["cluster_slots_assigned"] == info["cluster_slots_ok"] == "16384", info
        yield redis_cluster
    finally:
        redis_cluster.stop()


@pytest.fixture(scope="module")
def server(cluster: RedisCluster, tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[Server]:
    env = {
        "DATABASE_URL": pg_url,
        "REDIS_URL": cluster.url,
        "AUTHSIDECAR_RATE_LIMIT_ENABLED": "true",
        "AUTHSIDECAR_EVENT_STREAM": "redis",
        "AUTHSIDECAR_LOCAL_CACHE_SECONDS": "0",  # hits must come from the cluster, not the in-process tier
    }
    srv = start_server(tmp_path_factory.mktemp("cluster-server"), env)
    srv.wait_for(health_pb2.HealthCheckResponse.SERVING)
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture
async def stubs(server: Server) -> AsyncIterator[Stubs]:
    s = stubs_for(server.address)
    yield s
    await s.channel.close()


def _ip() -> str:
    return f"198.51.100.{secrets.randbelow(250) + 1}"


async def _reason(call: object) -> str:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return error_details(exc).reason
    return "ok"


async def _sign_up(stubs: Stubs) -> auth_pb.SignUpResponse:
    email = f"cluster-{secrets.token_hex(6)}@example.com"
    request = auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Ada", client=_client(_ip()))
    return await stubs.auth.SignUp(request, timeout=10)


def _client(ip: str) -> resources_pb2.ClientContext:
    return resources_pb2.ClientContext(ip_address=ip, user_agent="test")


def _validate(stubs: Stubs, token: str) -> object:
    return stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=token), timeout=5)


async def test_sessions_are_cached_across_the_masters_and_revocation_holds(stubs: Stubs, cluster: RedisCluster) -> None:
    users = [await _sign_up(stubs) for _ in range(6)]
    signed_in = await stubs.auth.SignIn(
        auth_pb.SignInRequest(email=users[0].user.email, password=PASSWORD, client=_client(_ip())), timeout=10
    )
    tokens = [u.token for u in users] + [signed_in.token]
    for token in tokens:  # the first validation fills the cache
        assert await _reason(_validate(stubs, token)) == "ok"
    documents = cluster.keys(PREFIX + "{session:*}")
    assert len(documents) >= len(tokens)
    spread = [len(cluster.keys_on(port, PREFIX + "{session:*}")) for port in cluster.ports]
    assert sum(1 for n in spread if n) >= 2, f"documents should spread over the masters: {spread}"

    hits_before = cluster.total("stats", "keyspace_hits")
    for _ in range(5):
        for token in tokens:
            assert await _reason(_validate(stubs, token)) == "ok"
    hits = cluster.total("stats", "keyspace_hits") - hits_before
    assert hits >= 5 * len(tokens), f"validations should be served from the cluster: {hits} hits"

    await stubs.sessions.RevokeSession(
        session_pb.RevokeSessionRequest(token=tokens[0], session_id=signed_in.session.id), timeout=5
    )
    assert await _reason(_validate(stubs, signed_in.token)) == "INVALID_TOKEN"
    assert await _reason(_validate(stubs, tokens[0])) == "ok"
    tombstones = cluster.keys(PREFIX + "{session:*}:revoked")
    assert len(tombstones) == 1, tombstones
    await stubs.auth.SignOut(auth_pb.SignOutRequest(token=tokens[1]), timeout=5)
    assert await _reason(_validate(stubs, tokens[1])) == "INVALID_TOKEN"
    assert len(cluster.keys(PREFIX + "{session:*}:revoked")) == 2

    # A profile change evicts the user's documents (index in one slot, documents in others).
    await stubs.auth.UpdateUser(auth_pb.UpdateUserRequest(token=tokens[2], name="Grace"), timeout=5)
    answer = await _validate(stubs, tokens[2])
    assert answer.user.name == "Grace"  # type: ignore[attr-defined]


async def test_rate_limits_count_in_the_cluster(stubs: Stubs, cluster: RedisCluster) -> None:
    up = await _sign_up(stubs)
    ip = _ip()
    request = auth_pb.SignInRequest(email=up.user.email, password=PASSWORD, client=_client(ip))
    outcomes = [await _reason(stubs.auth.SignIn(request, timeout=10)) for _ in range(4)]
    assert outcomes == ["ok", "ok", "ok", "RATE_LIMITED"]  # 3 per 10 s per client IP (the default)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stubs.auth.SignIn(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_details(refused.value).retry_delay is not None
    assert cluster.keys(PREFIX + "{ratelimit}*"), "the counters live in the cluster"


async def test_events_are_published_to_a_stream_in_the_cluster(stubs: Stubs, cluster: RedisCluster) -> None:
    await _sign_up(stubs)
    # -c: follows MOVED
    await wait_for(lambda: int(cli(cluster.ports[0], "-c", "xlen", PREFIX + "events") or 0) > 0, 10, "a stream entry")


def _entry(user_id: str) -> SessionWithUser:
    now = datetime.now(UTC)
    user = User(user_id, "Ada", "ada@example.com", True, None, now - timedelta(days=3), now - timedelta(days=1))
    session = Session(
        secrets.token_hex(16), user.id, secrets.token_hex(32), now + timedelta(days=7), now, now, "203.0.113.7", "t"
    )
    return SessionWithUser(session, user, time.time())


async def test_every_script_keeps_to_one_slot(cluster: RedisCluster) -> None:
    """Straight on the cluster (no fail-open wrapper, so a CROSSSLOT error fails the test)."""
    client = connect_redis(cluster.url, 2.0, 4)
    signer = DocumentSigner(derive_key(TEST_SECRET, "cache-documents"))
    prefix = f"slots-{secrets.token_hex(4)}:"
    cache = RedisSessionCache(client, prefix, signer, None, cluster=True)
    user = secrets.token_hex(8)
    entries = {f"session:{secrets.token_hex(32)}": _entry(user) for _ in range(8)}
    try:
        for key, entry in entries.items():
            await cache.put(key, entry, 600)
        for key, entry in entries.items():
            got = await cache.get(key)
            assert got is not None and got.session.id == entry.session.id
        revoked = list(entries)[:3]
        await cache.invalidate(user, revoked, 60)
        for key in revoked:
            assert await cache.get(key) is None
            await cache.put(key, entries[key], 600)  # refused by the tombstone, in the same slot
            assert await cache.get(key) is None
        assert await client.zcard(f"{prefix}active-sessions:{user}") == len(entries) - 3
        await cache.evict_user(user)
        assert all([await cache.get(key) is None for key in entries])
        assert not await client.exists(f"{prefix}active-sessions:{user}")

        limiter = RedisRateLimiter(client, prefix)
        checks = [(f"rl:SignUp:ip:{secrets.token_hex(8)}", Limit(2, 60)), (f"rl:SignUp:id:{user}", Limit(5, 60))]
        assert await limiter.hit(checks) == 0.0
        assert await limiter.hit(checks) == 0.0
        assert await limiter.hit(checks) > 0  # both keys in one script: all or nothing
        await limiter.reset(checks[0][0])
        assert await limiter.hit(checks) == 0.0

        stream = RedisEventStream(client, prefix + "events", 100)
        await stream.publish({"id": "1", "type": "user.create"})
        assert await client.xlen(prefix + "events") == 1

        # The check can fail: the single-server script spans slots; redis-py refuses it before sending, and the
        # cluster itself answers CROSSSLOT when asked directly.
        single = RedisSessionCache(client, prefix, signer, None, cluster=False)
        with pytest.raises(RedisClusterException, match="same key slot"):
            await single.put(f"session:{secrets.token_hex(32)}", _entry(user), 600)
        node = client.get_node_from_key(f"{prefix}active-sessions:{user}")
        assert node is not None
        refused = cli(node.port, "eval", "return 1", "2", f"{prefix}active-sessions:{user}", f"{prefix}{{x}}")
        assert refused.startswith("CROSSSLOT"), refused
    finally:
        await client.aclose()


def test_compat_profile_refuses_a_cluster_url(monkeypatch: pytest.MonkeyPatch, cluster: RedisCluster) -> None:
    monkeypatch.setenv("REDIS_URL", cluster.url)
    monkeypatch.setenv("AUTHSIDECAR_COMPAT", "better-auth")
    with pytest.raises(ConfigError, match="REDIS_URL: the compat profile uses Better Auth's key names"):
        load_settings()


async def test_hot_path_gets_go_to_the_slots_primary_and_follow_a_moved_slot(cluster: RedisCluster) -> None:
    """The hot path's GET is routed by slot over a pipelined connection per primary; when the slot moves to
    another master (a resharding), the old owner's MOVED sends that GET through redis-py, which refreshes its map,
    and the next GET goes straight to the new owner."""
    target = parse_redis_url(cluster.url)
    client = connect_redis(target, 1.0)
    getter = hot_path_getter(target, client, 1.0)
    assert isinstance(getter, SlotRoutedGetClient)
    key = f"authsidecar-test:{{session:{secrets.token_hex(32)}}}"
    try:
        await client.set(key, b"v1")
        assert await getter.get(key) == b"v1"  # the first GET loads redis-py's map
        slot = int(cli(cluster.ports[0], "cluster", "keyslot", key))
        owner = next(p for p in cluster.ports if cli(p, "cluster", "countkeysinslot", str(slot)) == "1")
        assert await getter.get(key) == b"v1"
        assert getter.connected_to() == {owner}  # routed: a pipelined connection to the slot's primary only
        new_owner = next(p for p in cluster.ports if p != owner)
        owner_id, new_id = cli(owner, "cluster", "myid"), cli(new_owner, "cluster", "myid")
        assert cli(new_owner, "cluster", "setslot", str(slot), "importing", owner_id) == "OK"
        assert cli(owner, "cluster", "setslot", str(slot), "migrating", new_id) == "OK"
        assert cli(owner, "migrate", "127.0.0.1", str(new_owner), key, "0", "5000") == "OK"
        for port in cluster.ports:
            assert cli(port, "cluster", "setslot", str(slot), "node", new_id) == "OK"
        assert await getter.get(key) == b"v1"  # MOVED from the old owner: through redis-py
        assert await getter.get(key) == b"v1"
        assert new_owner in getter.connected_to()
        assert await getter.get(f"authsidecar-test:{{session:{secrets.token_hex(32)}}}") is None
    finally:
        await client.delete(key)
        await getter.close()
        await client.aclose()
