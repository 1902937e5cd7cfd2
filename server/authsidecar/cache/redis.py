"""Redis secondary storage.

Layout under the configured prefix ``P``:

| key | value | TTL |
|---|---|---|
| ``P<cache key>`` (``P session:<sha256>``) | JSON ``{"session": {...}, "user": {...}}`` | the session's remaining lifetime |
| ``P<cache key>:revoked`` | ``1``: a revoked session may not be cached again | the session lifetime (expires_in) |
| ``P active-sessions:<userId>`` | sorted set: cache key -> expiresAt (ms) | the furthest expiry |
| ``P user-changed:<userId>`` | ``1``: the user's profile just changed, refills refused | 60 s |

Writes are conditional on the tombstone (one Lua script), so a validation that read the database just before a
revocation cannot put the revoked session back. Errors propagate; ResilientSessionCache decides what they mean.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from authsidecar.cache.codec import decode_session, encode_session
from authsidecar.cache.memo import BoundedMemo
from authsidecar.cache.resp import PipelinedGetClient
from authsidecar.domain.models import SessionWithUser
from authsidecar.domain.ports import USER_REFILL_PAUSE_SECONDS, SessionCache

__all__ = ["RedisSessionCache", "connect_redis"]

log = logging.getLogger(__name__)

_PUT = """
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[5])
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[3], last[2]) end
return 1
"""


_EVICT_USER = """
local keys = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, key in ipairs(keys) do redis.call('DEL', ARGV[1] .. key) end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
return #keys
"""


def connect_redis(url: str, timeout: float) -> Redis:
    """A client that fails fast: short timeouts and no retry, except one immediate reconnect when a pooled
    connection turns out to be dead (as after a Redis restart); the caller falls back to SQL instead of waiting."""
    client: Redis = Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        decode_responses=False,
    )
    return client


class RedisSessionCache:
    """SessionCache on Redis."""

    def __init__(self, client: Redis, prefix: str, getter: PipelinedGetClient | None = None) -> None:
        self._redis = client
        self._getter = getter
        self._prefix = prefix
        # Content-addressed decode memo: identical bytes decode to the identical entry, so a session validated
        # again skips JSON and date parsing. Freshness is unaffected: the GET still happens on every call.
        self._decoded: BoundedMemo[bytes | str, SessionWithUser] = BoundedMemo(4096)
        self._put = client.register_script(_PUT)
        self._evict_user = client.register_script(_EVICT_USER)

    def _index(self, user_id: str) -> str:
        return f"{self._prefix}active-sessions:{user_id}"

    def _paused(self, user_id: str) -> str:
        return f"{self._prefix}user-changed:{user_id}"

    async def get(self, key: str) -> SessionWithUser | None:
        """One GET and a JSON parse; a malformed document counts as a miss."""
        full = self._prefix + key
        raw = await (self._getter.get(full) if self._getter is not None else self._redis.get(full))
        if raw is None:
            return None
        entry = self._decoded.get(raw)
        if entry is not None:
            return entry
        try:
            entry = decode_session(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed cached session document")
            return None
        self._decoded.put(raw, entry)
        return entry

    async def put(self, key: str, entry: SessionWithUser, ttl: int) -> None:
        """Cache unless revoked (tombstone), index under the user."""
        if ttl <= 0:
            return
        full = self._prefix + key
        expires_ms = int(entry.session.expires_at.timestamp() * 1000)
        await self._put(
            keys=[full, full + ":revoked", self._index(entry.session.user_id), self._paused(entry.session.user_id)],
            args=[encode_session(entry), ttl, key, expires_ms, int(time.time() * 1000)],
        )

    async def invalidate(self, user_id: str, keys: Sequence[str], ttl: int) -> None:
        """Delete, tombstone and unindex, atomically (MULTI)."""
        if not keys:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in keys:
                full = self._prefix + key
                pipe.set(full + ":revoked", b"1", ex=max(ttl, 1))
                pipe.delete(full)
            pipe.zrem(self._index(user_id), *keys)
            await pipe.execute()

    async def evict_user(self, user_id: str) -> None:
        """Delete every session document indexed under the user, and the index."""
        await self._evict_user(
            keys=[self._index(user_id), self._paused(user_id)], args=[self._prefix, USER_REFILL_PAUSE_SECONDS]
        )

    async def purge(self) -> None:
        """Delete every session document and index under the prefix (tombstones stay)."""
        batch: list[bytes] = []
        async for name in self._redis.scan_iter(match=self._prefix.replace("*", r"\*") + "*", count=1000):
            if not name.endswith(b":revoked"):
                batch.append(name)
            if len(batch) >= 500:
                await self._redis.unlink(*batch)
                batch.clear()
        if batch:
            await self._redis.unlink(*batch)

    async def close(self) -> None:
        """Close the connection pool."""
        if self._getter is not None:
            await self._getter.close()
        await self._redis.aclose()


def _check_port(cache: RedisSessionCache) -> SessionCache:
    return cache
