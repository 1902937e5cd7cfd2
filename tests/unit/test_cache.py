"""Secondary storage: the JSON codec, the in-process cache and the fail-open Redis wrapper (all without Redis)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from authsidecar.cache.codec import StaleDocument, decode_session, encode_session, iso
from authsidecar.cache.memory import MemorySessionCache, NullSessionCache
from authsidecar.cache.resilient import ResilientSessionCache
from authsidecar.domain.fields import Registry
from authsidecar.domain.models import Extra, Session, SessionWithUser, User

T0 = datetime(2025, 3, 4, 5, 6, 7, 891_000, tzinfo=UTC)


def make_entry(user_id: str = "u" * 32, session_id: str = "s" * 32, token: str = "a" * 64) -> SessionWithUser:
    user = User(
        id=user_id,
        name="Ada Lovelace",
        email="ada@example.com",
        email_verified=True,
        image=None,
        created_at=T0 - timedelta(days=30),
        updated_at=T0 - timedelta(days=1, milliseconds=5),
    )
    session = Session(
        id=session_id,
        user_id=user_id,
        stored_token=token,
        expires_at=T0 + timedelta(days=7),
        created_at=T0,
        updated_at=T0,
        ip_address="203.0.113.7",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) «test» ☃",
    )
    return SessionWithUser(session, user)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --------------------------------------------------------------------------------------------------------- codec


class TestCodec:
    def test_round_trip(self) -> None:
        entry = make_entry()
        assert decode_session(encode_session(entry)) == entry

    def test_round_trip_with_nulls(self) -> None:
        entry = make_entry()
        entry = SessionWithUser(
            replace(entry.session, ip_address=None, user_agent=None),
            replace(entry.user, image=None, email_verified=False),
        )
        assert decode_session(encode_session(entry)) == entry

    def test_decode_accepts_str(self) -> None:
        entry = make_entry()
        assert decode_session(encode_session(entry).decode()) == entry

    def test_decoded_dates_are_aware_utc(self) -> None:
        decoded = decode_session(encode_session(make_entry()))
        for value in (decoded.session.expires_at, decoded.session.created_at, decoded.user.updated_at):
            assert value.utcoffset() == timedelta(0)

    def test_dates_are_truncated_to_milliseconds(self) -> None:
        entry = make_entry()
        entry = SessionWithUser(replace(entry.session, created_at=T0 + timedelta(microseconds=999)), entry.user)
        decoded = decode_session(encode_session(entry))
        assert decoded.session.created_at == T0

    def test_document_shape(self) -> None:
        entry = make_entry()
        doc: dict[str, Any] = json.loads(encode_session(replace(entry, checked_at=1_700_000_000.1234)))
        assert set(doc) == {"session", "user", "checkedAt"}
        assert doc["checkedAt"] == 1_700_000_000_123
        assert doc["session"] == {
            "id": entry.session.id,
            "token": entry.session.stored_token,
            "userId": entry.user.id,
            "expiresAt": "2025-03-11T05:06:07.891Z",
            "createdAt": "2025-03-04T05:06:07.891Z",
            "updatedAt": "2025-03-04T05:06:07.891Z",
            "ipAddress": "203.0.113.7",
            "userAgent": entry.session.user_agent,
        }
        assert doc["user"] == {
            "id": entry.user.id,
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "emailVerified": True,
            "image": None,
            "createdAt": "2025-02-02T05:06:07.891Z",
            "updatedAt": "2025-03-03T05:06:07.886Z",
        }

    def test_encoding_is_compact_json(self) -> None:
        raw = encode_session(make_entry())
        assert b", " not in raw
        assert b'": ' not in raw

    def test_iso_matches_javascript_to_iso_string(self) -> None:
        assert iso(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2024-01-02T03:04:05.000Z"
        assert iso(datetime(2024, 1, 2, 3, 4, 5, 123_456, tzinfo=UTC)) == "2024-01-02T03:04:05.123Z"
        plus_two = timezone(timedelta(hours=2))
        assert iso(datetime(2024, 1, 2, 5, 4, 5, tzinfo=plus_two)) == "2024-01-02T03:04:05.000Z"

    def test_decodes_a_better_auth_document(self) -> None:
        raw = json.dumps(
            {
                "session": {
                    "id": "sid",
                    "token": "tok",
                    "userId": "uid",
                    "expiresAt": "2025-01-08T00:00:00.000Z",
                    "createdAt": "2025-01-01T00:00:00.000Z",
                    "updatedAt": "2025-01-01T00:00:00.000Z",
                },
                "user": {
                    "id": "uid",
                    "name": "n",
                    "email": "e@example.com",
                    "emailVerified": False,
                    "createdAt": "2025-01-01T00:00:00.000Z",
                    "updatedAt": "2025-01-01T00:00:00.000Z",
                },
            }
        )
        decoded = decode_session(raw)
        assert decoded.session.expires_at == datetime(2025, 1, 8, tzinfo=UTC)
        assert decoded.session.ip_address is None and decoded.session.user_agent is None
        assert decoded.user.image is None

    @pytest.mark.parametrize(
        "raw",
        [
            b"",
            b"not json",
            b"null",
            b"[]",
            b"{}",
            b'{"session": {}, "user": {}}',
            b'{"session": null, "user": null}',
        ],
    )
    def test_malformed_documents_raise(self, raw: bytes) -> None:
        with pytest.raises((ValueError, KeyError, TypeError)):
            decode_session(raw)

    @pytest.mark.parametrize(
        ("path", "value"),
        [
            (("session", "expiresAt"), "tomorrow"),
            (("session", "createdAt"), 1_700_000_000_000),
            (("user", "createdAt"), None),
        ],
    )
    def test_bad_dates_raise(self, path: tuple[str, str], value: object) -> None:
        doc = json.loads(encode_session(make_entry()))
        doc[path[0]][path[1]] = value
        with pytest.raises((ValueError, TypeError)):
            decode_session(json.dumps(doc))

    def test_missing_field_raises(self) -> None:
        doc = json.loads(encode_session(make_entry()))
        del doc["session"]["token"]
        with pytest.raises(KeyError):
            decode_session(json.dumps(doc))

    def test_date_without_timezone_raises(self) -> None:
        """Dates are documented as UTC; a naive one would only blow up later, comparing with an aware now()."""
        doc = json.loads(encode_session(make_entry()))
        doc["session"]["expiresAt"] = "2025-03-11T05:06:07.891"
        with pytest.raises((ValueError, TypeError)):
            decode_session(json.dumps(doc))


# -------------------------------------------------------------------------------------------------------- memory


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory(clock: FakeClock) -> MemorySessionCache:
    return MemorySessionCache(max_entries=100, clock=clock)


class TestMemorySessionCache:
    async def test_miss(self, memory: MemorySessionCache) -> None:
        assert await memory.get("session:nope") is None

    async def test_put_then_get(self, memory: MemorySessionCache) -> None:
        entry = make_entry()
        await memory.put("k", entry, ttl=60)
        assert await memory.get("k") is entry
        assert len(memory) == 1

    async def test_entry_expires_after_ttl(self, memory: MemorySessionCache, clock: FakeClock) -> None:
        await memory.put("k", make_entry(), ttl=60)
        clock.advance(59.9)
        assert await memory.get("k") is not None
        clock.advance(0.1)
        assert await memory.get("k") is None
        assert len(memory) == 0
        assert memory.user_keys(make_entry().user.id) == set()

    async def test_put_replaces(self, memory: MemorySessionCache, clock: FakeClock) -> None:
        first, second = make_entry(), make_entry(session_id="t" * 32)
        await memory.put("k", first, ttl=10)
        await memory.put("k", second, ttl=100)
        clock.advance(50)
        assert await memory.get("k") is second
        assert len(memory) == 1

    async def test_invalidate_drops_and_blocks_put_until_tombstone_expires(
        self, memory: MemorySessionCache, clock: FakeClock
    ) -> None:
        entry = make_entry()
        await memory.put("k", entry, ttl=3600)
        await memory.invalidate(entry.user.id, ["k"], ttl=30)
        assert await memory.get("k") is None
        assert memory.user_keys(entry.user.id) == set()

        clock.advance(29)
        await memory.put("k", entry, ttl=3600)  # a stale refill racing the revocation
        assert await memory.get("k") is None

        clock.advance(1)
        await memory.put("k", entry, ttl=3600)
        assert await memory.get("k") is entry

    async def test_invalidate_unknown_key_still_tombstones(self, memory: MemorySessionCache) -> None:
        entry = make_entry()
        await memory.invalidate(entry.user.id, ["k"], ttl=30)
        await memory.put("k", entry, ttl=60)
        assert await memory.get("k") is None

    async def test_invalidate_with_zero_ttl_blocks_for_at_least_a_second(
        self, memory: MemorySessionCache, clock: FakeClock
    ) -> None:
        entry = make_entry()
        await memory.invalidate(entry.user.id, ["k"], ttl=0)
        await memory.put("k", entry, ttl=60)
        assert await memory.get("k") is None
        clock.advance(1)
        await memory.put("k", entry, ttl=60)
        assert await memory.get("k") is entry

    async def test_invalidate_leaves_other_keys(self, memory: MemorySessionCache) -> None:
        entry = make_entry()
        await memory.put("a", entry, ttl=60)
        await memory.put("b", entry, ttl=60)
        await memory.invalidate(entry.user.id, ["a"], ttl=60)
        assert await memory.get("a") is None
        assert await memory.get("b") is entry
        assert memory.user_keys(entry.user.id) == {"b"}

    async def test_user_index(self, memory: MemorySessionCache) -> None:
        ada, bob = make_entry(user_id="ada"), make_entry(user_id="bob")
        await memory.put("a1", ada, ttl=60)
        await memory.put("a2", ada, ttl=60)
        await memory.put("b1", bob, ttl=60)
        assert memory.user_keys("ada") == {"a1", "a2"}
        assert memory.user_keys("bob") == {"b1"}
        assert memory.user_keys("nobody") == set()
        memory.user_keys("ada").add("tampered")  # a copy
        assert memory.user_keys("ada") == {"a1", "a2"}

    async def test_purge_forgets_entries_but_keeps_tombstones(self, memory: MemorySessionCache) -> None:
        entry = make_entry()
        await memory.put("a", entry, ttl=60)
        await memory.invalidate(entry.user.id, ["b"], ttl=60)
        await memory.purge()
        assert len(memory) == 0
        assert await memory.get("a") is None
        assert memory.user_keys(entry.user.id) == set()
        await memory.put("b", entry, ttl=60)
        assert await memory.get("b") is None  # still revoked
        await memory.put("a", entry, ttl=60)
        assert await memory.get("a") is entry

    async def test_close_forgets_everything(self, memory: MemorySessionCache) -> None:
        entry = make_entry()
        await memory.put("a", entry, ttl=60)
        await memory.invalidate(entry.user.id, ["b"], ttl=60)
        await memory.close()
        assert len(memory) == 0
        await memory.put("b", entry, ttl=60)
        assert await memory.get("b") is entry

    async def test_size_is_bounded(self, clock: FakeClock) -> None:
        cache = MemorySessionCache(max_entries=100, clock=clock)
        entry = make_entry()
        for i in range(1000):
            await cache.put(f"k{i}", entry, ttl=3600)
            assert len(cache) <= 100
        assert await cache.get("k999") is entry  # the newest survives
        assert await cache.get("k0") is None  # the oldest went first
        assert len(cache.user_keys(entry.user.id)) == len(cache)

    async def test_eviction_prefers_expired_entries(self, clock: FakeClock) -> None:
        cache = MemorySessionCache(max_entries=100, clock=clock)
        entry = make_entry()
        await cache.put("old-but-long", entry, ttl=3600)
        for i in range(99):
            await cache.put(f"short{i}", entry, ttl=10)
        clock.advance(11)
        await cache.put("new", entry, ttl=10)
        assert await cache.get("old-but-long") is entry
        assert await cache.get("new") is entry
        assert len(cache) == 2

    async def test_full_cache_updates_existing_key_without_evicting(self, clock: FakeClock) -> None:
        cache = MemorySessionCache(max_entries=100, clock=clock)
        entry = make_entry()
        for i in range(100):
            await cache.put(f"k{i}", entry, ttl=3600)
        await cache.put("k50", entry, ttl=7200)
        assert len(cache) == 100
        assert await cache.get("k0") is entry

    async def test_many_tombstones_are_pruned_once_expired(self, clock: FakeClock) -> None:
        cache = MemorySessionCache(max_entries=100, clock=clock)
        entry = make_entry()
        await cache.invalidate("u", [f"dead{i}" for i in range(100)], ttl=10)
        clock.advance(11)
        await cache.invalidate("u", [f"fresh{i}" for i in range(10)], ttl=10)
        assert len(cache._tombstones) == 10  # the expired ones were dropped
        await cache.put("fresh0", entry, ttl=60)
        assert await cache.get("fresh0") is None


class TestNullSessionCache:
    async def test_always_misses(self) -> None:
        cache = NullSessionCache()
        await cache.put("k", make_entry(), ttl=60)
        assert await cache.get("k") is None
        await cache.invalidate("u", ["k"], ttl=60)
        await cache.evict_user("u")
        await cache.close()


# ----------------------------------------------------------------------------------------------------- resilient


class FlakyCache:
    """An in-memory SessionCache that records calls and raises ``error`` while ``down``."""

    shared = False

    def __init__(self, error: Exception | None = None) -> None:
        self.down = False
        self.error = error or RedisConnectionError("connection refused")
        self.store: dict[str, SessionWithUser] = {}
        self.calls: list[tuple[str, Any]] = []
        self.closed = False

    def _check(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        if self.down:
            raise self.error

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    async def get(self, key: str) -> SessionWithUser | None:
        self._check("get", key)
        return self.store.get(key)

    async def put(self, key: str, entry: SessionWithUser, ttl: int) -> None:
        self._check("put", key)
        self.store[key] = entry

    async def invalidate(self, user_id: str, keys: Sequence[str], ttl: int) -> None:
        self._check("invalidate", (user_id, tuple(keys), ttl))
        for key in keys:
            self.store.pop(key, None)

    async def evict_user(self, user_id: str) -> None:
        self._check("evict_user", user_id)

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def inner() -> FlakyCache:
    return FlakyCache()


@pytest.fixture
def resilient(inner: FlakyCache, clock: FakeClock) -> ResilientSessionCache:
    return ResilientSessionCache(inner, retry_after=5.0, clock=clock)


class TestResilientSessionCache:
    async def test_passes_through_while_healthy(self, resilient: ResilientSessionCache, inner: FlakyCache) -> None:
        entry = make_entry()
        await resilient.put("k", entry, ttl=60)
        assert await resilient.get("k") is entry
        await resilient.invalidate("u", ["k"], ttl=60)
        assert await resilient.get("k") is None
        await resilient.evict_user("u")
        assert inner.names() == ["put", "get", "invalidate", "get", "evict_user"]
        assert resilient.available
        assert (resilient.errors, resilient.fallbacks) == (0, 0)

    def test_shares_like_its_inner_cache(self, inner: FlakyCache) -> None:
        inner.shared = True
        assert ResilientSessionCache(inner).shared

    @pytest.mark.parametrize("error", [RedisConnectionError("down"), RedisTimeoutError("slow"), OSError("reset")])
    async def test_failure_trips_the_breaker(self, clock: FakeClock, error: Exception) -> None:
        inner = FlakyCache(error)
        cache = ResilientSessionCache(inner, retry_after=5.0, clock=clock)
        inner.down = True
        assert await cache.get("k") is None
        assert not cache.available
        assert (cache.errors, cache.fallbacks) == (1, 1)

    async def test_inner_is_bypassed_until_retry_after(
        self, resilient: ResilientSessionCache, inner: FlakyCache, clock: FakeClock
    ) -> None:
        entry = make_entry()
        inner.store["k"] = entry
        inner.down = True
        assert await resilient.get("k") is None
        calls = len(inner.calls)

        inner.down = False  # back, but nobody knows yet
        clock.advance(4.9)
        assert await resilient.get("k") is None
        assert await resilient.get("k") is None
        await resilient.invalidate("u", ["k"], ttl=30)
        assert len(inner.calls) == calls  # not even probed
        assert resilient.fallbacks == 3

        clock.advance(0.1)
        assert await resilient.get("k") is entry
        assert resilient.available
        assert resilient.fallbacks == 3

    async def test_failed_probe_waits_another_retry_after(
        self, resilient: ResilientSessionCache, inner: FlakyCache, clock: FakeClock
    ) -> None:
        inner.down = True
        await resilient.get("k")
        clock.advance(5)
        assert await resilient.get("k") is None  # probe fails
        assert resilient.errors == 2
        calls = len(inner.calls)
        clock.advance(4.9)
        assert await resilient.get("k") is None
        assert len(inner.calls) == calls
        inner.down = False
        clock.advance(0.1)
        await resilient.get("k")
        assert resilient.available

    async def test_writes_are_skipped_while_down(
        self, resilient: ResilientSessionCache, inner: FlakyCache, clock: FakeClock
    ) -> None:
        inner.down = True
        await resilient.get("k")
        inner.down = False
        await resilient.put("k", make_entry(), ttl=60)
        await resilient.invalidate("u", ["k"], ttl=60)
        await resilient.evict_user("u")
        assert inner.names() == ["get"]
        assert inner.store == {}

    @pytest.mark.parametrize("operation", ["put", "invalidate", "evict_user"])
    async def test_failed_write_trips_and_does_not_raise(
        self, resilient: ResilientSessionCache, inner: FlakyCache, operation: str
    ) -> None:
        inner.down = True
        if operation == "put":
            await resilient.put("k", make_entry(), ttl=60)
        elif operation == "invalidate":
            await resilient.invalidate("u", ["k"], ttl=60)
        else:
            await resilient.evict_user("u")
        assert not resilient.available
        assert resilient.errors == 1

    async def test_a_successful_write_closes_the_breaker(
        self, resilient: ResilientSessionCache, inner: FlakyCache, clock: FakeClock
    ) -> None:
        inner.down = True
        await resilient.get("k")
        inner.down = False
        clock.advance(5)
        await resilient.invalidate("u", ["k"], ttl=30)
        assert resilient.available

    async def test_close_delegates(self, resilient: ResilientSessionCache, inner: FlakyCache) -> None:
        await resilient.close()
        assert inner.names() == []
        assert inner.closed

    async def test_unexpected_errors_propagate(self, clock: FakeClock) -> None:
        inner = FlakyCache(RuntimeError("bug"))
        cache = ResilientSessionCache(inner, clock=clock)
        inner.down = True
        with pytest.raises(RuntimeError, match="bug"):
            await cache.get("k")


def test_bounded_memo_stays_bounded_and_keeps_recent_entries() -> None:
    from authsidecar.cache.memo import BoundedMemo

    memo: BoundedMemo[int, str] = BoundedMemo(10)
    for i in range(25):
        memo.put(i, str(i))
    assert len(memo) <= 10
    assert memo.get(24) == "24"
    assert memo.get(0) is None


class TestCodecWithAdditionalFields:
    """Documents under a configured schema: every additional field by its own name (returned = false ones too),
    a document from another configuration is a miss (StaleDocument), and entries stay hashable."""

    @staticmethod
    def entry() -> tuple[Registry, SessionWithUser]:
        from tests.conftest import CUSTOM_SCHEMA

        registry = CUSTOM_SCHEMA.registry()
        base = make_entry()
        extra = {
            "role": "member",
            "lang": "fr",
            "age": 36,
            "vip": False,
            "birthday": T0,
            "tags": ["a"],
            "prefs": {"theme": "dark", "nested": [1, {"x": None}]},
            "handle": None,
            "secretNote": "kept",
        }
        entry = SessionWithUser(
            replace(base.session, additional=Extra({"device": "phone"})),
            replace(base.user, additional=Extra(extra)),
            1_700_000_000.0,
        )
        return registry, entry

    def test_round_trip_keeps_every_field(self) -> None:
        registry, entry = self.entry()
        raw = encode_session(entry, registry)
        doc = json.loads(raw)
        assert doc["user"]["secretNote"] == "kept" and doc["user"]["birthday"] == "2025-03-04T05:06:07.891Z"
        assert doc["session"]["device"] == "phone"
        assert decode_session(raw, registry) == entry

    def test_a_document_from_another_configuration_is_stale(self) -> None:
        registry, entry = self.entry()
        raw = encode_session(entry)  # written by the default configuration: no additional fields
        with pytest.raises(StaleDocument):
            decode_session(raw, registry)
        assert decode_session(encode_session(entry, registry)).user.additional == Extra()  # extra keys ignored

    def test_entries_with_json_values_are_hashable_and_compare_by_value(self) -> None:
        _, entry = self.entry()
        twin = replace(entry, user=replace(entry.user, additional=Extra(dict(entry.user.additional))))
        assert hash(entry) == hash(twin) and entry == twin
        other = replace(entry, user=replace(entry.user, additional=Extra({**entry.user.additional, "age": 37})))
        assert entry != other
