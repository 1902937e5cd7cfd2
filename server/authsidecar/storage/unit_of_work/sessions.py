"""The unit of work's session queries: insert (also checked against the credential's hash), refresh, read, list,
and deletes that record the sessions as revoked."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from authsidecar.domain.models import Session
from authsidecar.storage.rows import record, values
from authsidecar.storage.unit_of_work.base import UnitOfWorkBase

__all__ = ["SessionQueries"]


class SessionQueries(UnitOfWorkBase):
    """Sessions."""

    async def insert_session(self, session: Session) -> Session:
        """Insert a session row; returns it with its id."""
        return replace(
            session, id=await self._insert(self._q.insert_session, values(self._q.registry.session, session))
        )

    async def insert_session_if_credential(
        self, account_id: str, password_hash: str, session: Session
    ) -> Session | None:
        """Insert the session in the statement that locks the credential account and checks its hash: one round
        trip, atomic without a transaction; None when the hash changed."""
        row = values(self._q.registry.session, session)
        generated = not row.get("id")
        if generated:  # an empty id: the database makes it
            row.pop("id", None)
        keys = tuple(row)
        params = {f"v{i}": row[key] for i, key in enumerate(keys)} | {"a_id": account_id, "a_password": password_hash}
        if self._direct is not None:
            stmt = self._direct.session_if_credential(keys)
            rows = await self._direct.run(stmt, params, write=True)
            if not rows:
                return None
            return replace(session, id=str(stmt.values(rows[0])[0])) if generated else session
        returning = generated and self._conn.dialect.insert_returning
        result = await self._conn.execute(self._q.session_if_credential(keys, returning), params)
        if not generated:
            return session if result.rowcount > 0 else None
        made = result.scalar_one_or_none() if returning else (result.lastrowid if result.rowcount > 0 else None)
        return None if made is None else replace(session, id=str(made))

    async def refresh_session(self, session: Session, expires_at: datetime, now: datetime) -> bool:
        """Extend a session; False when it no longer exists."""
        params = {"s_token": session.stored_token, "s_expires": expires_at, "s_now": now}
        return (await self._conn.execute(self._q.refresh_session, params)).rowcount > 0

    async def get_session(self, stored_token: str) -> Session | None:
        """The session with that stored token."""
        row = (await self._execute(self._q.session_by_token, {"s_token": stored_token})).first()
        return record(Session, self._q.registry.session, row._mapping) if row else None

    async def _delete_sessions(self, stmt: sa.Executable, params: dict[str, Any]) -> list[Session]:
        self._expect_effects()
        model = self._q.registry.session
        return self._sessions_gone([record(Session, model, row._mapping) for row in await self._execute(stmt, params)])

    async def delete_session_by_token(self, stored_token: str) -> Session | None:
        """Delete one session by token."""
        deleted = await self._delete_sessions(self._q.delete_by_token, {"s_token": stored_token})
        return deleted[0] if deleted else None

    async def delete_session_by_id(self, user_id: str, session_id: str) -> Session | None:
        """Delete one of the user's sessions by id."""
        deleted = await self._delete_sessions(self._q.delete_by_id, {"s_id": session_id, "s_user": user_id})
        return deleted[0] if deleted else None

    async def delete_user_sessions(self, user_id: str, except_session_id: str | None = None) -> list[Session]:
        """Delete the user's sessions, optionally sparing one."""
        if except_session_id is None:
            return await self._delete_sessions(self._q.delete_for_user, {"s_user": user_id})
        params = {"s_user": user_id, "s_keep": except_session_id}
        return await self._delete_sessions(self._q.delete_for_user_but, params)

    async def list_user_sessions(self, user_id: str, now: datetime) -> list[Session]:
        """The user's unexpired sessions, newest first."""
        result = await self._execute(self._q.list_sessions, {"s_user": user_id, "s_now": now})
        return [record(Session, self._q.registry.session, row._mapping) for row in result]
