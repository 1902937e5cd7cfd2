"""The unit of work's verification queries: insert, atomic consume, existence, and removal of a user's rows."""

from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa

from authsidecar.domain.models import Verification
from authsidecar.storage.rows import values
from authsidecar.storage.unit_of_work.base import UnitOfWorkBase

__all__ = ["VerificationQueries"]


class VerificationQueries(UnitOfWorkBase):
    """Verifications."""

    async def insert_verification(self, verification: Verification) -> str:
        """Insert a verification row; returns its id."""
        return await self._insert(self._q.insert_verification, values(self._q.registry.verification, verification))

    async def consume_verification(self, identifier: str, now: datetime) -> str | None:
        """One DELETE ... RETURNING: two concurrent consumers cannot both get the value."""
        row = (await self._execute(self._q.consume_verification, {"v_identifier": identifier, "v_now": now})).first()
        return str(row[0]) if row else None

    async def verification_exists(self, identifier: str) -> bool:
        """Whether the identifier is present (expired or not)."""
        return (await self._execute(self._q.verification_exists, {"v_identifier": identifier})).first() is not None

    async def delete_user_verifications(self, user_id: str, purposes: tuple[str, ...] = ()) -> int:
        """Payloads start with {"userId":"<id>", (the services write them so), or are the bare user id (Better
        Auth's reset-password rows); ``purposes``: only identifiers "<purpose>:..." of those."""
        head = '{"userId":' + json.dumps(user_id)
        v = self._q.verification_table
        mine = sa.or_(v.c.value == head + "}", v.c.value.startswith(head + ",", autoescape=True), v.c.value == user_id)
        if purposes:
            mine = sa.and_(mine, sa.or_(*(v.c.identifier.startswith(f"{p}:", autoescape=True) for p in purposes)))
        return (await self._conn.execute(sa.delete(v).where(mine))).rowcount
