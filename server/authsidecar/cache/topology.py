"""Where Redis is: one server, a Sentinel-managed primary, or a Cluster; parsed from REDIS_URL, and the clients
built for it, with bounded connection pools.

``REDIS_URL`` forms:

- one server: ``redis://[[user]:password@]host[:6379][/db]``, ``rediss://...`` (TLS), ``unix:///path?db=N``;
- Sentinel: ``redis+sentinel://[[user]:password@]host1[:26379],host2[:26379]/<service>[/db]`` (``rediss+sentinel``
  for TLS to the sentinels and the data nodes); the userinfo is the data nodes' credentials, the sentinels' own
  come from ``?sentinel_password=...`` (and ``sentinel_username``). The primary is asked of the sentinels on
  every (re)connect, and a connection to a server that is no longer the primary is dropped, so a failover is
  followed and nothing is written to a replica;
- Cluster: ``redis+cluster://[[user]:password@]host1[:6379],host2[:6379]`` (``rediss+cluster`` for TLS; database 0
  only): any reachable nodes, the rest is discovered.

Every pool is bounded (``max_connections`` per pool; per node in a Cluster) and a caller waits at most the Redis
timeout for a connection, then gets a ConnectionError (the callers fall back to SQL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from authsidecar.cache.cluster_get import SlotRoutedGetClient
from authsidecar.cache.resp import HotGetter, PipelinedGetClient

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "RedisClient",
    "RedisTarget",
    "connect_redis",
    "hot_path_getter",
    "parse_redis_url",
]

RedisClient: TypeAlias = Redis | RedisCluster
DEFAULT_MAX_CONNECTIONS = 8
_SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
_CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
_SERVER_SCHEMES = {"redis", "rediss", "unix"}
_TLS_PARAMS = {"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"}
_SENTINEL_PARAMS = {"sentinel_password", "sentinel_username"}
_SERVER_PARAMS = set(URL_QUERY_ARGUMENT_PARSERS) | _TLS_PARAMS | {"ssl_ca_path", "ssl_ca_data", "client_name"}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed REDIS_URL. ``url`` is the original (one server) or a data-node URL template (Sentinel)."""

    mode: Literal["server", "sentinel", "cluster"]
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: bool = False
    tls_options: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        """For the start-up line: no credentials."""
        if self.mode == "server":
            parts = urlsplit(self.url)
            if parts.scheme == "unix":
                return f"redis {parts.path}"
            return f"redis {parts.hostname or 'localhost'}:{parts.port or 6379}"
        nodes = ",".join(f"{h}:{p}" for h, p in self.nodes)
        if self.mode == "sentinel":
            return f"redis sentinel {nodes} (service {self.service}, db {self.db})"
        return f"redis cluster {nodes}"


def parse_redis_url(url: str) -> RedisTarget:
    """Parse and check REDIS_URL; raises ValueError with a one-line reason (without the URL: it may hold a
    password)."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(
            "expected redis://host:port/db, redis+sentinel://host:26379/<service> or redis+cluster://host:port"
        )
    if scheme in _SERVER_SCHEMES:
        try:
            parse_url(url)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        parts = urlsplit(url)
        unknown = sorted({k for k, _ in parse_qsl(parts.query)} - _SERVER_PARAMS)
        if unknown:  # redis-py would pass it to the connection, which fails only when first used
            raise ValueError(f"{scheme}://: unknown parameter {unknown[0]!r}")
        if scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
            raise ValueError(f"{scheme}://: expected /<db number> after the host, got {parts.path}")
        return RedisTarget("server", url, tls=scheme == "rediss")
    if scheme in _SENTINEL_SCHEMES:
        return _parse_multi(scheme, rest, "sentinel", 26379, _SENTINEL_SCHEMES[scheme])
    if scheme in _CLUSTER_SCHEMES:
        return _parse_multi(scheme, rest, "cluster", 6379, _CLUSTER_SCHEMES[scheme])
    raise ValueError(
        f"unsupported scheme {scheme!r}: use redis://, rediss://, unix://, redis+sentinel://, rediss+sentinel://,"
        " redis+cluster:// or rediss+cluster://"
    )


def _parse_multi(
    scheme: str, rest: str, mode: Literal["sentinel", "cluster"], default_port: int, tls: bool
) -> RedisTarget:
    rest, _, fragment = rest.partition("#")
    if fragment:
        raise ValueError(f"{scheme}:// takes no #fragment")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = tuple(_node(item, default_port, scheme) for item in hosts.split(","))
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        allowed = (_SENTINEL_PARAMS if mode == "sentinel" else set()) | (_TLS_PARAMS if tls else set())
        if key not in allowed:
            raise ValueError(f"{scheme}://: unknown parameter {key!r} (known: {', '.join(sorted(allowed)) or 'none'})")
        params[key] = value
    segments = [unquote(s) for s in path.split("/")] if path else []
    service, db = "", 0
    if mode == "sentinel":
        if not segments or not segments[0]:
            raise ValueError(
                f"{scheme}://: the service name is missing (…/<service>[/db], as in the sentinels' config)"
            )
        service = segments.pop(0)
    if len(segments) > 1 or (segments and not segments[0].isdigit()):
        raise ValueError(f"{scheme}://: expected /<db number> after the hosts, got /{'/'.join(segments)}")
    db = int(segments[0]) if segments else 0
    if mode == "cluster" and db != 0:
        raise ValueError(f"{scheme}://: a Redis Cluster has only database 0")
    tls_options = tuple((k, v) for k, v in params.items() if k in _TLS_PARAMS)
    # The data nodes' URL, host filled in at connect time (for the hot path's pipelined clients).
    creds = ""
    if username or password:
        creds = f"{quote(username or '', safe='')}:{quote(password or '', safe='')}@"
    extra = "&".join(f"{k}={quote(v, safe='')}" for k, v in tls_options)
    data_url = f"{'rediss' if tls else 'redis'}://{creds}node/{db}" + (f"?{extra}" if extra else "")
    return RedisTarget(
        mode,
        data_url,
        nodes,
        service,
        db,
        username,
        password,
        params.get("sentinel_username") or None,
        params.get("sentinel_password") or None,
        tls,
        tls_options,
    )


def _node(item: str, default_port: int, scheme: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [IPv6]:port
        host, _, tail = item[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ValueError(f"{scheme}://: expected host[:port][,host[:port]...], got an empty host")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ValueError(f"{scheme}://: invalid port {port_text!r}")
    return host, int(port_text) if port_text else default_port


# What a Redis call raises when Redis cannot serve it (down, unreachable, refusing TLS, timed out): the callers
# fall back to SQL. redis-py's RedisClusterException ("Redis Cluster cannot be connected") is not a RedisError.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError, TimeoutError)


def describe_unavailable(exc: BaseException) -> str:
    """The error's type and the first line of its message, for a log line (redis-py's messages name the node and
    the cause, e.g. a failed certificate check, never a password)."""
    message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _retry() -> Retry:
    # Fail fast: one immediate reconnect when a pooled connection turns out to be dead (a Redis restart, a
    # failover that closed it); the caller falls back to SQL instead of waiting.
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The primary's pool: bounded, and a caller waits (up to ``timeout``) for a free connection rather than
    failing at once."""


