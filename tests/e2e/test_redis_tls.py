"""Redis Cluster and Redis Sentinel over TLS: TLS-only topologies started from redis-server (``--port 0``: a node
has no plaintext port at all, so every connection that works is TLS), certificates made by openssl for this module,
and the real server on them with ``rediss+cluster://`` / ``rediss+sentinel://`` (Postgres as the store of record).

The nodes require client certificates (``tls-auth-clients yes``): the server presents its own (``ssl_certfile`` /
``ssl_keyfile``), the nodes present theirs to each other (cluster bus, replication, the sentinels' links), and
everything is verified against one CA (``ssl_ca_certs``, ``ssl_cert_reqs=required``). No Redis password: clients
are authenticated by their certificates only.

A server given another CA must never use an unverified connection. It starts (health follows the database only)
and no command of its reaches Redis; it reports the cache unavailable (saying why: the certificate check failed)
and answers from SQL, behind Sentinel and with a Cluster alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import grpc
import pytest
from grpc_health.v1 import health_pb2
from redis.exceptions import ConnectionError as RedisConnectionError

from authsidecar.cache.cluster_get import SlotRoutedGetClient
from authsidecar.cache.ratelimit import Limit, RedisRateLimiter
from authsidecar.cache.resp import PipelinedGetClient
from authsidecar.cache.topology import connect_redis, hot_path_getter, parse_redis_url
from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import resources_pb2
from tests.conftest import TEST_SECRET
from tests.e2e.conftest import Server, Stubs, start_server, stubs_for
from tests.e2e.conftest import validation_outcome as outcome
from tests.e2e.redis_topologies import RedisCluster, RedisSentinel, RedisTls, _Servers, cli, free_port
from tests.e2e.test_transport_security import Pki

pytestmark = [pytest.mark.postgres]

PASSWORD = "correct horse battery"
PREFIX = "authsidecar:"
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The CA; the nodes' server certificate (127.0.0.1) and the certificate they present to each other; the
    authsidecar server's client certificate; and another, unrelated CA."""
    pki = Pki(tmp_path_factory.mktemp("pki"))
    pki.make_ca("ca")
    pki.make_ca("other-ca")
    pki.issue("redis", "ca", "redis", server=True)
    pki.issue("redis-peer", "ca", "redis-peer", server=False)
    pki.issue("authsidecar", "ca", "authsidecar", server=False)
    return pki


@pytest.fixture(scope="module")
def tls(pki: Pki) -> RedisTls:
    return RedisTls(
        ca=pki.path("ca.pem"),
        cert=pki.path("redis.pem"),
        key=pki.path("redis.key"),
        client_cert=pki.path("redis-peer.pem"),
        client_key=pki.path("redis-peer.key"),
    )


def tls_query(pki: Pki, ca: str = "ca.pem") -> str:
    """The server's TLS parameters: whom to trust, and its own certificate."""
    params = {
        "ssl_ca_certs": pki.path(ca),
        "ssl_certfile": pki.path("authsidecar.pem"),
        "ssl_keyfile": pki.path("authsidecar.key"),
        "ssl_cert_reqs": "required",
    }
    return "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())


def server_env(pg_url: str, redis_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": pg_url,
        "REDIS_URL": redis_url,
        "AUTHSIDECAR_REDIS_TIMEOUT": "0.5",
        "AUTHSIDECAR_REDIS_RETRY_AFTER": "0.3",
        "AUTHSIDECAR_RATE_LIMIT_ENABLED": "true",  # the limiter's client goes over TLS too
        "AUTHSIDECAR_LOCAL_CACHE_SECONDS": "0",  # hits must come from Redis, not the in-process tier
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tls: RedisTls) -> Iterator[RedisCluster]:
    redis_cluster = RedisCluster(tmp_path_factory.mktemp("tls-cluster"), tls=tls)
    try:
        redis_cluster.start()
        yield redis_cluster
    finally:
        redis_cluster.stop()


