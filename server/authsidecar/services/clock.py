"""Clocks: the wall clock at millisecond precision (what Better Auth stores and what JSON dates carry), and the
database's clock as this process estimates it (what cached snapshots are stamped and judged in)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

__all__ = ["MAX_ROUND_TRIP", "STEP_TOLERANCE", "Clock", "DatabaseClock", "utc_now"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Now, UTC, truncated to milliseconds so SQL rows and cached JSON agree exactly."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


MAX_ROUND_TRIP = 5.0  # seconds: a slower reading is not used (its error, up to half the round trip, stays small
# against the coherence's margins of 30 and 60 s)
STEP_TOLERANCE = 1.0  # seconds the database's clock may fall behind this process's monotonic clock between two
# readings (plus the readings' own error) before it counts as having stepped back


class DatabaseClock:
    """The store of record's wall clock (Unix seconds) as this process estimates it: its own clock plus an offset
    measured against the database's.

    Cached snapshots are stamped, and their age judged, in this time. Every instance follows the same database, so
    they agree on how old a snapshot is even when their own clocks disagree: an instance whose clock ran minutes
    ahead would otherwise stamp snapshots that stay trusted after every instance has forgotten the revocations
    made meanwhile. The estimate is as good as half the round trip of the reading (timed on the monotonic clock).
    Until a first reading succeeds, ``stamp()`` is 0: a snapshot stamped then is never trusted, by any instance.
    """

    def __init__(self, local: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._local = local
        self._mono = monotonic
        self.offset = 0.0  # the database's clock minus this process's (seconds); 0 until measured
        self.measured = False
        self._last: tuple[float, float, float] | None = None  # the last reading: (monotonic, database time, error)

    def __call__(self) -> float:
        """Now, by the database's clock (by this process's until the first reading)."""
        return self._local() + self.offset

    def stamp(self) -> float:
        """When a snapshot about to be read or written is checked: now by the database's clock, or 0.0 (never
        trusted) while it has not been read yet."""
        return self._local() + self.offset if self.measured else 0.0

    async def measure(self, read: Callable[[], Awaitable[float]]) -> float | None:
        """Read the database's clock (``read``) and take the offset from the middle of the round trip. Returns how
        many seconds the database's clock stepped back since the previous reading (0.0 when it did not), or None,
        the offset kept, when the reading took longer than MAX_ROUND_TRIP or this process's clock stepped during
        it."""
        started, before = self._mono(), self._local()
        remote = await read()
        ended, after = self._mono(), self._local()
        round_trip = ended - started
        if round_trip > MAX_ROUND_TRIP or abs((after - before) - round_trip) > 0.1:
            return None
        self.offset = remote - (before + after) / 2
        self.measured = True
        middle, error = (started + ended) / 2, round_trip / 2
        back = 0.0
        if self._last is not None:
            last_middle, last_remote, last_error = self._last
            back = (middle - last_middle) - (remote - last_remote)
            if back <= STEP_TOLERANCE + error + last_error:
                back = 0.0
        self._last = (middle, remote, error)
        return back
