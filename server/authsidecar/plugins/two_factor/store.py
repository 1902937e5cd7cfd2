"""The ``twoFactor`` table (storage: SQL only, no gRPC). One row per enrolled user, as Better Auth keeps it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from authsidecar.domain.models import Verification
from authsidecar.storage.database import SqlDatabase
from authsidecar.storage.rows import values

__all__ = ["MODEL", "TwoFactorRow", "TwoFactorStore"]

MODEL = "two_factor"


@dataclass(frozen=True, slots=True)
class TwoFactorRow:
    """A row of ``twoFactor``: ``secret`` and ``backup_codes`` as stored (encrypted); ``verified`` True for NULL."""

    id: str
    user_id: str
    secret: str
    backup_codes: str
    verified: bool
    failed_count: int
    locked_until: datetime | None


class TwoFactorStore:
    """Reads and writes of ``twoFactor``, each one statement (or one short transaction)."""

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database
        t = database.schema.plugin_tables[MODEL]
        self._t = t
        p = sa.bindparam
        self._get = sa.select(t).where(t.c.user_id == p("t_user")).limit(1)
        self._delete = sa.delete(t).where(t.c.user_id == p("t_user"))
        self._insert = sa.insert(t)
        self._set = sa.update(t).where(t.c.user_id == p("t_user"))

    async def get(self, user_id: str) -> TwoFactorRow | None:
        """The user's row."""
        async with self._db.autocommit_connection() as conn:
            row = (await conn.execute(self._get, {"t_user": user_id})).first()
        if row is None:
            return None
        m = row._mapping
        return TwoFactorRow(
            str(m["id"]),
            str(m["user_id"]),
            m["secret"],
            m["backup_codes"],
            # NULL counts as verified, as Better Auth reads it (``verified !== false``): rows enrolled before
            # better-auth 1.6 added the nullable column hold NULL when it was added without a default.
            m["verified"] is None or bool(m["verified"]),
            int(m["failed_verification_count"] or 0),
            m["locked_until"],
        )

    async def replace(self, row: TwoFactorRow) -> None:
        """Make ``row`` the user's only row (enrolment starts over)."""
        async with self._db.transaction_connection() as conn:
            await conn.execute(self._delete, {"t_user": row.user_id})
            await conn.execute(
                self._insert,
                {
                    "id": row.id,
                    "user_id": row.user_id,
                    "secret": row.secret,
                    "backup_codes": row.backup_codes,
                    "verified": row.verified,
                    "failed_verification_count": row.failed_count,
                    "locked_until": row.locked_until,
                },
            )

    async def update(self, user_id: str, **values: Any) -> None:
        """Set fields of the user's row (logical names)."""
        async with self._db.autocommit_connection() as conn:
            await conn.execute(self._set.values(**values), {"t_user": user_id})

    async def swap_backup_codes(self, user_id: str, old: str, new: str) -> bool:
        """Replace the backup codes if they are still ``old`` (two requests cannot spend the same code)."""
        t = self._t
        stmt = sa.update(t).where(t.c.user_id == user_id, t.c.backup_codes == old).values(backup_codes=new)
        async with self._db.autocommit_connection() as conn:
            return (await conn.execute(stmt)).rowcount > 0

    async def reserve_attempt(self, user_id: str, now: datetime, limit: int) -> bool:
        """Count an attempt before its code is checked (one atomic increment, so concurrent attempts cannot
        outrun the limit); False when the row is locked or ``limit`` attempts in a row are already counted."""
        t = self._t
        count = sa.func.coalesce(t.c.failed_verification_count, 0)
        stmt = (
            sa.update(t)
            .where(
                t.c.user_id == user_id,
                sa.or_(t.c.locked_until.is_(None), t.c.locked_until <= now),
                count < limit,
            )
            .values(failed_verification_count=count + 1)
        )
        async with self._db.autocommit_connection() as conn:
            return (await conn.execute(stmt)).rowcount > 0

    async def lock_if_spent(self, user_id: str, now: datetime, limit: int, lock_until: datetime) -> bool:
        """After a wrong code: lock the row until ``lock_until`` (the count starts over) once ``limit`` attempts
        in a row are counted; True when this call locked it."""
        t = self._t
        stmt = (
            sa.update(t)
            .where(
                t.c.user_id == user_id,
                sa.func.coalesce(t.c.failed_verification_count, 0) >= limit,
                sa.or_(t.c.locked_until.is_(None), t.c.locked_until <= now),
            )
            .values(failed_verification_count=0, locked_until=lock_until)
        )
        async with self._db.autocommit_connection() as conn:
            return (await conn.execute(stmt)).rowcount > 0

    async def mark_used(self, user_id: str, marker: Verification) -> bool:
        """Remember a code as used (a verification row ``marker``) unless it already is: the user's row is locked
        across the check and the insert, so one code cannot be accepted twice, even concurrently."""
        t, v = self._t, self._db.schema.verification
        lock = sa.update(t).where(t.c.user_id == user_id).values(user_id=t.c.user_id)
        seen = sa.select(v.c.id).where(v.c.identifier == marker.identifier).limit(1)
        async with self._db.transaction_connection() as conn:
            await conn.execute(lock)
            if (await conn.execute(seen)).first() is not None:
                return False
            await conn.execute(sa.insert(v), values(self._db.schema.registry.verification, marker))
        return True

    async def delete(self, user_id: str) -> None:
        """Remove the user's row."""
        async with self._db.autocommit_connection() as conn:
            await conn.execute(self._delete, {"t_user": user_id})
