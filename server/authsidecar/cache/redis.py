"""Redis secondary storage.

Layout under the configured prefix ``P``:

| key | value | TTL |
|---|---|---|
| ``P{<cache key>}`` (``P{session:<sha256>}``) | ``m1:<mac>:`` + JSON ``{"session", "user", "checkedAt"}`` | the session's remaining lifetime |
| ``P{<cache key>}:revoked`` | ``1``: a revoked session may not be cached again | how long invalidations are remembered |
| ``P active-sessions:<userId>`` | sorted set: cache key -> expiresAt (ms) | the furthest expiry |

The braces are a Redis Cluster hash tag: a document and its tombstone live in one slot, so the conditional write
is one script there too (the key is still derived from the token alone, as the hot path needs). On one server
(or behind Sentinel) each write is one script over all its keys; in a Cluster (``cluster=True``) the user's index
lives in another slot, so it is updated by a second command after the document's script: the index only serves
``evict_user``, whose stray entries or misses are harmless for the same reason as below.

No key holds a usable token (cache keys are digests). Every document is authenticated (cache/integrity.py); an
unsigned, altered or moved one is a miss, logged and counted. Writes are conditional on the tombstone (one Lua
script), so a validation that read the database just before a revocation does not put the revoked session back.
None of this is what makes revocation hold (services/coherence.py is); it keeps Redis tidy. Errors propagate;
ResilientSessionCache decides what they mean.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from redis.asyncio import Redis

from authsidecar.cache.codec import StaleDocument, decode_session, encode_session
from authsidecar.cache.integrity import DocumentSigner
from authsidecar.cache.memo import BoundedMemo
from authsidecar.cache.resp import HotGetter, run_script
from authsidecar.cache.topology import RedisClient, connect_redis
from authsidecar.domain.fields import Registry
from authsidecar.domain.models import SessionWithUser
from authsidecar.domain.ports import SessionCache

__all__ = ["RedisSessionCache", "connect_redis"]  # connect_redis: from cache/topology.py, re-exported

log = logging.getLogger(__name__)

_PUT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[5])
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[3], last[2]) end
return 1
"""


_EVICT_USER = """
local keys = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, key in ipairs(keys) do redis.call('DEL', ARGV[1] .. key .. '}') end
redis.call('DEL', KEYS[1])
return #keys
"""

# Cluster: one slot per script. The document's conditional write (KEYS: document, tombstone) ...
_PUT_DOCUMENT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

# ... then the user's index (KEYS: index; ARGV: cache key, expiresAt ms, now ms).
_INDEX = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], last[2]) end
return 1
"""

# A revocation (KEYS: document, tombstone; ARGV: the tombstone's ttl): tombstone first, then delete.
_TOMBSTONE = """
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
redis.call('DEL', KEYS[1])
return 1
"""
_FORGERY_LOG_INTERVAL = 10.0


class RedisSessionCache:
    """SessionCache on Redis, shared by every instance."""

    shared = True

    def __init__(
        self,
        client: RedisClient,
        prefix: str,
        signer: DocumentSigner,
        getter: HotGetter | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        registry: Registry | None = None,
        cluster: bool = False,
    ) -> None:
        self._registry = registry or Registry()
        self._redis = client
        self._getter = getter
        self._prefix = prefix
        self._open = prefix + "{"  # documents: P{<cache key>}
        self._cluster = cluster
        self._signer = signer
        self._mono = monotonic
        # Content-addressed decode memo: identical (key, bytes) verify and decode to the identical entry, so a
        # session validated again skips the MAC, JSON and dates. Freshness is unaffected: the GET happens on
        # every call.
        self._decoded: BoundedMemo[tuple[str, bytes], SessionWithUser] = BoundedMemo(4096)
        self._put = client.register_script(_PUT)
        self._evict_user = client.register_script(_EVICT_USER)
        self._put_document = client.register_script(_PUT_DOCUMENT)
        self._add_to_index = client.register_script(_INDEX)
        self._tombstone = client.register_script(_TOMBSTONE)
        self.refused = 0
        self._refusal_logged_at = -_FORGERY_LOG_INTERVAL

    def _index(self, user_id: str) -> str:
        return f"{self._prefix}active-sessions:{user_id}"

    async def get(self, key: str) -> SessionWithUser | None:
        """One GET; then (unless memoised) the MAC and a JSON parse. A document that fails either is a miss."""
        full = self._open + key + "}"
        raw = await (self._getter.get(full) if self._getter is not None else self._redis.get(full))
        if raw is None:
            return None
        if isinstance(raw, str):
            raw = raw.encode()
        memo_key = (full, raw)
        entry = self._decoded.get(memo_key)
        if entry is not None:
            return entry
        body = self._signer.verify(full, raw)
        if body is None:
            self._refuse("unauthenticated (forged, altered or moved)")
            return None
        try:
            entry = decode_session(body, self._registry)
        except StaleDocument:  # written under another configuration: a plain miss
            return None
        except (ValueError, KeyError, TypeError):
            self._refuse("malformed")
            return None
        self._decoded.put(memo_key, entry)
        return entry

    def _refuse(self, why: str) -> None:
        self.refused += 1
        now = self._mono()
        if now - self._refusal_logged_at >= _FORGERY_LOG_INTERVAL:
            self._refusal_logged_at = now
            log.warning("refused a cached session document: %s (%d refused so far)", why, self.refused)

    async def put(self, key: str, entry: SessionWithUser, ttl: int) -> None:
        """Cache unless revoked (tombstone), index under the user."""
        if ttl <= 0:
            return
        full = self._open + key + "}"
        expires_ms = int(entry.session.expires_at.timestamp() * 1000)
        document = self._signer.sign(full, encode_session(entry, self._registry))
        index = self._index(entry.session.user_id)
        now_ms = int(time.time() * 1000)
        if self._cluster:
            if await self._put_document(keys=[full, full + ":revoked"], args=[document, ttl]):
                await self._add_to_index(keys=[index], args=[key, expires_ms, now_ms])
            return
        # Over the hot path's pipelined connection (one server, or Sentinel's primary): a sign-in's only Redis write.
        await run_script(
            self._getter, self._put, [full, full + ":revoked", index], [document, ttl, key, expires_ms, now_ms]
        )

    async def invalidate(self, user_id: str, keys: Sequence[str], ttl: int) -> None:
        """Delete, tombstone and unindex, atomically (MULTI)."""
        if not keys:
            return
        if self._cluster:  # per document (one slot each), then the index
            for key in keys:
                full = self._open + key + "}"
                await self._tombstone(keys=[full, full + ":revoked"], args=[max(ttl, 1)])
            await self._redis.zrem(self._index(user_id), *keys)
            return
        assert isinstance(self._redis, Redis)
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in keys:
                full = self._open + key + "}"
                pipe.set(full + ":revoked", b"1", ex=max(ttl, 1))
                pipe.delete(full)
            pipe.zrem(self._index(user_id), *keys)
            await pipe.execute()

    async def evict_user(self, user_id: str) -> None:
        """Delete every session document indexed under the user, and the index."""
        index = self._index(user_id)
        if self._cluster:  # the documents are in other slots: one DEL each
            for key in await self._redis.zrange(index, 0, -1):
                await self._redis.delete(self._open + (key.decode() if isinstance(key, bytes) else str(key)) + "}")
            await self._redis.delete(index)
            return
        await self._evict_user(keys=[index], args=[self._open])

    async def close(self) -> None:
        """Close the connection pool."""
        if self._getter is not None:
            await self._getter.close()
        await self._redis.aclose()


def _check_port(cache: RedisSessionCache) -> SessionCache:
    return cache