@pytest.fixture
def sentinel(tmp_path: Path, tls: RedisTls) -> Iterator[RedisSentinel]:
    group = RedisSentinel(tmp_path / "redis", tls=tls)
    try:
        group.start()
        yield group
    finally:
        group.stop()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    """The servers a test starts; each stopped at its end, also on failure (before the Redis nodes stop)."""
    started: list[Server] = []
    yield started
    codes = [server.stop() for server in started]
    assert codes == [0] * len(started), [server.log()[-2000:] for server in started]


@pytest.fixture
async def stubs_list() -> AsyncIterator[list[Stubs]]:
    opened: list[Stubs] = []
    yield opened
    for stubs in opened:
        await stubs.channel.close()


def start(servers: list[Server], stubs_list: list[Stubs], tmp_path: Path, env: dict[str, str]) -> Stubs:
    server = start_server(tmp_path, env)
    servers.append(server)
    server.wait_for(SERVING)
    stubs = stubs_for(server.address)
    stubs_list.append(stubs)
    return stubs


def document_key(token: str) -> str:
    return f"{PREFIX}{{session:{hashlib.sha256(token.encode()).hexdigest()}}}"


def get_calls(nodes: RedisCluster | RedisSentinel, port: int) -> int:
    """GETs a node has executed."""
    stats = nodes.info_field(port, "commandstats", "cmdstat_get")  # calls=N,usec=...
    return int(stats.split(",")[0].removeprefix("calls=")) if stats else 0


async def sign_up(stubs: Stubs) -> auth_pb.SignUpResponse:
    email = f"tls-{secrets.token_hex(6)}@example.com"
    client = resources_pb2.ClientContext(ip_address=f"198.51.100.{secrets.randbelow(250) + 1}", user_agent="t")
    request = auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Ada", client=client)
    return await stubs.auth.SignUp(request, timeout=10)


async def sign_out(stubs: Stubs, token: str) -> None:
    await stubs.auth.SignOut(auth_pb.SignOutRequest(token=token), timeout=5)


def handshake_errors(nodes: RedisCluster | RedisSentinel, ports: list[int]) -> int:
    """TLS handshakes these nodes could not complete (a client that gave up on their certificate, or spoke
    plaintext), from their logs."""
    logs = [(nodes.root / str(port) / "redis.log").read_text() for port in ports]
    return sum(log.count("Error accepting a client connection") for log in logs)


def check_log(server: Server, *secret_values: str) -> None:
    """No traceback, and none of the secrets (AUTHSIDECAR_SECRET, the password, session tokens, the private
    keys)."""
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
    for value in (TEST_SECRET, PASSWORD, *secret_values):
        assert value not in log, "a secret is in the server log"


def private_keys(pki: Pki) -> list[str]:
    """The base64 body of each private key (the PEM's longest line)."""
    keys = ("redis.key", "redis-peer.key", "authsidecar.key")
    return [max(pki.read(k).decode().splitlines(), key=len) for k in keys]


async def test_cluster_over_tls(
    cluster: RedisCluster, pki: Pki, tmp_path: Path, pg_url: str, servers: list[Server], stubs_list: list[Stubs]
) -> None:
    assert not any(cli(port, "ping") for port in cluster.ports), "the nodes should speak TLS only"
    env = server_env(pg_url, cluster.url + tls_query(pki)) | {"AUTHSIDECAR_EVENT_STREAM": "redis"}
    stubs = start(servers, stubs_list, tmp_path, env)
    users = [await sign_up(stubs) for _ in range(6)]
    tokens = [u.token for u in users]
    for token in tokens:  # the first validation fills the cache
        assert await outcome(stubs, token) == "ok"
    for token in tokens:
        assert cluster.keys(document_key(token)), "every session's document is in the cluster"
    spread = [len(cluster.keys_on(port, PREFIX + "{session:*}")) for port in cluster.ports]
    assert sum(1 for n in spread if n) >= 2, f"documents should spread over the masters: {spread}"

    hits_before = cluster.total("stats", "keyspace_hits")
    gets_before = sum(get_calls(cluster, port) for port in cluster.ports)
    for _ in range(5):
        for token in tokens:
            assert await outcome(stubs, token) == "ok"
    hits = cluster.total("stats", "keyspace_hits") - hits_before
    gets = sum(get_calls(cluster, port) for port in cluster.ports) - gets_before
    assert hits >= 5 * len(tokens) and gets >= 5 * len(tokens), f"served from the cluster: {hits} hits, {gets} GETs"

    await sign_out(stubs, tokens[0])
    assert await outcome(stubs, tokens[0]) == "INVALID_TOKEN"
    assert cluster.keys(document_key(tokens[0]) + ":revoked"), "the tombstone is in the cluster"
    assert await outcome(stubs, tokens[1]) == "ok"
    assert cluster.keys(PREFIX + "{ratelimit}*"), "the rate limit counters live in the cluster"
    assert int(cluster.cli(cluster.ports[0], "-c", "xlen", PREFIX + "events") or 0) > 0, "events reach the stream"

    log = servers[0].log()
    assert "redis cluster 127.0.0.1" in log and "secondary storage unavailable" not in log, log[-4000:]
    check_log(servers[0], *tokens, *private_keys(pki))


