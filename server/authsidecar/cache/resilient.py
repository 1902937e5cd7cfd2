"""Fail-open wrapper for a remote SessionCache: when Redis is down, validation falls back to SQL.

After a failure the cache is bypassed for ``retry_after`` seconds, then probed again by the next call. Writes
and invalidations that fail meanwhile are dropped: nothing here needs replaying, because no cached document is
trusted on its own (services/coherence.py checks every hit against the invalidation log, which lives in the
store of record), and a stale document left behind is removed when it is met.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from authsidecar.cache.topology import UNAVAILABLE_ERRORS, describe_unavailable
from authsidecar.domain.models import SessionWithUser
from authsidecar.domain.ports import SessionCache

__all__ = ["ResilientSessionCache"]

log = logging.getLogger(__name__)

_ERRORS = UNAVAILABLE_ERRORS


class ResilientSessionCache:
    """SessionCache that never raises: errors trip a breaker and reads become misses."""

    def __init__(
        self, inner: SessionCache, retry_after: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._inner = inner
        self._retry_after = retry_after
        self._clock = clock
        self._down = False
        self._probe_at = 0.0
        self.shared = inner.shared
        self.errors = 0
        self.fallbacks = 0

    @property
    def available(self) -> bool:
        """False while the breaker is open (for diagnostics)."""
        return not self._down

    def _bypassed(self) -> bool:
        return self._down and self._clock() < self._probe_at

    async def get(self, key: str) -> SessionWithUser | None:
        """Inner get; None while down."""
        if self._bypassed():
            self.fallbacks += 1
            return None
        try:
            entry = await self._inner.get(key)
        except _ERRORS as exc:
            self._trip(exc)
            self.fallbacks += 1
            return None
        self._recovered()
        return entry

    async def put(self, key: str, entry: SessionWithUser, ttl: int) -> None:
        """Inner put; skipped while down."""
        await self._call(self._inner.put(key, entry, ttl))

    async def invalidate(self, user_id: str, keys: Sequence[str], ttl: int) -> None:
        """Inner invalidate; skipped while down (the invalidation log is what counts)."""
        await self._call(self._inner.invalidate(user_id, keys, ttl))

    async def evict_user(self, user_id: str) -> None:
        """Inner evict_user; skipped while down."""
        await self._call(self._inner.evict_user(user_id))

    async def close(self) -> None:
        """Close the inner cache."""
        await self._inner.close()

    async def _call(self, operation: Coroutine[Any, Any, None]) -> None:
        if self._bypassed():
            operation.close()
            return
        try:
            await operation
        except _ERRORS as exc:
            self._trip(exc)
        else:
            self._recovered()

    def _trip(self, exc: BaseException) -> None:
        self.errors += 1
        self._probe_at = self._clock() + self._retry_after
        if not self._down:
            self._down = True
            log.warning(
                "secondary storage unavailable (%s); validating sessions against the database",
                describe_unavailable(exc),
            )

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            log.warning("secondary storage is back after %d fallbacks to the database", self.fallbacks)
