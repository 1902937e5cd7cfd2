"""The in-process tier in front of the shared cache: what it reads, fills, forgets and refuses."""

from __future__ import annotations

import pytest

from authsidecar.cache.memory import MemorySessionCache
from authsidecar.cache.tiered import TieredSessionCache
from tests.unit.test_cache import FakeClock, make_entry


class CountingCache(MemorySessionCache):
    """A stand-in for the shared cache that counts its calls (a MemorySessionCache of its own)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(max_entries=1000, clock=clock)
        self.gets = 0
        self.invalidated: list[tuple[str, list[str]]] = []
        self.evicted: list[str] = []

    async def get(self, key: str):  # type: ignore[no-untyped-def]
        self.gets += 1
        return await super().get(key)

    async def invalidate(self, user_id: str, keys, ttl: int) -> None:  # type: ignore[no-untyped-def]
        self.invalidated.append((user_id, list(keys)))
        await super().invalidate(user_id, keys, ttl)

    async def evict_user(self, user_id: str) -> None:
        self.evicted.append(user_id)
        await super().evict_user(user_id)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def remote(clock: FakeClock) -> CountingCache:
    return CountingCache(clock)


@pytest.fixture
def tiered(remote: CountingCache, clock: FakeClock) -> TieredSessionCache:
    return TieredSessionCache(MemorySessionCache(max_entries=100, clock=clock), remote, max_age=30)


async def test_a_shared_hit_fills_the_local_tier_and_the_next_read_stays_local(
    tiered: TieredSessionCache, remote: CountingCache
) -> None:
    entry = make_entry()
    await remote.put("k", entry, 3600)
    assert await tiered.get("k") is entry
    assert await tiered.get("k") is entry
    assert remote.gets == 1 and tiered.local_hits == 1


async def test_local_copies_leave_after_max_age(
    tiered: TieredSessionCache, remote: CountingCache, clock: FakeClock
) -> None:
    await tiered.put("k", make_entry(), 3600)
    assert await tiered.get("k") is not None and remote.gets == 0
    clock.advance(31)
    assert await tiered.get("k") is not None and remote.gets == 1  # from the shared tier again


async def test_a_short_lived_session_is_kept_locally_no_longer_than_its_ttl(
    tiered: TieredSessionCache, remote: CountingCache, clock: FakeClock
) -> None:
    await tiered.put("k", make_entry(), 5)
    clock.advance(6)
    assert await tiered.get("k") is None and remote.gets == 1


async def test_invalidate_empties_both_tiers_and_a_racing_refill_is_refused(
    tiered: TieredSessionCache, remote: CountingCache
) -> None:
    entry = make_entry()
    await tiered.put("k", entry, 3600)
    await tiered.invalidate(entry.session.user_id, ["k"], 120)
    assert remote.invalidated == [(entry.session.user_id, ["k"])]
    assert await tiered.get("k") is None
    await tiered.put("k", entry, 3600)  # a validation that read SQL just before the revocation
    assert await tiered.get("k") is None


async def test_evict_user_empties_both_tiers(tiered: TieredSessionCache, remote: CountingCache) -> None:
    entry = make_entry()
    await tiered.put("k", entry, 3600)
    await tiered.evict_user(entry.session.user_id)
    assert remote.evicted == [entry.session.user_id]
    assert await tiered.get("k") is None


async def test_the_local_tier_is_bounded(remote: CountingCache, clock: FakeClock) -> None:
    local = MemorySessionCache(max_entries=100, clock=clock)
    tiered = TieredSessionCache(local, remote, max_age=30)
    for i in range(1000):
        await tiered.put(f"k{i}", make_entry(session_id=f"{i:032d}", token=f"{i:064d}"), 3600)
    assert len(local) <= 100
    assert await tiered.get("k999") is not None  # the newest stay


def test_the_tier_is_on_with_redis_and_off_with_an_outage_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """With AUTHSIDECAR_OUTAGE_GRACE copies stay trusted while the log cannot be read: a local one would outlive
    a revocation another instance removed from Redis, so the tier is left out."""
    from authsidecar.assembly import build_cache
    from authsidecar.cache.resilient import ResilientSessionCache
    from authsidecar.config import load_settings

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("AUTHSIDECAR_SECRET", "s" * 40)
    assert isinstance(build_cache(load_settings()), TieredSessionCache)
    monkeypatch.setenv("AUTHSIDECAR_OUTAGE_GRACE", "30")
    assert isinstance(build_cache(load_settings()), ResilientSessionCache)
    monkeypatch.delenv("AUTHSIDECAR_OUTAGE_GRACE")
    monkeypatch.setenv("AUTHSIDECAR_LOCAL_CACHE_SECONDS", "0")
    assert isinstance(build_cache(load_settings()), ResilientSessionCache)