async def test_cluster_hot_path_gets_go_over_tls_to_the_slots_primary(cluster: RedisCluster, pki: Pki) -> None:
    """The hot path's pipelined GET client (one TLS connection per primary, routed by slot) is the one that answers:
    a failed TLS connection would be hidden by its fallback to redis-py's client, which the counts above include."""
    target = parse_redis_url(cluster.url + tls_query(pki))
    client = connect_redis(target, 1.0)
    getter = hot_path_getter(target, client, 1.0)
    assert isinstance(getter, SlotRoutedGetClient)
    key = f"authsidecar-tls-test:{{session:{secrets.token_hex(32)}}}"
    try:
        await client.set(key, b"v1")
        owner = next(port for port in cluster.ports if cluster.keys_on(port, key))
        assert await getter.get(key) == b"v1"  # the first GET loads redis-py's map
        before = get_calls(cluster, owner)
        for _ in range(5):
            assert await getter.get(key) == b"v1"
        assert getter.connected_to() == {owner}, "a pipelined TLS connection to the slot's primary only"
        assert get_calls(cluster, owner) - before == 5
    finally:
        await client.delete(key)
        await getter.close()
        await client.aclose()


async def test_cluster_with_the_wrong_ca_is_never_used(
    cluster: RedisCluster, pki: Pki, tmp_path: Path, pg_url: str, servers: list[Server], stubs_list: list[Stubs]
) -> None:
    """Another CA in ssl_ca_certs: the nodes' certificates fail verification, so the server never completes a
    handshake. It starts and reports SERVING (health follows the database only); whatever its calls answer, not one
    of its commands reaches the cluster: no GET, no document, and each startup node saw a handshake abandoned."""
    elsewhere = start(servers, stubs_list, tmp_path, {"DATABASE_URL": pg_url})  # no Redis: SQL + in-process
    user = await sign_up(elsewhere)
    gets_before = {port: get_calls(cluster, port) for port in cluster.ports}
    refused_before = [handshake_errors(cluster, [port]) for port in cluster.ports[:2]]

    stubs = start(servers, stubs_list, tmp_path, server_env(pg_url, cluster.url + tls_query(pki, "other-ca.pem")))
    assert servers[1].health() == SERVING
    # What it answers is the next test's subject; here: that nothing goes to the cluster.
    for call in [outcome(stubs, user.token) for _ in range(3)] + [sign_up(stubs), sign_out(stubs, user.token)]:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call

    assert {port: get_calls(cluster, port) for port in cluster.ports} == gets_before, "a GET reached the cluster"
    assert not cluster.keys(document_key(user.token) + "*"), "a document was written over an unverified connection"
    # It did try each startup node (the third is never discovered), and gave up during every handshake.
    refused = [handshake_errors(cluster, [port]) for port in cluster.ports[:2]]
    assert all(after > before for after, before in zip(refused, refused_before, strict=True)), (refused_before, refused)
    log = servers[1].log()
    for value in (TEST_SECRET, PASSWORD, user.token, *private_keys(pki)):
        assert value not in log, "a secret is in the server log"


