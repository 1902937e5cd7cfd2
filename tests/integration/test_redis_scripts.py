"""Scripts sent over the hot path's pipelined connection (the session put, the rate-limit counters): the same
effect as through redis-py, still working after the server forgot its scripts (SCRIPT FLUSH, a restart), and a
connection that stops answering replaced."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from authsidecar.cache.integrity import DocumentSigner, derive_key
from authsidecar.cache.ratelimit import Limit, RedisRateLimiter
from authsidecar.cache.redis import RedisSessionCache
from authsidecar.cache.resp import PipelinedGetClient
from authsidecar.cache.topology import connect_redis
from authsidecar.domain.models import Session, SessionWithUser, User
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.redis


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"authsidecar-test-scripts-{secrets.token_hex(4)}:"
    yield prefix
    admin = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
    finally:
        await admin.aclose()


def _entry() -> SessionWithUser:
    now = datetime.now(UTC).replace(microsecond=0)
    user = User(secrets.token_hex(16), "Ada", f"ada-{secrets.token_hex(4)}@example.com", True, None, now, now)
    session = Session(
        secrets.token_hex(16), user.id, secrets.token_hex(32), now + timedelta(hours=1), now, now, "10.0.0.1", "ua"
    )
    return SessionWithUser(session, user)


async def _flush_scripts() -> None:
    admin = Redis.from_url(REDIS_URL)
    try:
        await admin.script_flush()
    finally:
        await admin.aclose()


async def test_session_put_over_the_pipelined_connection(prefix: str) -> None:
    signer = DocumentSigner(derive_key("x" * 32, "cache-documents"))
    pipelined = PipelinedGetClient(REDIS_URL, 1.0)
    cache = RedisSessionCache(connect_redis(REDIS_URL, 1.0), prefix, signer, pipelined)
    plain = RedisSessionCache(connect_redis(REDIS_URL, 1.0), prefix, signer)  # redis-py for everything
    try:
        for flush in (False, True):
            if flush:
                await _flush_scripts()  # the server no longer has the put script: redis-py loads it
            entry = _entry()
            key = f"session:{entry.session.stored_token}"
            await cache.put(key, entry, 3600)
            assert pipelined.connected
            assert await plain.get(key) == entry
            # indexed under the user as the redis-py path does: evicting the user removes it
            await plain.evict_user(entry.user.id)
            assert await cache.get(key) is None
            # a revoked key's tombstone refuses the put, as in the script
            await plain.invalidate(entry.user.id, [key], 60)
            await cache.put(key, entry, 3600)
            assert await plain.get(key) is None
    finally:
        await cache.close()
        await plain.close()


async def test_rate_limit_counters_over_the_pipelined_connection(prefix: str) -> None:
    pipelined = PipelinedGetClient(REDIS_URL, 1.0)
    limiter = RedisRateLimiter(connect_redis(REDIS_URL, 1.0), prefix, pipelined)
    plain = RedisRateLimiter(connect_redis(REDIS_URL, 1.0), prefix)
    limit = Limit(3, 60)
    try:
        for flush in (False, True):
            key = f"k{flush}"
            if flush:
                await _flush_scripts()
            assert [await limiter.hit([(key, limit)]) for _ in range(3)] == [0.0, 0.0, 0.0]
            assert pipelined.connected
            assert 0 < await limiter.hit([(key, limit)]) <= 20  # one every 20 s once the burst is spent
            assert 0 < await plain.hit([(key, limit)]) <= 20  # the same counter, seen through redis-py
            await limiter.reset(key)
            assert await plain.hit([(key, limit)]) == 0.0
    finally:
        await limiter.close()
        await plain.close()


async def test_a_connection_that_stops_answering_is_replaced() -> None:
    """A connection dead without a FIN or RST (a lost NAT entry) would time out every later call until the kernel
    gives up on it: a call that times out retires it, and the next call connects again (found by review)."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = PipelinedGetClient(f"redis://127.0.0.1:{port}/0", 0.2)
    try:
        for attempt in range(1, 4):
            with pytest.raises(TimeoutError):
                await client.call(b"PING")
            assert not client.connected
            assert len(accepted) == attempt  # each call after a timeout came on a new connection
    finally:
        await client.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
