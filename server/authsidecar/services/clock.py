"""Clocks: the wall clock at millisecond precision (what Better Auth stores and what JSON dates carry), and the
database's clock as this process estimates it (what cached snapshots are stamped and judged in)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

__all__ = ["MAX_ROUND_TRIP", "Clock", "DatabaseClock", "utc_now"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Now, UTC, truncated to milliseconds so SQL rows and cached JSON agree exactly."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


MAX_ROUND_TRIP = 0.5  # seconds: a slower reading of the database's clock is too imprecise to use


class DatabaseClock:
    """The store of record's wall clock (Unix seconds) as this process estimates it: its own clock plus an offset
    measured against the database's.

    Cached snapshots are stamped, and their age judged, in this time. Every instance follows the same database, so
    they agree on how old a snapshot is even when their own clocks disagree: an instance whose clock ran minutes
    ahead would otherwise stamp snapshots that stay trusted after every instance has forgotten the revocations
    made meanwhile. The estimate is as good as half the round trip of the reading (well under a second).
    """

    def __init__(self, local: Callable[[], float] = time.time) -> None:
        self._local = local
        self.offset = 0.0  # the database's clock minus this process's (seconds); 0 until measured
        self.measured = False

    def __call__(self) -> float:
        """Now, by the database's clock."""
        return self._local() + self.offset

    async def measure(self, read: Callable[[], Awaitable[float]]) -> bool:
        """Read the database's clock (``read``) and take the offset from the middle of the round trip; False (the
        offset kept) when the round trip took longer than MAX_ROUND_TRIP."""
        before = self._local()
        remote = await read()
        after = self._local()
        if after - before > MAX_ROUND_TRIP:
            return False
        self.offset = remote - (before + after) / 2
        self.measured = True
        return True
