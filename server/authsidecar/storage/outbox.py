"""The delivery side of the transactional outbox (entries are written by the unit of work, storage/unit_of_work/).

One instance at a time delivers: it holds the lease row (``holder``, ``leaseUntil``), renewed while it works and
taken over by another instance once it lapses (a crashed holder's entries are delivered again: at least once).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from authsidecar.domain.models import OutboxRow
from authsidecar.domain.ports import Outbox
from authsidecar.storage.database import SqlDatabase

__all__ = ["SqlOutbox"]


class SqlOutbox:
    """Outbox reads and updates over the database's autocommit engine (one statement each)."""

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database
        schema = database.schema
        o, lease = schema.outbox, schema.outbox_lease
        p = sa.bindparam
        # Deliverable: live, due, and no earlier live entry of the same (target, key) waits for a retry.
        earlier = o.alias("earlier")
        blocked = sa.exists().where(
            earlier.c.target == o.c.target,
            earlier.c.ordering_key == o.c.ordering_key,
            earlier.c.seq < o.c.seq,
            earlier.c.dead == sa.false(),
            earlier.c.next_attempt_at > p("now"),
        )
        self._pending = (
            sa.select(o)
            .where(o.c.dead == sa.false(), o.c.next_attempt_at <= p("now"), ~blocked)
            .order_by(o.c.seq)
            .limit(p("limit"))
        )
        self._delete = sa.delete(o).where(o.c.seq.in_(p("seqs", expanding=True)))
        self._failed = (
            sa.update(o)
            .where(o.c.seq == p("o_seq"))
            .values(attempts=p("o_attempts"), next_attempt_at=p("o_next"), last_error=p("o_error"), dead=p("o_dead"))
        )
        self._acquire = (
            sa.update(lease)
            .where(
                lease.c.id == 1,
                sa.or_(lease.c.holder.is_(None), lease.c.holder == p("l_holder"), lease.c.lease_until < p("l_now")),
            )
            .values(holder=p("l_holder"), lease_until=p("l_until"))
        )
        self._release = (
            sa.update(lease)
            .where(lease.c.id == 1, lease.c.holder == p("l_holder"))
            .values(holder=None, lease_until=None)
        )
        self._backlog = sa.select(o.c.dead, sa.func.count()).group_by(o.c.dead)

    async def _run(self, stmt: sa.Executable, params: dict[str, Any]) -> sa.CursorResult[Any]:
        async with self._db.autocommit_connection() as conn:
            result: sa.CursorResult[Any] = await conn.execute(stmt, params)
            return result

    async def pending(self, limit: int, now: datetime) -> list[OutboxRow]:
        """The oldest deliverable entries, in commit order."""
        async with self._db.autocommit_connection() as conn:
            rows = (await conn.execute(self._pending, {"limit": limit, "now": now})).all()
        return [OutboxRow(r.seq, r.target, r.ordering_key, r.payload, r.attempts, r.next_attempt_at) for r in rows]

    async def delivered(self, seqs: list[int]) -> None:
        """Delete delivered entries."""
        if seqs:
            await self._run(self._delete, {"seqs": seqs})

    async def failed(self, seq: int, attempts: int, next_attempt_at: datetime, error: str, dead: bool) -> None:
        """Record a failed attempt."""
        params = {
            "o_seq": seq,
            "o_attempts": attempts,
            "o_next": next_attempt_at,
            "o_error": error[:500],
            "o_dead": dead,
        }
        await self._run(self._failed, params)

    async def acquire_lease(self, holder: str, now: datetime, until: datetime) -> bool:
        """Take the lease if it is free, lapsed or already ours."""
        result = await self._run(self._acquire, {"l_holder": holder, "l_now": now, "l_until": until})
        return result.rowcount > 0

    async def release_lease(self, holder: str) -> None:
        """Free the lease if it is ours."""
        await self._run(self._release, {"l_holder": holder})

    async def delete_dead(self, before: datetime, limit: int) -> int:
        """Remove up to ``limit`` dead entries written before ``before``."""
        o = self._db.schema.outbox
        oldest = sa.select(o.c.seq).where(o.c.dead == sa.true(), o.c.created_at < before).order_by(o.c.seq).limit(limit)
        seqs = [row[0] for row in (await self._run(oldest, {})).all()]
        if seqs:
            await self._run(self._delete, {"seqs": seqs})
        return len(seqs)

    async def oldest(self) -> datetime | None:
        """When the oldest live entry was written (the delivery lag's start), or None."""
        o = self._db.schema.outbox
        rows = (await self._run(sa.select(sa.func.min(o.c.created_at)).where(o.c.dead == sa.false()), {})).all()
        value = rows[0][0] if rows else None
        if isinstance(value, str):  # SQLite's aggregate loses the column type
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    async def backlog(self) -> tuple[int, int]:
        """(live, dead) entry counts."""
        async with self._db.autocommit_connection() as conn:
            counts = {bool(dead): int(n) for dead, n in (await conn.execute(self._backlog)).all()}
        return counts.get(False, 0), counts.get(True, 0)


def _check(outbox: SqlOutbox) -> Outbox:
    return outbox
