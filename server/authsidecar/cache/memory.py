"""In-process secondary storage (the embedded default) and the no-op cache (caching disabled)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from authsidecar.domain.models import SessionWithUser
from authsidecar.domain.ports import SessionCache

__all__ = ["MemorySessionCache", "NullSessionCache"]


class MemorySessionCache:
    """A bounded dict with per-entry expiry and revocation tombstones. Single event loop, so no locks.

    When full, the oldest-inserted entries are dropped (a miss only costs one SQL query).
    """

    shared = False

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: dict[str, tuple[SessionWithUser, float]] = {}
        self._tombstones: dict[str, float] = {}
        self._by_user: dict[str, set[str]] = {}
        self._max = max_entries
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> SessionWithUser | None:
        """The entry, unless missing or past its TTL."""
        return self.lookup(key)

    def lookup(self, key: str) -> SessionWithUser | None:
        """``get`` without the coroutine (for a tier in front of another cache)."""
        item = self._entries.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            self._drop(key)
            return None
        return item[0]

    async def put(self, key: str, entry: SessionWithUser, ttl: int) -> None:
        """Store unless the key was invalidated and its tombstone is still alive."""
        self.store(key, entry, ttl)

    def store(self, key: str, entry: SessionWithUser, ttl: float) -> None:
        """``put`` without the coroutine."""
        now = self._clock()
        tomb = self._tombstones.get(key)
        if tomb is not None:
            if tomb > now:
                return
            del self._tombstones[key]
        if key not in self._entries and len(self._entries) >= self._max:
            self._evict(now)
        self._entries[key] = (entry, now + ttl)
        self._by_user.setdefault(entry.session.user_id, set()).add(key)

    async def invalidate(self, user_id: str, keys: Sequence[str], ttl: int) -> None:
        """Drop the keys and refuse to re-cache them for ``ttl`` seconds."""
        self.forget(keys, ttl)

    def forget(self, keys: Sequence[str], ttl: float) -> None:
        """``invalidate`` without the coroutine."""
        until = self._clock() + max(ttl, 1)
        for key in keys:
            self._drop(key)
            self._tombstones[key] = until
        if len(self._tombstones) > self._max:
            now = self._clock()
            self._tombstones = {k: t for k, t in self._tombstones.items() if t > now}

    async def evict_user(self, user_id: str) -> None:
        """Drop the user's entries."""
        self.forget_user(user_id)

    def forget_user(self, user_id: str) -> None:
        """``evict_user`` without the coroutine."""
        for key in list(self._by_user.get(user_id, ())):
            self._drop(key)

    def user_keys(self, user_id: str) -> set[str]:
        """Keys cached for a user (the per-user index)."""
        return set(self._by_user.get(user_id, ()))

    async def purge(self) -> None:
        """Forget every entry (tombstones stay)."""
        self._entries.clear()
        self._by_user.clear()

    async def close(self) -> None:
        """Forget everything."""
        await self.purge()
        self._tombstones.clear()

    def _drop(self, key: str) -> None:
        item = self._entries.pop(key, None)
        if item is not None:
            keys = self._by_user.get(item[0].session.user_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_user[item[0].session.user_id]

    def _evict(self, now: float) -> None:
        expired = [k for k, (_, exp) in self._entries.items() if exp <= now]
        for key in expired:
            self._drop(key)
        # Still full: drop the oldest tenth (dicts keep insertion order).
        overflow = len(self._entries) - self._max + 1
        if overflow > 0:
            for key in list(self._entries)[: max(overflow, self._max // 10)]:
                self._drop(key)


class NullSessionCache:
    """No secondary storage: every validation goes to SQL."""

    shared = False

    async def get(self, key: str) -> SessionWithUser | None:
        """Always a miss."""
        return None

    async def put(self, key: str, entry: SessionWithUser, ttl: int) -> None:
        """Nothing to store."""

    async def invalidate(self, user_id: str, keys: Sequence[str], ttl: int) -> None:
        """Nothing to invalidate."""

    async def evict_user(self, user_id: str) -> None:
        """Nothing to drop."""

    async def close(self) -> None:
        """Nothing to release."""


def _check_ports(memory: MemorySessionCache, null: NullSessionCache) -> tuple[SessionCache, SessionCache]:
    return memory, null