async def test_cluster_with_the_wrong_ca_falls_back_to_sql(
    cluster: RedisCluster, pki: Pki, tmp_path: Path, pg_url: str, servers: list[Server], stubs_list: list[Stubs]
) -> None:
    """What the server should do with the wrong CA, as it does for a single server and Sentinel: report the cache
    unavailable and answer from SQL (revocation included), without a traceback."""
    stubs = start(servers, stubs_list, tmp_path, server_env(pg_url, cluster.url + tls_query(pki, "other-ca.pem")))
    user = await sign_up(stubs)
    for _ in range(3):
        assert await outcome(stubs, user.token) == "ok"
    other = await sign_up(stubs)
    await sign_out(stubs, user.token)
    assert await outcome(stubs, user.token) == "INVALID_TOKEN"
    assert await outcome(stubs, other.token) == "ok"
    log = servers[0].log()
    assert "secondary storage unavailable" in log and "rate limit counters: Redis unavailable" in log, log[-4000:]
    unavailable = next(line for line in log.splitlines() if "secondary storage unavailable" in line)
    assert "certificate verify failed" in unavailable.lower(), unavailable  # the operator is told why
    check_log(servers[0], user.token, other.token, *private_keys(pki))


async def test_sentinel_over_tls_with_a_failover(
    sentinel: RedisSentinel, pki: Pki, tmp_path: Path, pg_url: str, servers: list[Server], stubs_list: list[Stubs]
) -> None:
    old_primary = sentinel.primary
    nodes = [sentinel.primary, sentinel.replica, *sentinel.sentinels]
    assert not any(cli(port, "ping") for port in nodes), "every node should speak TLS only"
    assert sentinel.info_field(sentinel.replica, "replication", "master_link_status") == "up"  # replication: TLS
    stubs = start(servers, stubs_list, tmp_path, server_env(pg_url, sentinel.url + tls_query(pki)))
    users = [await sign_up(stubs) for _ in range(4)]
    tokens = [u.token for u in users]
    for token in tokens:
        assert await outcome(stubs, token) == "ok"  # fills the cache
    assert all(sentinel.keys_on(old_primary, document_key(token)) for token in tokens)

    before = get_calls(sentinel, old_primary)
    for _ in range(10):
        for token in tokens:
            assert await outcome(stubs, token) == "ok"
    assert get_calls(sentinel, old_primary) - before >= 10 * len(tokens), "validations are answered by the primary"
    assert get_calls(sentinel, sentinel.replica) == 0, "nothing reads from the replica"

    await sign_out(stubs, tokens[0])
    assert await outcome(stubs, tokens[0]) == "INVALID_TOKEN"
    assert sentinel.keys_on(old_primary, document_key(tokens[0]) + ":revoked")
    assert sentinel.keys_on(old_primary, PREFIX + "{ratelimit}*"), "the rate limit counters live on the primary"
    for _ in range(100):  # the replica has the documents (replicated over TLS)
        if sentinel.keys_on(sentinel.replica, document_key(tokens[1])):
            break
        await asyncio.sleep(0.05)
    assert sentinel.keys_on(sentinel.replica, document_key(tokens[1]))

    # Another CA: no sentinel and no data node is trusted; the server falls back to SQL, and reads nothing.
    gets = get_calls(sentinel, old_primary), get_calls(sentinel, sentinel.replica)
    refused = handshake_errors(sentinel, sentinel.sentinels)
    wrong = start(servers, stubs_list, tmp_path, server_env(pg_url, sentinel.url + tls_query(pki, "other-ca.pem")))
    for _ in range(3):
        assert await outcome(wrong, tokens[1]) == "ok"  # from SQL
        assert await outcome(wrong, tokens[0]) == "INVALID_TOKEN"
    assert (get_calls(sentinel, old_primary), get_calls(sentinel, sentinel.replica)) == gets
    assert handshake_errors(sentinel, sentinel.sentinels) > refused, "the server gave up on the sentinels' certificate"
    assert servers[1].stop() == 0
    log = servers[1].log()
    # Why, in the outage line: no sentinel could be used, or (a loaded machine) the TLS handshakes it tried took
    # longer than the connect timeout; which of the two ways to Redis fails first is a race.
    assert (
        "secondary storage unavailable (MasterNotFoundError" in log
        or "secondary storage unavailable (ConnectionError: cannot connect to Redis: timed out" in log
    ), log[-4000:]
    check_log(servers[1], *tokens, *private_keys(pki))

    new_primary = sentinel.fail_over()  # the sentinels reach the data nodes over TLS only
    assert new_primary == sentinel.replica
    new_before = get_calls(sentinel, new_primary)
    for token in tokens[1:]:  # the server follows the new primary within about a second; SQL answers meanwhile
        assert await outcome(stubs, token) == "ok"
    assert await outcome(stubs, tokens[0]) == "INVALID_TOKEN"  # revoked before the failover: still refused
    deadline = time.monotonic() + 5
    while get_calls(sentinel, new_primary) - new_before < len(tokens) - 1 and time.monotonic() < deadline:
        for token in tokens[1:]:
            assert await outcome(stubs, token) == "ok"
    assert get_calls(sentinel, new_primary) - new_before >= len(tokens) - 1, "reads should reach the new primary"
    old_after = get_calls(sentinel, old_primary)
    for token in tokens[1:] * 3:
        assert await outcome(stubs, token) == "ok"
    assert get_calls(sentinel, old_primary) == old_after, "nothing is read from the old primary"

    await sign_out(stubs, tokens[1])  # a revocation after the failover holds
    assert await outcome(stubs, tokens[1]) == "INVALID_TOKEN"
    assert sentinel.keys_on(new_primary, document_key(tokens[1]) + ":revoked")
    for token in tokens[2:]:
        assert await outcome(stubs, token) == "ok"
    check_log(servers[0], *tokens, *private_keys(pki))


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, tls: RedisTls) -> Iterator[int]:
    """One TLS-only Redis server (no plaintext port); its port."""
    node = _Servers(tmp_path_factory.mktemp("tls-single"), tls=tls)
    port = free_port()
    try:
        node.spawn(port)
        yield port
    finally:
        node.stop()


