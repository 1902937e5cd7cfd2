"""An in-process tier in front of the shared cache (Redis): a cache hit without a network round trip.

Why it is safe: nothing cached is served unless services/coherence.py trusts it, whichever tier it came from. A
snapshot is trusted only while this instance has read the invalidation log within ``bound`` seconds (on
Postgres a NOTIFY wakes the reader at once), only within ``trust_seconds`` of its check against SQL, and never
once its session is among the revoked ones or its user has a newer version. A revocation made by this instance
empties both tiers before its RPC answers; one made by another instance is learnt from the log, after which the
local copy is refused by the same rules (and dropped when met). So the in-process tier changes where a trusted
snapshot comes from, not which snapshots are trusted.

Memory: at most ``max_entries`` sessions (oldest dropped first); entries also leave after ``max_age`` seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

from authsidecar.cache.memory import MemorySessionCache
from authsidecar.domain.models import SessionWithUser
from authsidecar.domain.ports import SessionCache

__all__ = ["TieredSessionCache"]


class TieredSessionCache:
    """A bounded in-process dict read first, then the shared cache (whose hits fill the local tier)."""

    shared = True

    def __init__(self, local: MemorySessionCache, remote: SessionCache, max_age: float) -> None:
        self.local = local
        self.remote = remote
        self._max_age = max_age
        self.local_hits = 0

    async def get(self, key: str) -> SessionWithUser | None:
        """The local copy when there is one; otherwise the shared cache's, kept locally."""
        entry = self.local.lookup(key)
        if entry is not None:
            self.local_hits += 1
            return entry
        entry = await self.remote.get(key)
        if entry is not None:
            self.local.store(key, entry, self._max_age)
        return entry

    async def put(self, key: str, entry: SessionWithUser, ttl: int) -> None:
        """Both tiers (each refuses a key invalidated within its tombstone's lifetime)."""
        self.local.store(key, entry, min(ttl, self._max_age))
        await self.remote.put(key, entry, ttl)

    async def invalidate(self, user_id: str, keys: Sequence[str], ttl: int) -> None:
        """The local tier first (no await between a commit and its local effect), then the shared one."""
        self.local.forget(keys, ttl)
        await self.remote.invalidate(user_id, keys, ttl)

    async def evict_user(self, user_id: str) -> None:
        """Drop the user's sessions from both tiers."""
        self.local.forget_user(user_id)
        await self.remote.evict_user(user_id)

    async def close(self) -> None:
        """Close the shared cache; forget the local copies."""
        await self.local.close()
        await self.remote.close()


def _check_port(cache: TieredSessionCache) -> SessionCache:
    return cache