def connect_redis(
    url: str | RedisTarget, timeout: float, max_connections: int = DEFAULT_MAX_CONNECTIONS
) -> RedisClient:
    """A client that fails fast (short timeouts, no retry but one immediate reconnect) with at most
    ``max_connections`` connections (per node in a Cluster). Raises ValueError on a malformed URL."""
    target = url if isinstance(url, RedisTarget) else parse_redis_url(url)
    socket: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    tls: dict[str, Any] = dict(target.tls_options)
    if target.mode == "server":
        pool = BlockingConnectionPool.from_url(
            target.url, max_connections=max_connections, timeout=timeout, retry=_retry(), **socket
        )
        return Redis.from_pool(pool)
    if target.mode == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        return RedisCluster(
            startup_nodes=nodes,
            username=target.username,
            password=target.password,
            max_connections=max_connections,
            retry=_retry(),
            ssl=target.tls,
            **tls,
            **socket,
        )
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.nodes),
        username=target.username,
        password=target.password,
        db=target.db,
        retry=_retry(),
        ssl=target.tls,
        **tls,
        **socket,
    )
    # The sentinels' own clients: used one command at a time, on (re)connects only.
    sentinel.sentinels = [
        Redis.from_pool(
            BlockingConnectionPool(
                host=host,
                port=port,
                max_connections=2,
                timeout=timeout,
                username=target.sentinel_username,
                password=target.sentinel_password,
                **_tls_connection(target),
                **socket,
            )
        )
        for host, port in target.nodes
    ]
    client: Redis = sentinel.master_for(
        target.service,
        connection_pool_class=_BlockingSentinelPool,
        max_connections=max_connections,
        timeout=timeout,
        check_connection=False,
    )
    return client


def _tls_connection(target: RedisTarget) -> dict[str, Any]:
    if not target.tls:
        return {}
    from redis.asyncio.connection import SSLConnection

    return {"connection_class": SSLConnection, **dict(target.tls_options)}


def hot_path_getter(target: RedisTarget, client: RedisClient, timeout: float) -> HotGetter:
    """The pipelined GET client of the hot path: to the one server, to the primary the sentinels name (re-asked
    on every reconnect), or, in a Cluster, to the primary of the key's slot (cluster_get.py)."""
    if target.mode == "server":
        return PipelinedGetClient(target.url, timeout)
    if target.mode == "cluster":
        assert isinstance(client, RedisCluster)
        return SlotRoutedGetClient(client, target.url, timeout)
    assert isinstance(client, Redis)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)

    async def locate() -> tuple[str, int]:
        # Through the pool: when the primary changed, its idle connections to the old one are dropped too.
        host, port = await pool.get_master_address()  # type: ignore[no-untyped-call]
        return str(host), int(port)

    return PipelinedGetClient(target.url, timeout, locate=locate)