@pytest.fixture(scope="module")
def trust_options(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """The three ways a URL names the CA (a file, PEM text, a hashed directory), and a CA that signed nothing."""
    folder = tmp_path_factory.mktemp("ca-path")
    shutil.copy(pki.path("ca.pem"), folder / "ca.pem")
    subprocess.run(["openssl", "rehash", str(folder)], check=True, capture_output=True)
    return {
        "ssl_ca_certs": {"ssl_ca_certs": pki.path("ca.pem")},
        "ssl_ca_data": {"ssl_ca_data": Path(pki.path("ca.pem")).read_text()},
        "ssl_ca_path": {"ssl_ca_path": str(folder)},
        "wrong": {"ssl_ca_data": Path(pki.path("other-ca.pem")).read_text()},
    }


@pytest.mark.parametrize("trust", ["ssl_ca_certs", "ssl_ca_data", "ssl_ca_path"])
async def test_the_pipelined_connection_speaks_every_tls_option_redis_py_does(
    single: int, pki: Pki, trust_options: dict[str, dict[str, str]], trust: str
) -> None:
    """The session put and the rate-limit counters go over the pipelined connection, whose TLS context is built by
    redis-py's own connection class from the same URL options (found by review: with ssl_ca_data only redis-py
    could connect, and the limits silently became per-process); verification stays required."""

    def url(trusting: dict[str, str]) -> str:
        params = {"ssl_certfile": pki.path("authsidecar.pem"), "ssl_keyfile": pki.path("authsidecar.key")} | trusting
        return f"rediss://127.0.0.1:{single}/0?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())

    pipelined = PipelinedGetClient(url(trust_options[trust]), 2.0)
    limiter = RedisRateLimiter(connect_redis(url(trust_options[trust]), 2.0), f"tls-{secrets.token_hex(4)}:", pipelined)
    try:
        assert [await limiter.hit([("k", Limit(2, 60))]) for _ in range(2)] == [0.0, 0.0]
        assert pipelined.connected
        assert await limiter.hit([("k", Limit(2, 60))]) > 0
    finally:
        await limiter.close()

    wrong = PipelinedGetClient(url(trust_options["wrong"]), 2.0)  # a CA that did not sign the server's certificate
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        await wrong.call(b"PING")
    await wrong.close()
