"""Cache coherence: the one mechanism that decides whether a cached session may be trusted.

The store of record is the authority; caches (Redis, in-process) are copies that can be stale, restored from an
old snapshot, or written by someone else. Writes declare what they invalidate (storage/unit_of_work/) and that
declaration is committed to the invalidation log in the same transaction, so it survives Redis outages and a
crash of the instance that wrote it. Every instance then:

- applies its own invalidations right after commit (before the RPC answers): local state first, then the cache
  (a Redis failure is logged, never fatal: the log is what counts);
- follows the log (one indexed query every ``bound / 3`` seconds) and learns the other instances' invalidations;
- trusts a cached snapshot only when all of these hold:
  1. the log was read successfully less than ``bound`` seconds ago (else every read goes to SQL);
  2. the snapshot was checked against SQL less than ``trust_seconds`` ago (writers outside authsidecar);
  3. its session is not among the recently revoked ones, and its user has no newer version.

Stamps and ages are in the database's clock, as each instance estimates it (services/clock.py DatabaseClock, read
at start and every CLOCK_EVERY seconds): instances whose own clocks disagree still agree on how old a snapshot is.

Recent invalidations are kept for ``trust_seconds`` + a margin: a snapshot checked before an invalidation is no
longer trusted by rule 2 once that much time has passed, so older ones need not be remembered. Stale documents
left in Redis are therefore harmless and are removed when met.

The guarantee: once a write that revokes a session has committed, the instance that made it never validates
the session again, and every other instance stops within ``bound`` seconds, whatever Redis did meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

from authsidecar.domain.models import Invalidations, SessionWithUser, version_of
from authsidecar.domain.ports import InvalidationLog, SessionCache
from authsidecar.errors import AuthSidecarError
from authsidecar.security.tokens import TokenPolicy
from authsidecar.services.clock import DatabaseClock

__all__ = ["FUTURE_TOLERANCE", "RETENTION_MARGIN", "CacheCoherence"]

log = logging.getLogger(__name__)

# Added to trust_seconds to get how long invalidations are remembered: covers clock differences between
# instances and the time a snapshot spends between its SQL read and the cache.
RETENTION_MARGIN = 60.0
# A snapshot stamped further in the future than this came from an instance whose estimate of the database's clock
# is off (stamps are in the database's time): trusting it for the trust time from its stamp would outlast how long
# revocations are remembered (trust time + RETENTION_MARGIN), so it is refused.
FUTURE_TOLERANCE = RETENTION_MARGIN / 2
_PAGE = 1000
CLOCK_EVERY = 30.0  # seconds between readings of the database's clock
CLOCK_WARNING = 5.0  # seconds: an offset from the database's clock worth a warning


class CacheCoherence:
    """Local view of recent invalidations, the trust rules, and the follower of the invalidation log."""

    def __init__(
        self,
        cache: SessionCache,
        tokens: TokenPolicy,
        trust_seconds: float = 60.0,
        bound: float = 1.0,
        outage_grace: float = 0.0,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache = cache
        self._tokens = tokens
        self._trust = trust_seconds
        self._bound = bound
        self._outage_grace = outage_grace
        self.retention = trust_seconds + RETENTION_MARGIN
        # Snapshot stamps and ages are in the database's time (``wall`` is this process's own clock).
        self.clock = DatabaseClock(wall, monotonic)
        self._wall = self.clock
        self._clock_due = -math.inf  # when to read the database's clock again (monotonic)
        self._mono = monotonic
        self._revoked: dict[str, float] = {}  # stored token -> forget at (monotonic)
        self._users: dict[str, tuple[str, int, float]] = {}  # user id -> (current version, log seq, forget at)
        self._fresh_until = -math.inf  # nothing cached is trusted before the log was read once
        self._trust_floor = 0.0  # snapshots checked before this (Unix seconds) are not trusted
        self._cursor: int | None = None
        self._pruned_at = 0.0
        self._feed_failing = False
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._clock_warned_at = -math.inf
        self._clock_unread_logged = False
        self.future_snapshots = 0  # refused: checked by an instance whose clock is ahead (counted, logged)
        self._future_logged_at = -math.inf

    # -- the hot path ----------------------------------------------------------------------------------------

    def trusted(self, entry: SessionWithUser) -> bool:
        """Whether a cached snapshot may be served without asking SQL."""
        if self._mono() >= self._fresh_until and not self._in_outage_grace():
            return False
        checked = entry.checked_at
        age = self._wall() - checked
        if checked < self._trust_floor or age >= self._trust:
            return False
        if age < -FUTURE_TOLERANCE:
            self._from_the_future(-age)
            return False
        if entry.session.stored_token in self._revoked:
            return False
        current = self._users.get(entry.user.id)
        return current is None or current[0] == version_of(entry.user)

    def _from_the_future(self, ahead: float) -> None:
        """Count, and log at most once a minute, snapshots checked by an instance whose clock is ahead of ours."""
        self.future_snapshots += 1
        now = self._mono()
        if now - self._future_logged_at >= 60.0:
            self._future_logged_at = now
            log.warning(
                "refused a cached session checked %.0f s in the future: another instance's clock is ahead of this"
                " one's by more than %.0f s (synchronise clocks with NTP)",
                ahead,
                FUTURE_TOLERANCE,
            )

    def _in_outage_grace(self) -> bool:
        """The operator chose availability (AUTHSIDECAR_OUTAGE_GRACE): while the log cannot be read at all, what
        was trusted stays trusted this long after the last successful read."""
        return (
            self._outage_grace > 0
            and self._feed_failing
            and self._mono() < self._fresh_until - self._bound + self._outage_grace
        )

    def revoked(self, stored_token: str) -> bool:
        """Whether a session was revoked recently (refills of it are pointless)."""
        return stored_token in self._revoked

    # -- invalidations ---------------------------------------------------------------------------------------

    def note(self, invalidations: Invalidations) -> None:
        """Remember invalidations (synchronous: no await between a commit and the local effect)."""
        forget_at = self._mono() + self.retention
        for _, token in invalidations.sessions:
            self._revoked[token] = forget_at
        for user_id, version in invalidations.users:
            previous = self._users.get(user_id)
            if previous is None or previous[1] <= invalidations.seq:  # the latest change in commit order wins
                self._users[user_id] = (version, invalidations.seq, forget_at)

    async def committed(self, invalidations: Invalidations) -> None:
        """Commit listener: apply this instance's own invalidations, locally and then to the cache."""
        self.note(invalidations)
        await self._drop_from_cache(invalidations)

    async def _drop_from_cache(self, invalidations: Invalidations) -> None:
        by_user: dict[str, list[str]] = {}
        for user_id, token in invalidations.sessions:
            by_user.setdefault(user_id, []).append(self._tokens.cache_key(token))
        ttl = math.ceil(self.retention)
        for user_id, keys in by_user.items():
            await self._cache.invalidate(user_id, keys, ttl)
        for user_id, _ in invalidations.users:
            await self._cache.evict_user(user_id)

    async def drop(self, key: str, user_id: str) -> None:
        """Remove a cached document found stale (revoked, expired, forged, or gone from SQL); it stays out
        for as long as invalidations are remembered."""
        await self._cache.invalidate(user_id, [key], math.ceil(self.retention))

    # -- following the log -----------------------------------------------------------------------------------

    async def catch_up(self, db: InvalidationLog) -> None:
        """Read what the log has that this instance has not seen; on success, cached reads are trusted for
        ``bound`` seconds from the moment the read started."""
        started = self._mono()
        if started >= self._clock_due:
            await self._measure_clock(db)
        if self._cursor is None:
            # Entries are found by createdAt, which is when their transaction began: one that committed long after
            # could be missed here. So nothing cached before this instance started is trusted without a re-check.
            self._trust_floor = self._wall()
            cursor = await db.invalidation_cursor()
            since = datetime.fromtimestamp(self._wall() - self.retention, UTC)
            for _, invalidations in await db.invalidations_since(since, cursor):
                await self._learn(invalidations)
            self._cursor = cursor
        while True:
            page = await db.invalidations_after(self._cursor, _PAGE)
            for seq, invalidations in page:
                if seq != self._cursor + 1:
                    # Entries were removed before this instance read them (it was cut off longer than they are
                    # kept): whatever was cached before now may be stale.
                    log.warning(
                        "invalidation log has a gap (%d -> %d): re-checking every cached session", self._cursor, seq
                    )
                    self._trust_floor = self._wall()
                self._cursor = seq
                await self._learn(invalidations)
            if len(page) < _PAGE:
                break
        if self.clock.measured:  # stamps and ages are in the database's time only from then on
            self._fresh_until = started + self._bound
        self._prune()

    async def _measure_clock(self, db: InvalidationLog) -> None:
        """Read the database's clock (at start, then every CLOCK_EVERY seconds). Until a first reading succeeds
        nothing cached is trusted (catch_up does not renew trust). When the database's clock stepped back, every
        snapshot stamped before the step could look younger than it is: all of them, and those stamped until the
        database's time is back where it was, are re-checked against SQL. Warns when this process's clock is off
        the database's by more than CLOCK_WARNING seconds."""
        stepped = await self.clock.measure(db.database_time)
        if stepped is None:  # too slow a reading, or this machine's clock stepped meanwhile: try again soon
            if not self.clock.measured and not self._clock_unread_logged:
                self._clock_unread_logged = True
                log.warning(
                    "cannot read the database's clock promptly: cached sessions are not trusted until it is read"
                )
            return
        self._clock_due = self._mono() + CLOCK_EVERY
        if stepped:
            self._trust_floor = max(self._trust_floor, self._wall() + stepped)
            log.warning(
                "the database's clock stepped back %.1f s: cached sessions are re-checked against SQL until its time"
                " is past where it was",
                stepped,
            )
        if abs(self.clock.offset) > CLOCK_WARNING and self._mono() - self._clock_warned_at >= 3600.0:
            self._clock_warned_at = self._mono()
            log.warning(
                "this machine's clock is %.1f s %s the database's: cached sessions are stamped and judged in the"
                " database's time, but synchronise clocks with NTP",
                abs(self.clock.offset),
                "behind" if self.clock.offset > 0 else "ahead of",
            )

    async def _learn(self, invalidations: Invalidations) -> None:
        self.note(invalidations)
        if not self._cache.shared:  # an in-process cache is this instance's own to clean
            await self._drop_from_cache(invalidations)

    async def follow(self, db: InvalidationLog) -> None:
        """Catch up every ``bound / 3`` seconds, and at once when the store announces a new entry, until
        ``stop()`` (which lets a read under way finish: cancelling one mid-query could strand its connection);
        failures are logged on transitions."""
        interval = self._bound / 3
        self._wake = wake = asyncio.Event()
        listener = asyncio.create_task(db.listen_for_invalidations(wake.set), name="invalidation-listener")
        try:
            while not self._stopping:
                wake.clear()  # before reading: an announcement during the read wakes the next one
                await self._catch_up_logged(db)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    def stop(self) -> None:
        """Ask ``follow`` to return after the read under way, if any."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def _catch_up_logged(self, db: InvalidationLog) -> None:
        try:
            await self.catch_up(db)
        except Exception as exc:
            if not self._feed_failing:
                self._feed_failing = True
                log.warning(
                    "cannot read the invalidation log (%s): cached sessions are not trusted until it is read",
                    exc.message if isinstance(exc, AuthSidecarError) else type(exc).__name__,
                    exc_info=not isinstance(exc, AuthSidecarError | OSError),
                )
        else:
            if self._feed_failing:
                self._feed_failing = False
                log.warning("invalidation log readable again")

    def _prune(self) -> None:
        now = self._mono()
        if now - self._pruned_at < 1.0:
            return
        self._pruned_at = now
        self._revoked = {token: at for token, at in self._revoked.items() if at > now}
        self._users = {user: item for user, item in self._users.items() if item[2] > now}
