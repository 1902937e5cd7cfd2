"""Cache coherence rules, document integrity, the invalidation payload and additional-field rules: pure logic,
fake clocks, no I/O."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from authsidecar.cache.integrity import DocumentSigner, derive_key
from authsidecar.cache.memory import MemorySessionCache
from authsidecar.domain.models import Invalidations, SessionWithUser, version_of
from authsidecar.errors import FieldNotAllowed, InvalidArgument, MissingField
from authsidecar.security.tokens import HashedTokenPolicy
from authsidecar.services.clock import MAX_ROUND_TRIP, DatabaseClock
from authsidecar.services.coherence import CLOCK_EVERY, FUTURE_TOLERANCE, RETENTION_MARGIN, CacheCoherence
from authsidecar.services.extra_fields import ExtraFieldRules
from authsidecar.storage.invalidations import decode_payload, encode_payload
from tests.unit.test_cache import FakeClock, make_entry

WALL0 = 1_800_000_000.0


class FakeLog:
    """An InvalidationLog in memory (entries are numbered from 1, like the counter row)."""

    def __init__(self, wall: Callable[[], float] = lambda: WALL0) -> None:
        self.wall = wall  # the database's clock
        self.entries: list[tuple[int, Invalidations, float]] = []
        self.reads = 0
        self.fail = False
        self.listeners: list[Callable[[], None]] = []

    def append(self, invalidations: Invalidations, at: float = WALL0) -> int:
        seq = len(self.entries) + 1
        self.entries.append((seq, replace(invalidations, seq=seq), at))
        for wake in self.listeners:
            wake()
        return seq

    async def listen_for_invalidations(self, wake: Callable[[], None]) -> None:
        self.listeners.append(wake)
        await asyncio.Event().wait()

    async def invalidation_cursor(self) -> int:
        self._read()
        return len(self.entries)

    async def database_time(self) -> float:
        self._read()
        return self.wall()

    async def invalidations_after(self, seq: int, limit: int) -> list[tuple[int, Invalidations]]:
        self._read()
        return [(s, inv) for s, inv, _ in self.entries if s > seq][:limit]

    async def invalidations_since(self, since: datetime, upto: int) -> list[tuple[int, Invalidations]]:
        self._read()
        return [(s, inv) for s, inv, at in self.entries if at > since.timestamp() and s <= upto]

    def _read(self) -> None:
        self.reads += 1
        if self.fail:
            raise OSError("database unreachable")


class World:
    """A coherence instance over an in-process cache, with hand-moved clocks."""

    def __init__(self, trust: float = 60.0, bound: float = 1.0, outage_grace: float = 0.0) -> None:
        self.wall = FakeClock(WALL0)
        self.mono = FakeClock(100.0)
        self.cache = MemorySessionCache(clock=self.mono)
        self.log = FakeLog(self.wall)
        self.coherence = CacheCoherence(
            self.cache, HashedTokenPolicy(), trust, bound, outage_grace, wall=self.wall, monotonic=self.mono
        )

    def advance(self, seconds: float) -> None:
        self.wall.advance(seconds)
        self.mono.advance(seconds)

    def fresh_entry(self, **kwargs: str) -> SessionWithUser:
        return replace(make_entry(**kwargs), checked_at=self.wall())


@pytest.fixture
def world() -> World:
    return World()


class TestTrust:
    async def test_nothing_is_trusted_before_the_log_was_read(self, world: World) -> None:
        assert not world.coherence.trusted(world.fresh_entry())
        await world.coherence.catch_up(world.log)
        assert world.coherence.trusted(world.fresh_entry())

    async def test_trust_lapses_when_the_log_was_not_read_within_the_bound(self, world: World) -> None:
        await world.coherence.catch_up(world.log)
        world.mono.advance(0.99)
        assert world.coherence.trusted(world.fresh_entry())
        world.mono.advance(0.01)
        assert not world.coherence.trusted(world.fresh_entry())
        await world.coherence.catch_up(world.log)
        assert world.coherence.trusted(world.fresh_entry())

    async def test_a_failed_read_does_not_renew_trust(self, world: World) -> None:
        await world.coherence.catch_up(world.log)
        world.log.fail = True
        world.mono.advance(0.5)
        with pytest.raises(OSError, match="unreachable"):
            await world.coherence.catch_up(world.log)
        world.mono.advance(0.5)
        assert not world.coherence.trusted(world.fresh_entry())

    async def test_an_outage_grace_keeps_trust_while_the_log_cannot_be_read(self) -> None:
        world = World(outage_grace=30.0)
        await world.coherence.catch_up(world.log)
        world.log.fail = True
        await world.coherence._catch_up_logged(world.log)  # the follower's read fails: logged, not raised
        world.advance(29.0)
        assert world.coherence.trusted(world.fresh_entry())  # the operator chose availability
        world.advance(1.5)
        assert not world.coherence.trusted(world.fresh_entry())
        world.log.fail = False
        await world.coherence._catch_up_logged(world.log)
        assert world.coherence.trusted(world.fresh_entry())

    async def test_without_outage_grace_a_failing_log_stops_trust_after_the_bound(self, world: World) -> None:
        await world.coherence.catch_up(world.log)
        world.log.fail = True
        await world.coherence._catch_up_logged(world.log)
        world.advance(1.0)
        assert not world.coherence.trusted(world.fresh_entry())

    async def test_snapshots_older_than_trust_seconds_are_rechecked(self, world: World) -> None:
        await world.coherence.catch_up(world.log)
        entry = world.fresh_entry()
        world.wall.advance(59.9)
        await world.coherence.catch_up(world.log)
        assert world.coherence.trusted(entry)
        world.wall.advance(0.1)
        assert not world.coherence.trusted(entry)
        assert not world.coherence.trusted(replace(entry, checked_at=0.0))  # Better Auth's own documents

    async def test_a_snapshot_from_a_clock_ahead_is_refused_so_it_cannot_outlive_the_revocations(
        self, world: World
    ) -> None:
        """Another instance's clock 300 s ahead stamped the snapshot: trusting it for trust seconds from that stamp
        would outlast the revocation memory (trust + margin) and bring a signed-out session back."""
        await world.coherence.catch_up(world.log)
        entry = world.fresh_entry()
        assert world.coherence.trusted(replace(entry, checked_at=world.wall() + FUTURE_TOLERANCE - 1))
        ahead = replace(entry, checked_at=world.wall() + 300)
        assert not world.coherence.trusted(ahead)
        world.coherence.note(Invalidations(sessions=((entry.user.id, entry.session.stored_token),), seq=1))
        world.advance(RETENTION_MARGIN + 61)  # the revocation is forgotten; the snapshot would still be "young"
        await world.coherence.catch_up(world.log)
        assert not world.coherence.trusted(ahead)
        assert world.coherence.future_snapshots == 2

    async def test_an_instance_whose_clock_is_far_ahead_stamps_and_judges_in_the_databases_time(self) -> None:
        """Instance B's own clock runs 300 s ahead of the database's. Its snapshot of a session, taken just before
        the session was revoked elsewhere, must not outlive the revocation memory on instance A once A's clock
        catches up with the stamp (which is what happened when stamps were each instance's own clock)."""
        a = World()
        b_local = FakeClock(WALL0 + 300)
        b = CacheCoherence(a.cache, HashedTokenPolicy(), wall=b_local, monotonic=a.mono)
        await a.coherence.catch_up(a.log)
        await b.catch_up(a.log)  # reads the database's clock
        assert b.clock() == pytest.approx(a.wall(), abs=1e-6)
        snapshot = replace(make_entry(), checked_at=b.clock())  # B's stamp
        assert a.coherence.trusted(snapshot) and b.trusted(snapshot)
        a.coherence.note(Invalidations(sessions=((snapshot.user.id, snapshot.session.stored_token),), seq=1))
        for seconds in (30.0, 30.0, RETENTION_MARGIN + 1):  # past the trust time, then past the revocation memory
            a.advance(seconds)
            b_local.advance(seconds)
            await a.coherence.catch_up(a.log)
            assert not a.coherence.trusted(snapshot)
        assert a.coherence.future_snapshots == 0

    async def test_the_databases_clock_is_read_again_every_clock_every_seconds(self, world: World) -> None:
        world.log.wall = lambda: world.wall() + 7.0  # the database's clock is 7 s ahead of this machine's
        await world.coherence.catch_up(world.log)
        assert world.coherence.clock.offset == pytest.approx(7.0)
        world.log.wall = lambda: world.wall() - 2.0  # ... and then, after a correction, 2 s behind
        world.advance(CLOCK_EVERY / 2)
        await world.coherence.catch_up(world.log)
        assert world.coherence.clock.offset == pytest.approx(7.0)
        world.advance(CLOCK_EVERY / 2)
        await world.coherence.catch_up(world.log)
        assert world.coherence.clock.offset == pytest.approx(-2.0)

    async def test_the_offset_is_taken_from_the_middle_of_the_reading_and_bad_readings_are_dropped(self) -> None:
        local, mono = FakeClock(1000.0), FakeClock(50.0)

        async def database(took: float, says: float, local_step: float = 0.0) -> float:
            local.advance(took + local_step)
            mono.advance(took)
            return says

        clock = DatabaseClock(local, mono)
        assert clock.stamp() == 0.0  # not read yet: a snapshot stamped now is never trusted
        assert await clock.measure(lambda: database(0.2, 1100.1)) == 0.0
        assert clock.offset == pytest.approx(1100.1 - 1000.1) and clock() == pytest.approx(1100.2)
        assert clock.stamp() == pytest.approx(1100.2)
        assert await clock.measure(lambda: database(MAX_ROUND_TRIP + 0.1, 5000.0)) is None  # too slow
        assert await clock.measure(lambda: database(0.1, 5000.0, local_step=30.0)) is None  # this clock stepped
        assert clock.offset == pytest.approx(100.0)  # kept

    async def test_a_database_clock_that_steps_back_is_noticed(self) -> None:
        local, mono = FakeClock(1000.0), FakeClock(50.0)
        database_time = [1000.0]

        async def database() -> float:
            return database_time[0]

        clock = DatabaseClock(local, mono)
        assert await clock.measure(database) == 0.0
        for _ in range(3):  # in step
            local.advance(30.0)
            mono.advance(30.0)
            database_time[0] += 30.0
            assert await clock.measure(database) == 0.0
        local.advance(30.0)
        mono.advance(30.0)
        database_time[0] += 30.0 - 120.0  # the database's clock is set back two minutes
        assert await clock.measure(database) == pytest.approx(120.0)

    async def test_nothing_is_trusted_until_the_databases_clock_was_read(self, world: World) -> None:
        async def slow() -> float:
            world.advance(MAX_ROUND_TRIP + 1)
            return world.wall()

        world.log.database_time = slow  # type: ignore[method-assign]
        await world.coherence.catch_up(world.log)
        assert not world.coherence.clock.measured
        assert not world.coherence.trusted(world.fresh_entry())
        del world.log.database_time  # prompt again
        world.advance(1.0)
        await world.coherence.catch_up(world.log)
        assert world.coherence.trusted(world.fresh_entry())

    async def test_after_the_databases_clock_stepped_back_older_snapshots_are_never_trusted_again(
        self, world: World
    ) -> None:
        """Snapshots stamped before the database's clock was set back two minutes look two minutes younger than they
        are: without a re-check one could outlive the revocation memory."""
        await world.coherence.catch_up(world.log)
        before_step = world.fresh_entry()
        world.coherence.note(Invalidations(sessions=((before_step.user.id, before_step.session.stored_token),), seq=1))
        world.advance(CLOCK_EVERY)
        world.log.wall = lambda: world.wall() - 120.0
        await world.coherence.catch_up(world.log)
        for _ in range(10):  # past the revocation memory, and then some
            assert not world.coherence.trusted(before_step)
            world.advance(CLOCK_EVERY)
            await world.coherence.catch_up(world.log)
        assert world.coherence.trusted(replace(world.fresh_entry(), checked_at=world.coherence.clock()))

    async def test_a_revoked_session_is_never_trusted(self, world: World) -> None:
        await world.coherence.catch_up(world.log)
        entry = world.fresh_entry(token="t" * 64)
        world.coherence.note(Invalidations(sessions=(("u" * 32, "t" * 64),), seq=1))
        assert not world.coherence.trusted(entry)
        assert world.coherence.revoked("t" * 64)
        assert world.coherence.trusted(world.fresh_entry(token="o" * 64))  # other sessions are unaffected

    async def test_only_the_current_user_version_is_trusted(self, world: World) -> None:
        await world.coherence.catch_up(world.log)
        old = world.fresh_entry()
        new_user = replace(old.user, name="New", updated_at=old.user.updated_at + timedelta(seconds=1))
        world.coherence.note(Invalidations(users=((old.user.id, version_of(new_user)),), seq=1))
        assert not world.coherence.trusted(old)
        assert world.coherence.trusted(replace(old, user=new_user))

    async def test_user_versions_follow_commit_order_not_arrival_order(self, world: World) -> None:
        await world.coherence.catch_up(world.log)
        entry = world.fresh_entry()
        v1_user = replace(entry.user, name="one", updated_at=entry.user.updated_at + timedelta(seconds=1))
        v2_user = replace(entry.user, name="two", updated_at=entry.user.updated_at + timedelta(seconds=2))
        world.coherence.note(Invalidations(users=((entry.user.id, version_of(v2_user)),), seq=6))
        world.coherence.note(Invalidations(users=((entry.user.id, version_of(v1_user)),), seq=5))  # late arrival
        assert world.coherence.trusted(replace(entry, user=v2_user))
        assert not world.coherence.trusted(replace(entry, user=v1_user))

    async def test_two_states_written_in_the_same_millisecond_have_different_versions(self, world: World) -> None:
        await world.coherence.catch_up(world.log)
        entry = world.fresh_entry()
        x = replace(entry.user, name="X")
        y = replace(entry.user, name="Y")  # same updatedAt, to the microsecond
        assert version_of(x) != version_of(y)
        world.coherence.note(Invalidations(users=((entry.user.id, version_of(y)),), seq=1))
        assert not world.coherence.trusted(replace(entry, user=x))
        assert world.coherence.trusted(replace(entry, user=y))

    def test_versions_ignore_sub_millisecond_precision(self) -> None:
        user = make_entry().user
        assert version_of(user) == version_of(
            replace(
                user, updated_at=user.updated_at.replace(microsecond=user.updated_at.microsecond // 1000 * 1000 + 999)
            )
        )

    async def test_nothing_cached_before_start_is_trusted_without_a_recheck(self, world: World) -> None:
        before = world.fresh_entry()  # e.g. a Redis document written before this instance started
        world.wall.advance(0.001)
        await world.coherence.catch_up(world.log)  # the start: entries by createdAt may miss late commits
        assert not world.coherence.trusted(before)
        assert world.coherence.trusted(world.fresh_entry())

    async def test_invalidations_are_forgotten_after_trust_plus_margin(self, world: World) -> None:
        await world.coherence.catch_up(world.log)
        world.coherence.note(Invalidations(sessions=(("u" * 32, "t" * 64),), seq=1))
        world.advance(60 + RETENTION_MARGIN - 0.5)
        await world.coherence.catch_up(world.log)
        assert world.coherence.revoked("t" * 64)
        world.advance(1.0)
        await world.coherence.catch_up(world.log)
        assert not world.coherence.revoked("t" * 64)


class TestFollowingTheLog:
    async def test_start_loads_recent_entries_and_skips_old_ones(self, world: World) -> None:
        world.log.append(Invalidations(sessions=(("u", "old"),)), at=WALL0 - 60 - RETENTION_MARGIN - 1)
        world.log.append(Invalidations(sessions=(("u", "recent"),)), at=WALL0 - 30)
        await world.coherence.catch_up(world.log)
        assert world.coherence.revoked("recent")
        assert not world.coherence.revoked("old")

    async def test_new_entries_are_learnt_on_the_next_read(self, world: World) -> None:
        await world.coherence.catch_up(world.log)
        world.log.append(Invalidations(sessions=(("u", "later"),)))
        assert not world.coherence.revoked("later")
        await world.coherence.catch_up(world.log)
        assert world.coherence.revoked("later")

    async def test_an_in_process_cache_is_cleaned_by_the_feed(self, world: World) -> None:
        await world.coherence.catch_up(world.log)
        tokens = HashedTokenPolicy()
        entry = world.fresh_entry(token="t" * 64)
        key = tokens.cache_key("t" * 64)
        await world.cache.put(key, entry, 600)
        world.log.append(Invalidations(sessions=((entry.user.id, "t" * 64),)))
        await world.coherence.catch_up(world.log)
        assert await world.cache.get(key) is None
        await world.cache.put(key, entry, 600)
        assert await world.cache.get(key) is None  # tombstoned: a racing refill does not land

    async def test_pages_are_read_until_the_end(self, world: World) -> None:
        await world.coherence.catch_up(world.log)
        for i in range(2500):
            world.log.append(Invalidations(sessions=(("u", f"t{i}"),)))
        await world.coherence.catch_up(world.log)
        assert world.coherence.revoked("t0") and world.coherence.revoked("t2499")

    async def test_a_gap_distrusts_everything_checked_before(self, world: World) -> None:
        await world.coherence.catch_up(world.log)
        entry = world.fresh_entry()
        world.log.append(Invalidations(sessions=(("u", "a"),)))
        world.log.append(Invalidations(sessions=(("u", "b"),)))
        del world.log.entries[0]  # removed by cleanup before this instance read it
        world.wall.advance(0.001)
        await world.coherence.catch_up(world.log)
        assert not world.coherence.trusted(entry)
        assert world.coherence.trusted(world.fresh_entry())

    async def test_an_announced_entry_is_read_at_once_not_at_the_next_poll(self) -> None:
        world = World(bound=30.0)  # polls every 10 s
        follower = asyncio.create_task(world.coherence.follow(world.log))
        try:
            for _ in range(100):  # the first read and the listener are under way
                if world.log.listeners and world.log.reads >= 2:
                    break
                await asyncio.sleep(0.001)
            world.log.append(Invalidations(sessions=(("u", "announced"),)))
            for _ in range(100):
                if world.coherence.revoked("announced"):
                    break
                await asyncio.sleep(0.001)
            assert world.coherence.revoked("announced")
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    async def test_follow_survives_read_failures(self) -> None:
        world = World(bound=0.06)
        world.log.fail = True
        follower = asyncio.create_task(world.coherence.follow(world.log))
        try:
            await asyncio.sleep(0.1)
            assert world.log.reads >= 2
            world.log.fail = False
            world.log.append(Invalidations(sessions=(("u", "later"),)))
            await asyncio.sleep(0.1)
            assert world.coherence.revoked("later")
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    async def test_committed_applies_locally_at_once_and_then_to_the_cache(self, world: World) -> None:
        await world.coherence.catch_up(world.log)
        tokens = HashedTokenPolicy()
        entry = world.fresh_entry(token="t" * 64)
        await world.cache.put(tokens.cache_key("t" * 64), entry, 600)
        await world.coherence.committed(Invalidations(sessions=((entry.user.id, "t" * 64),), seq=1))
        assert world.coherence.revoked("t" * 64)
        assert await world.cache.get(tokens.cache_key("t" * 64)) is None


class TestDocumentSigner:
    def test_round_trip(self) -> None:
        signer = DocumentSigner(derive_key("x" * 32, "cache-documents"))
        value = signer.sign("p:session:abc", b'{"a":1}')
        assert signer.verify("p:session:abc", value) == b'{"a":1}'

    def test_altered_moved_unsigned_and_foreign_documents_are_refused(self) -> None:
        signer = DocumentSigner(derive_key("x" * 32, "cache-documents"))
        value = signer.sign("p:session:abc", b'{"user":"victim"}')
        assert signer.verify("p:session:abc", value.replace(b"victim", b"attack")) is None
        assert signer.verify("p:session:other", value) is None
        assert signer.verify("p:session:abc", b'{"user":"victim"}') is None
        assert signer.verify("p:session:abc", b"m1:short") is None
        other = DocumentSigner(derive_key("y" * 32, "cache-documents"))
        assert other.verify("p:session:abc", value) is None

    def test_keys_differ_by_purpose_and_are_not_the_secret(self) -> None:
        assert derive_key("x" * 32, "a") != derive_key("x" * 32, "b")
        assert b"x" * 32 not in derive_key("x" * 32, "a")
        with pytest.raises(ValueError, match="256 bits"):
            DocumentSigner(b"short")


class TestPayload:
    def test_round_trip(self) -> None:
        invalidations = Invalidations(sessions=(("u1", "t1"), ("u2", "t2")), users=(("u1", "9f86d081884c7d65"),))
        assert decode_payload(encode_payload(invalidations), 7) == replace(invalidations, seq=7)

    @pytest.mark.parametrize("raw", ["", "[]", '{"s": [["only-one"]]}', '{"u": [["u"]]}', '{"u": 5}', "null"])
    def test_malformed_payloads_raise(self, raw: str) -> None:
        with pytest.raises(ValueError, match="malformed"):
            decode_payload(raw, 1)

    def test_empty_invalidations_are_falsy(self) -> None:
        assert not Invalidations()
        assert Invalidations(users=(("u", "v1"),))


class TestExtraFieldRules:
    """Client-supplied additional fields (pure rules; the contract and e2e suites run them through the server)."""

    @staticmethod
    def rules() -> ExtraFieldRules:
        from tests.conftest import CUSTOM_SCHEMA

        return ExtraFieldRules(CUSTOM_SCHEMA.registry().user)

    def test_a_required_field_without_default_is_missing(self) -> None:
        from authsidecar.schema_config import SchemaSettings

        settings = SchemaSettings.model_validate({"user": {"additional_fields": {"nick": {"type": "string"}}}})
        with pytest.raises(MissingField) as info:
            ExtraFieldRules(settings.registry().user).for_create({})
        assert [v.field for v in info.value.violations] == ["additional_fields.nick"]
        with pytest.raises(InvalidArgument):
            ExtraFieldRules(settings.registry().user).for_update({"nick": None})

    def test_not_allowed_wins_and_lists_every_field(self) -> None:
        with pytest.raises(FieldNotAllowed) as info:
            self.rules().for_create({"role": "admin", "zzz": 1, "age": "x"})
        assert sorted(v.field for v in info.value.violations) == [
            "additional_fields.age",
            "additional_fields.role",
            "additional_fields.zzz",
        ]

    def test_update_changes_only_what_is_given(self) -> None:
        assert self.rules().for_update({"age": 7.0}) == {"age": 7}
        assert self.rules().for_update({}) == {}

    def test_a_model_without_additional_fields_refuses_any(self) -> None:
        with pytest.raises(FieldNotAllowed):
            ExtraFieldRules.none().for_create({"x": 1})
        assert not ExtraFieldRules.none().for_create({})
