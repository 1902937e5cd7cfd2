"""A Database whose units of work run the configured hooks around every write of user, session, account and
verification, and write after events to the outbox in the same transaction.

- create / update: the before hooks run first, inside the transaction, with the data about to be written (an
  update: the record's id and the changed fields); their replacement data is merged in (payloads.py says which
  fields they may set). A rejection or a failure raises before anything is written, and the transaction rolls back.
- delete: the before hooks run with each record about to be deleted (read first, inside the transaction).
- after hooks and the event stream: one outbox entry per target, written at the end of the transaction, so an
  event exists exactly when its change committed; the dispatcher (hooks/dispatcher.py) delivers it.

When hooks are on, every transaction is a real one (no autocommit): the outbox entries must commit with the change.
Not hooked: the periodic removal of expired rows and old log entries, and the removal of a user's outstanding
verification tokens when a flow supersedes them (neither is a change anybody asked for).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from authsidecar.cache.codec import iso
from authsidecar.domain.models import (
    Account,
    OutboxEntry,
    Session,
    User,
    Verification,
)
from authsidecar.domain.passthrough import DatabasePassThrough
from authsidecar.domain.ports import Database, UnitOfWork
from authsidecar.errors import AuthSidecarError
from authsidecar.hooks.context import call_context
from authsidecar.hooks.payloads import Payloads
from authsidecar.hooks.runner import HookRunner

__all__ = ["HookedDatabase"]

_LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)
_UNSET = object()
log = logging.getLogger("authsidecar.hooks")


class _HookedUnitOfWork:
    """A unit of work with the hooks around its writes."""

    def __init__(self, inner: UnitOfWork, hooks: HookRunner, payloads: Payloads) -> None:
        self._inner = inner
        self._hooks = hooks
        self._payloads = payloads
        self._call: dict[str, Any] | None = None

    def _call_json(self) -> dict[str, Any]:
        if self._call is None:
            self._call = self._payloads.call(call_context())
        return self._call

    async def _before(self, model: str, event: str, data: dict[str, Any]) -> dict[str, Any]:
        if not self._hooks.has_before(model, event):
            return data
        return await self._hooks.before(model, event, data, self._call_json())

    async def _before_fixed(self, model: str, event: str, data: dict[str, Any]) -> None:
        """Before hooks of a change whose data they may not replace (only refuse)."""
        answer = await self._before(model, event, data)
        changed = sorted(key for key, value in answer.items() if data.get(key, _UNSET) != value)
        if changed:
            log.error("a hook may not set %s.%s on this %s; the change was refused", model, changed[0], event)
            raise AuthSidecarError("a hook answered data it may not set; see the server log")

    def _after(self, model: str, event: str, data: dict[str, Any], key: str) -> None:
        targets = self._hooks.after_targets(model, event)
        if not targets:
            return
        body = {
            "id": uuid.uuid4().hex,
            "type": f"{model}.{event}",
            "model": model,
            "event": event,
            "when": "after",
            "occurredAt": iso(datetime.now(UTC)),
            "data": data,
            "context": self._call_json(),
        }
        payload = json.dumps(body, separators=(",", ":"), default=str)
        for target in targets:
            self._inner.record_event(OutboxEntry(target, key, payload))

    def _wants(self, model: str, event: str) -> bool:
        return self._hooks.has_before(model, event) or bool(self._hooks.after_targets(model, event))

    def record_event(self, entry: OutboxEntry) -> None:
        """An outbox entry of this transaction (plugins' own events)."""
        self._inner.record_event(entry)

    # -- users -----------------------------------------------------------------------------------------------

    async def insert_user(self, user: User) -> User:
        """user.create: before hooks may replace name, image, emailVerified and additional fields."""
        if self._hooks.has_before("user", "create"):
            answer = await self._before("user", "create", self._payloads.user(user))
            user = self._payloads.apply_user(user, answer)
        user = await self._inner.insert_user(user)
        self._after("user", "create", self._payloads.user(user), user.id)
        return user

    async def _user_update(
        self, user_id: str, fields: dict[str, Any], write: Callable[[], Awaitable[User | None]]
    ) -> User | None:
        await self._before_fixed("user", "update", {"id": user_id, **self._payloads.changes("user", fields)})
        user = await write()
        if user is not None:
            self._after("user", "update", self._payloads.user(user), user.id)
        return user

    async def mark_email_verified(self, user_id: str, email: str, now: datetime) -> User | None:
        """user.update (emailVerified)."""
        return await self._user_update(
            user_id, {"email_verified": True}, lambda: self._inner.mark_email_verified(user_id, email, now)
        )

    async def change_email(
        self, user_id: str, old_email: str, new_email: str, now: datetime, verified: bool = True
    ) -> User | None:
        """user.update (email, emailVerified)."""
        return await self._user_update(
            user_id,
            {"email": new_email, "email_verified": verified},
            lambda: self._inner.change_email(user_id, old_email, new_email, now, verified),
        )

    async def update_user(self, user_id: str, changes: dict[str, Any], now: datetime) -> User | None:
        """user.update: before hooks may replace name, image and additional fields."""
        if self._hooks.has_before("user", "update"):
            data = {"id": user_id, **self._payloads.changes("user", changes)}
            answer = await self._before("user", "update", data)
            changes = self._payloads.apply_changes("user", changes, answer, data)
        user = await self._inner.update_user(user_id, changes, now)
        if user is not None:
            self._after("user", "update", self._payloads.user(user), user.id)
        return user

    async def delete_user(self, user_id: str) -> bool:
        """user.delete, after session.delete for each of the user's sessions and account.delete for the
        credential account."""
        # Every before hook runs before anything is written (some writes, in Redis, cannot be rolled back).
        user = await self._inner.get_user_by_id(user_id) if self._wants("user", "delete") else None
        if user is not None:
            await self._before("user", "delete", self._payloads.user(user))
        if self._hooks.has_before("session", "delete"):
            await self._deleting(await self._inner.list_user_sessions(user_id, _LONG_AGO))
        account = await self._inner.get_credential_account(user_id) if self._wants("account", "delete") else None
        if account is not None:
            await self._before("account", "delete", self._payloads.account(account))
        self._deleted(await self._inner.delete_user_sessions(user_id))
        deleted = await self._inner.delete_user(user_id)
        if deleted and account is not None:
            self._after("account", "delete", self._payloads.account(account), user_id)
        if deleted and user is not None:
            self._after("user", "delete", self._payloads.user(user), user_id)
        return deleted

    async def get_user_with_credential(self, email: str) -> tuple[User, Account | None] | None:
        """Read."""
        return await self._inner.get_user_with_credential(email)

    async def get_user_by_id(self, user_id: str) -> User | None:
        """Read."""
        return await self._inner.get_user_by_id(user_id)

    async def get_user_by_email(self, email: str) -> User | None:
        """Read."""
        return await self._inner.get_user_by_email(email)

    async def list_users(
        self, limit: int, after: tuple[datetime, str] | None = None, email_prefix: str = ""
    ) -> list[User]:
        """Read."""
        return await self._inner.list_users(limit, after, email_prefix)

    # -- accounts --------------------------------------------------------------------------------------------

    async def insert_account(self, account: Account) -> str:
        """account.create."""
        await self._before_fixed("account", "create", self._payloads.account(account))
        account_id = await self._inner.insert_account(account)
        self._after("account", "create", self._payloads.account(replace(account, id=account_id)), account.user_id)
        return account_id

    async def update_account_password(self, account: Account, password_hash: str, now: datetime) -> None:
        """account.update (the password; the payload never carries it)."""
        changed = replace(account, updated_at=now)
        await self._before_fixed("account", "update", self._payloads.account(changed))
        await self._inner.update_account_password(account, password_hash, now)
        self._after("account", "update", self._payloads.account(changed), account.user_id)

    async def get_credential_account(self, user_id: str) -> Account | None:
        """Read."""
        return await self._inner.get_credential_account(user_id)

    async def lock_credential(self, account_id: str, password_hash: str) -> bool:
        """Lock."""
        return await self._inner.lock_credential(account_id, password_hash)

    # -- sessions --------------------------------------------------------------------------------------------

    async def insert_session(self, session: Session) -> Session:
        """session.create: before hooks may replace expiresAt, ipAddress, userAgent and additional fields."""
        session = await self._inner.insert_session(await self._creating(session))
        self._after("session", "create", self._payloads.session(session), session.user_id)
        return session

    async def insert_session_if_credential(
        self, account_id: str, password_hash: str, session: Session
    ) -> Session | None:
        """session.create, when the credential is unchanged (the before hooks run first, with no lock held)."""
        inserted = await self._inner.insert_session_if_credential(
            account_id, password_hash, await self._creating(session)
        )
        if inserted is not None:
            self._after("session", "create", self._payloads.session(inserted), inserted.user_id)
        return inserted

    async def _creating(self, session: Session) -> Session:
        """The session as the session.create before hooks answer it."""
        if not self._hooks.has_before("session", "create"):
            return session
        answer = await self._before("session", "create", self._payloads.session(session))
        return self._payloads.apply_session(session, answer)

    async def refresh_session(self, session: Session, expires_at: datetime, now: datetime) -> bool:
        """session.update (a sliding refresh)."""
        refreshed = replace(session, expires_at=expires_at, updated_at=now)
        await self._before_fixed("session", "update", self._payloads.session(refreshed))
        alive = await self._inner.refresh_session(session, expires_at, now)
        if alive:
            self._after("session", "update", self._payloads.session(refreshed), session.user_id)
        return alive

    async def _deleting(self, sessions: list[Session]) -> None:
        for session in sessions:
            await self._before("session", "delete", self._payloads.session(session))

    def _deleted(self, sessions: list[Session]) -> None:
        for session in sessions:
            self._after("session", "delete", self._payloads.session(session), session.user_id)

    async def delete_session_by_token(self, stored_token: str) -> Session | None:
        """session.delete."""
        if self._hooks.has_before("session", "delete"):
            found = await self._inner.get_session(stored_token)
            await self._deleting([found] if found is not None else [])
        deleted = await self._inner.delete_session_by_token(stored_token)
        self._deleted([deleted] if deleted is not None else [])
        return deleted

    async def delete_session_by_id(self, user_id: str, session_id: str) -> Session | None:
        """session.delete."""
        if self._hooks.has_before("session", "delete"):
            sessions = await self._inner.list_user_sessions(user_id, _LONG_AGO)
            await self._deleting([s for s in sessions if s.id == session_id])
        deleted = await self._inner.delete_session_by_id(user_id, session_id)
        self._deleted([deleted] if deleted is not None else [])
        return deleted

    async def delete_user_sessions(self, user_id: str, except_session_id: str | None = None) -> list[Session]:
        """session.delete for each."""
        if self._hooks.has_before("session", "delete"):
            sessions = await self._inner.list_user_sessions(user_id, _LONG_AGO)
            await self._deleting([s for s in sessions if s.id != except_session_id])
        deleted = await self._inner.delete_user_sessions(user_id, except_session_id)
        self._deleted(deleted)
        return deleted

    async def get_session(self, stored_token: str) -> Session | None:
        """Read."""
        return await self._inner.get_session(stored_token)

    async def list_user_sessions(self, user_id: str, now: datetime) -> list[Session]:
        """Read."""
        return await self._inner.list_user_sessions(user_id, now)

    # -- verification values ---------------------------------------------------------------------------------

    async def insert_verification(self, verification: Verification) -> str:
        """verification.create."""
        await self._before_fixed("verification", "create", self._payloads.verification(verification))
        verification_id = await self._inner.insert_verification(verification)
        data = self._payloads.verification(replace(verification, id=verification_id))
        self._after("verification", "create", data, str(data.get("userId", "")))
        return verification_id

    async def consume_verification(self, identifier: str, now: datetime) -> str | None:
        """verification.delete (a token used): the before hooks run once the value is taken (they are told whose
        it is), inside the transaction, and a rejection puts it back by rolling back; except where Better Auth
        keeps verification values in Redis alone, where a rejected token stays used up."""
        value = await self._inner.consume_verification(identifier, now)
        if value is not None:
            data = Payloads.verification_parts(identifier, value)
            await self._before_fixed("verification", "delete", data)
            self._after("verification", "delete", data, str(data.get("userId", "")))
        return value

    async def verification_exists(self, identifier: str) -> bool:
        """Read."""
        return await self._inner.verification_exists(identifier)

    async def delete_user_verifications(self, user_id: str, purposes: tuple[str, ...] = ()) -> int:
        """Not hooked (superseded tokens)."""
        return await self._inner.delete_user_verifications(user_id, purposes)

    async def delete_expired(self, table: str, now: datetime, limit: int) -> int:
        """Not hooked (cleanup)."""
        return await self._inner.delete_expired(table, now, limit)

    async def delete_old_invalidations(self, before: datetime, limit: int) -> int:
        """Not hooked (cleanup)."""
        return await self._inner.delete_old_invalidations(before, limit)


class HookedDatabase(DatabasePassThrough):
    """The inner database with hooked units of work; everything else passes through."""

    def __init__(self, inner: Database, hooks: HookRunner, payloads: Payloads) -> None:
        super().__init__(inner)
        self._hooks = hooks
        self._payloads = payloads

    @asynccontextmanager
    async def transaction(self, autocommit: bool = False) -> AsyncIterator[UnitOfWork]:
        """A real transaction whenever a hook is configured: outbox entries commit with the change, and a
        rejection rolls it back."""
        async with self._inner.transaction(autocommit and not self._hooks) as inner:
            yield _HookedUnitOfWork(inner, self._hooks, self._payloads)


def _check(db: HookedDatabase, uow: _HookedUnitOfWork) -> tuple[Database, UnitOfWork]:
    return db, uow
