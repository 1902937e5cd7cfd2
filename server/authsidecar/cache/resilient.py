"""Fail-open wrapper for a remote SessionCache: when Redis is down, validation falls back to SQL.

After a failure the cache is bypassed for ``retry_after`` seconds, then probed again. Invalidations that could
not be delivered while it was down are kept and replayed before the cache is read again, so a session revoked
during an outage is not served from a stale entry afterwards; if more were lost than can be kept, every cached
session is purged on recovery instead (a cache may always be emptied).

Limits: the pending list lives in this process. Another instance sharing the Redis may read a stale entry until
this one has replayed (within ``retry_after`` of Redis answering again, if this instance gets traffic), and a
crash loses the list.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from redis.exceptions import RedisError

from authsidecar.domain.models import SessionWithUser
from authsidecar.domain.ports import SessionCache

__all__ = ["ResilientSessionCache"]

log = logging.getLogger(__name__)

_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class ResilientSessionCache:
    """SessionCache that never raises: errors trip a breaker and reads become misses."""

    def __init__(
        self,
        inner: SessionCache,
        retry_after: float = 1.0,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._retry_after = retry_after
        self._max_pending = max_pending
        self._clock = clock
        self._down = False
        self._probe_at = 0.0
        self._pending: dict[str, tuple[str, int]] = {}
        self._pending_users: set[str] = set()
        self._overflowed = False
        self._recovering = False
        self.errors = 0
        self.fallbacks = 0

    @property
    def available(self) -> bool:
        """False while the breaker is open (for diagnostics)."""
        return not self._down

    async def get(self, key: str) -> SessionWithUser | None:
        """Inner get; None while down."""
        if self._down and not await self._try_recover():
            self.fallbacks += 1
            return None
        try:
            return await self._inner.get(key)
        except _ERRORS as exc:
            self._trip(exc)
            self.fallbacks += 1
            return None

    async def put(self, key: str, entry: SessionWithUser, ttl: int) -> None:
        """Inner put; skipped while down."""
        if self._down and not await self._try_recover():
            return
        try:
            await self._inner.put(key, entry, ttl)
        except _ERRORS as exc:
            self._trip(exc)

    async def invalidate(self, user_id: str, keys: Sequence[str], ttl: int) -> None:
        """Inner invalidate; remembered for replay when it cannot be delivered."""
        if not self._down:
            try:
                await self._inner.invalidate(user_id, keys, ttl)
                return
            except _ERRORS as exc:
                self._trip(exc)
        for key in keys:
            if len(self._pending) >= self._max_pending:
                self._overflowed = True
                break
            self._pending[key] = (user_id, ttl)

    async def evict_user(self, user_id: str) -> None:
        """Inner evict_user; remembered for replay when it cannot be delivered."""
        if not self._down:
            try:
                await self._inner.evict_user(user_id)
                return
            except _ERRORS as exc:
                self._trip(exc)
        if len(self._pending_users) >= self._max_pending:
            self._overflowed = True
        else:
            self._pending_users.add(user_id)

    async def purge(self) -> None:
        """Inner purge."""
        await self._inner.purge()

    async def close(self) -> None:
        """Close the inner cache."""
        await self._inner.close()

    def _trip(self, exc: BaseException) -> None:
        self.errors += 1
        self._probe_at = self._clock() + self._retry_after
        if not self._down:
            self._down = True
            log.warning(
                "secondary storage unavailable (%s); validating sessions against the database",
                type(exc).__name__,
            )

    async def _try_recover(self) -> bool:
        now = self._clock()
        if now < self._probe_at or self._recovering:
            return False
        self._recovering = True  # one recovery at a time; other callers keep using SQL meanwhile
        try:
            while self._overflowed or self._pending or self._pending_users:
                if self._overflowed:
                    self._overflowed = False
                    try:
                        await self._inner.purge()
                    except BaseException:
                        self._overflowed = True
                        raise
                if self._pending:
                    key, (user_id, ttl) = next(iter(self._pending.items()))
                    await self._inner.invalidate(user_id, [key], ttl)
                    self._pending.pop(key, None)
                if self._pending_users:
                    user_id = next(iter(self._pending_users))
                    await self._inner.evict_user(user_id)
                    self._pending_users.discard(user_id)
            # Nothing is pending and no await separates that check from closing the breaker.
            self._down = False
        except _ERRORS as exc:
            self._trip(exc)
            return False
        finally:
            self._recovering = False
        log.warning("secondary storage is back after %d fallbacks to the database", self.fallbacks)
        return True
