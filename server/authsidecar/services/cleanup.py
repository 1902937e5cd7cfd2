"""Removal of expired sessions and verification tokens, in batches (the server's periodic job and
``authsidecar cleanup``). Expired sessions are already gone from the cache (their TTL ended with them)."""

from __future__ import annotations

from authsidecar.domain.ports import Database
from authsidecar.services.clock import Clock, utc_now

__all__ = ["remove_expired"]


async def remove_expired(db: Database, batch_size: int = 1000, clock: Clock = utc_now) -> dict[str, int]:
    """Delete rows that expired before now, ``batch_size`` per statement; returns the counts per table."""
    now = clock()
    removed: dict[str, int] = {}
    for table in ("session", "verification"):
        total = 0
        while True:
            async with db.transaction(autocommit=True) as tx:
                count = await tx.delete_expired(table, now, batch_size)
            total += count
            if count < batch_size:
                break
        removed[table] = total
    return removed
