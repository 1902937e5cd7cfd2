"""Removal of expired sessions and verification tokens, and of old invalidation log entries, in batches (the
server's periodic job and ``authsidecar cleanup``). Expired sessions are already gone from the cache (their TTL
ended with them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial

from authsidecar.domain.ports import Database, Outbox, UnitOfWork
from authsidecar.services.clock import Clock, utc_now

__all__ = ["DEAD_OUTBOX_KEEP", "INVALIDATION_LOG_KEEP", "remove_expired"]

# How long invalidation log entries are kept: far longer than any instance needs them (trust_seconds + a
# margin), so an instance cut off from the database for less than this catches up without a gap.
INVALIDATION_LOG_KEEP = timedelta(hours=2)
# How long outbox entries that were given up stay for inspection.
DEAD_OUTBOX_KEEP = timedelta(days=7)


async def remove_expired(
    db: Database, batch_size: int = 1000, clock: Clock = utc_now, outbox: Outbox | None = None
) -> dict[str, int]:
    """Delete rows that expired before now, ``batch_size`` per statement, and outbox entries dead for a week;
    returns the counts per table."""
    now = clock()
    removed: dict[str, int] = {}
    for table in ("session", "verification"):
        removed[table] = await _in_batches(
            db, batch_size, partial(_delete_expired, table=table, now=now, limit=batch_size)
        )
    old = now - INVALIDATION_LOG_KEEP
    removed["invalidation"] = await _in_batches(db, batch_size, lambda tx: tx.delete_old_invalidations(old, batch_size))
    if outbox is not None:
        removed["outbox"] = 0
        while (count := await outbox.delete_dead(now - DEAD_OUTBOX_KEEP, batch_size)) > 0:
            removed["outbox"] += count
            if count < batch_size:
                break
    return removed


async def _delete_expired(tx: UnitOfWork, table: str, now: datetime, limit: int) -> int:
    return await tx.delete_expired(table, now, limit)


async def _in_batches(db: Database, batch_size: int, delete_batch: Callable[[UnitOfWork], Awaitable[int]]) -> int:
    total = 0
    while True:
        async with db.transaction(autocommit=True) as tx:
            count = await delete_batch(tx)
        total += count
        if count < batch_size:
            return total
