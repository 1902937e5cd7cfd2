"""The unit of work's user queries: insert, reads (with the credential account in one round trip), pages, and
changes that record the user as changed; deleting a user revokes its sessions first."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from authsidecar.domain.models import Account, User
from authsidecar.storage.rows import record, values
from authsidecar.storage.unit_of_work.sessions import SessionQueries

__all__ = ["UserQueries"]


class UserQueries(SessionQueries):
    """Users (built on the session queries: ``delete_user`` deletes the user's sessions through them)."""

    async def insert_user(self, user: User) -> User:
        """Insert a user row; returns it with its id."""
        return replace(user, id=await self._insert(self._q.insert_user, values(self._q.registry.user, user)))

    async def get_user_with_credential(self, email: str) -> tuple[User, Account | None] | None:
        """The user with that email and their credential account, in one round trip (LEFT JOIN)."""
        m: Mapping[Any, Any]
        if self._direct is not None:
            stmt = self._direct.user_with_credential
            rows = await self._direct.run(stmt, {"email": email})
            if not rows:
                return None
            m = stmt.mapping(rows[0])
        else:
            row = (await self._execute(self._q.user_with_credential, {"email": email})).first()
            if row is None:
                return None
            m = row._mapping
        user = record(User, self._q.registry.user, m)
        if m["account.id"] is None:  # no credential account (LEFT JOIN)
            return user, None
        return user, record(
            Account, self._q.registry.account, {key: m[f"account.{key}"] for key in self._q.account_keys}
        )

    async def _one_user(self, stmt: sa.Executable, params: dict[str, Any]) -> User | None:
        row = (await self._execute(stmt, params)).first()
        return record(User, self._q.registry.user, row._mapping) if row else None

    async def get_user_by_id(self, user_id: str) -> User | None:
        """The user with that id."""
        return await self._one_user(self._q.user_by_id, {"u_id": user_id})

    async def get_user_by_email(self, email: str) -> User | None:
        """The user with that email."""
        return await self._one_user(self._q.user_by_email, {"u_email": email})

    async def list_users(
        self, limit: int, after: tuple[datetime, str] | None = None, email_prefix: str = ""
    ) -> list[User]:
        """A page of users in (createdAt, id) order (the seeded createdAt index serves it)."""
        u = self._q.user_table
        stmt = sa.select(u)
        if email_prefix:
            stmt = stmt.where(u.c.email.startswith(email_prefix, autoescape=True))
        if after is not None:
            created, last_id = after
            stmt = stmt.where(sa.or_(u.c.created_at > created, sa.and_(u.c.created_at == created, u.c.id > last_id)))
        result = await self._execute(stmt.order_by(u.c.created_at, u.c.id).limit(limit), {})
        return [record(User, self._q.registry.user, row._mapping) for row in result]

    async def mark_email_verified(self, user_id: str, email: str, now: datetime) -> User | None:
        """Set emailVerified if the user still has that email."""
        self._expect_effects()
        params = {"u_id": user_id, "u_email": email, "u_now": now}
        return self._user_changed(await self._one_user(self._q.mark_verified, params))

    async def change_email(
        self, user_id: str, old_email: str, new_email: str, now: datetime, verified: bool = True
    ) -> User | None:
        """Replace the email (and set emailVerified) if it is still ``old_email``."""
        self._expect_effects()
        params = {"u_id": user_id, "u_email": old_email, "u_new_email": new_email, "u_now": now, "u_verified": verified}
        return self._user_changed(await self._one_user(self._q.change_email, params))

    async def update_user(self, user_id: str, changes: dict[str, Any], now: datetime) -> User | None:
        """Set the given profile fields."""
        self._expect_effects()
        u = self._q.user_table
        stmt = sa.update(u).where(u.c.id == user_id).values(**changes, updated_at=now).returning(*u.c)
        return self._user_changed(await self._one_user(stmt, {}))

    async def delete_user(self, user_id: str) -> bool:
        """Delete the user, its sessions first (so they are logged as revoked); accounts cascade."""
        await self.delete_user_sessions(user_id)
        return (await self._execute(self._q.delete_user, {"u_id": user_id})).first() is not None
