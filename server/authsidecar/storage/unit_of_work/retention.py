"""The unit of work's batched removal of old rows: expired sessions and verifications, old invalidation log
entries."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from authsidecar.storage.unit_of_work.base import UnitOfWorkBase

__all__ = ["RetentionQueries"]


class RetentionQueries(UnitOfWorkBase):
    """Old rows, in batches."""

    async def _delete_batch(self, name: str, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` rows of ``name`` older than ``before``."""
        column = self._q.aged[name]
        table = column.table
        if self._emulate_returning:  # MySQL: no LIMIT inside an IN subquery, but DELETE ... LIMIT
            stmt = sa.delete(table).where(column < before).with_dialect_options(mysql_limit=limit)
        else:
            pk = next(iter(table.primary_key))
            oldest = sa.select(pk).where(column < before).limit(limit).scalar_subquery()
            stmt = sa.delete(table).where(pk.in_(oldest))
        return (await self._conn.execute(stmt)).rowcount

    async def delete_expired(self, table: str, now: datetime, limit: int) -> int:
        """One batch of expired rows."""
        return await self._delete_batch(table, now, limit)

    async def delete_old_invalidations(self, before: datetime, limit: int) -> int:
        """One batch of invalidation log entries written before ``before``."""
        return await self._delete_batch("invalidation", before, limit)
