"""The store of record as a Better Auth app sees it (compatibility profile): SQL plus Better Auth's Redis layout.

With Redis, Better Auth keeps sessions in Redis (``session.storeSessionInDatabase`` adds the table) and
verification values there (``verification.storeInDatabase`` adds the table). This wrapper gives the services the
same UnitOfWork either way:

- revocations delete the Redis documents inside the SQL transaction, after the SQL delete: if Redis fails the
  transaction rolls back and the caller gets UNAVAILABLE, so a revocation is never half-done on our side;
- a user change rewrites the user snapshot in each of the user's session documents (as Better Auth does), also
  inside the transaction: if Redis fails, the change rolls back (UNAVAILABLE);
- new sessions are written to Redis by the session manager after commit (it has the user snapshot);
- Better Auth refreshes a session by reading its document and writing it back, which could bring back a document
  deleted in between, or an old user snapshot: deletions of sessions revoked one by one and user rewrites are
  made again 1 s and 5 s after commit (revoking all of a user's sessions sets revoked-sessions-before instead,
  which both sides check);
- in Redis-only mode, session reads, lists and deletes go to Redis alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from authsidecar.cache.better_auth import BetterAuthRedis
from authsidecar.domain.models import (
    Account,
    Invalidations,
    OutboxEntry,
    Session,
    SessionWithUser,
    User,
    Verification,
)
from authsidecar.domain.passthrough import DatabasePassThrough
from authsidecar.domain.ports import Database, UnitOfWork
from authsidecar.errors import AuthSidecarError
from authsidecar.security.tokens import alphanumeric

__all__ = ["BetterAuthDatabase"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
AGAIN_AFTER = (1.0, 5.0)  # seconds after a commit its Redis deletions and user rewrites are made again


@dataclass(frozen=True, slots=True)
class _Later:
    """What a committed transaction did in Redis that is made again later."""

    deleted: list[tuple[str, list[str]]]  # (user id, tokens) deleted without a revoked-before mark
    users: list[User]  # users whose snapshot was rewritten


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _UnitOfWork:
    """A SQL unit of work with Better Auth's Redis side effects."""

    def __init__(self, sql: UnitOfWork, owner: BetterAuthDatabase) -> None:
        self._sql = sql
        self._redis = owner.redis
        self._sessions_in_sql = owner.sessions_in_database
        self._verifications_in_sql = owner.verification_in_database
        self._clock = owner.clock
        self.changed_users: dict[str, User] = {}
        self.deleted: list[tuple[str, list[str]]] = []  # (user id, tokens) deleted without a revoked-before mark
        self.revoked: list[tuple[str, str]] = []  # (user id, token) of every session deleted from Redis

    # -- users -----------------------------------------------------------------------------------------------

    async def _changed(self, user: User | None) -> User | None:
        """A user changed: their session documents are rewritten now, inside the transaction (if Redis fails
        the change rolls back, UNAVAILABLE), and again after commit (the app may write an old copy back)."""
        if user is not None and self._redis is not None:
            await self._redis.rewrite_user(user)
            self.changed_users[user.id] = user
        return user

    async def insert_user(self, user: User) -> User:
        """Insert a user."""
        return await self._sql.insert_user(user)

    async def get_user_with_credential(self, email: str) -> tuple[User, Account | None] | None:
        """The user and credential account by email."""
        return await self._sql.get_user_with_credential(email)

    async def get_user_by_id(self, user_id: str) -> User | None:
        """The user by id."""
        return await self._sql.get_user_by_id(user_id)

    async def get_user_by_email(self, email: str) -> User | None:
        """The user by email."""
        return await self._sql.get_user_by_email(email)

    async def list_users(
        self, limit: int, after: tuple[datetime, str] | None = None, email_prefix: str = ""
    ) -> list[User]:
        """A page of users."""
        return await self._sql.list_users(limit, after, email_prefix)

    async def mark_email_verified(self, user_id: str, email: str, now: datetime) -> User | None:
        """Set emailVerified; the user's session documents follow."""
        return await self._changed(await self._sql.mark_email_verified(user_id, email, now))

    async def change_email(
        self, user_id: str, old_email: str, new_email: str, now: datetime, verified: bool = True
    ) -> User | None:
        """Replace the email; the user's session documents follow."""
        return await self._changed(await self._sql.change_email(user_id, old_email, new_email, now, verified))

    async def update_user(self, user_id: str, changes: dict[str, Any], now: datetime) -> User | None:
        """Update profile fields; the user's session documents follow."""
        return await self._changed(await self._sql.update_user(user_id, changes, now))

    async def delete_user(self, user_id: str) -> bool:
        """Delete the user and every session of theirs, in SQL and in Redis."""
        await self.delete_user_sessions(user_id)
        return await self._sql.delete_user(user_id)

    # -- accounts --------------------------------------------------------------------------------------------

    async def insert_account(self, account: Account) -> str:
        """Insert an account."""
        return await self._sql.insert_account(account)

    async def get_credential_account(self, user_id: str) -> Account | None:
        """The credential account."""
        return await self._sql.get_credential_account(user_id)

    async def update_account_password(self, account: Account, password_hash: str, now: datetime) -> None:
        """Replace a password hash."""
        await self._sql.update_account_password(account, password_hash, now)

    async def lock_credential(self, account_id: str, password_hash: str) -> bool:
        """Lock the credential row."""
        return await self._sql.lock_credential(account_id, password_hash)

    # -- verification values ---------------------------------------------------------------------------------

    async def insert_verification(self, verification: Verification) -> str:
        """Store a verification value where Better Auth looks for it (Redis, and SQL if configured)."""
        if self._redis is not None:
            await self._redis.put_verification(verification, self._clock())
            if not self._verifications_in_sql:
                return verification.id
        return await self._sql.insert_verification(verification)

    async def consume_verification(self, identifier: str, now: datetime) -> str | None:
        """Take a verification value atomically from where Better Auth keeps it."""
        if self._redis is not None and not self._verifications_in_sql:
            return await self._redis.take_verification(identifier, now)
        value = await self._sql.consume_verification(identifier, now)
        if self._redis is not None:
            await self._redis.take_verification(identifier, now)  # the copy Better Auth also wrote there
        return value

    async def verification_exists(self, identifier: str) -> bool:
        """Whether a value is stored under the identifier."""
        if self._redis is not None and not self._verifications_in_sql:
            return await self._redis.has_verification(identifier)
        return await self._sql.verification_exists(identifier)

    async def delete_user_verifications(self, user_id: str, purposes: tuple[str, ...] = ()) -> int:
        """The user's verification rows (values Better Auth keeps only in Redis cannot be found by user: they
        expire on their own)."""
        return await self._sql.delete_user_verifications(user_id, purposes)

    async def delete_expired(self, table: str, now: datetime, limit: int) -> int:
        """Expired rows (Redis expires its own)."""
        return await self._sql.delete_expired(table, now, limit)

    async def delete_old_invalidations(self, before: datetime, limit: int) -> int:
        """Old invalidation log entries."""
        return await self._sql.delete_old_invalidations(before, limit)

    # -- sessions --------------------------------------------------------------------------------------------

    async def insert_session(self, session: Session) -> Session:
        """Insert the row (when sessions live in SQL); the Redis document is written after commit."""
        if self._sessions_in_sql:
            return await self._sql.insert_session(session)
        return replace(session, id=session.id or alphanumeric(32))  # Better Auth's fallback: database-made ids

    async def insert_session_if_credential(
        self, account_id: str, password_hash: str, session: Session
    ) -> Session | None:
        """Insert the row while the credential is unchanged (when sessions live in SQL); else check the credential
        (the Redis document is written after commit)."""
        if self._sessions_in_sql:
            return await self._sql.insert_session_if_credential(account_id, password_hash, session)
        if not await self._sql.lock_credential(account_id, password_hash):
            return None
        return await self.insert_session(session)

    async def refresh_session(self, session: Session, expires_at: datetime, now: datetime) -> bool:
        """Extend the row (when sessions live in SQL); the document is refreshed by the session manager."""
        if self._sessions_in_sql:
            return await self._sql.refresh_session(session, expires_at, now)
        return True

    async def get_session(self, stored_token: str) -> Session | None:
        """The session by stored token, from where Better Auth keeps it."""
        if self._sessions_in_sql:
            return await self._sql.get_session(stored_token)
        assert self._redis is not None
        entry = await self._redis.get(stored_token)
        return entry.session if entry is not None else None

    def record_event(self, entry: OutboxEntry) -> None:
        """An outbox entry of the SQL transaction."""
        self._sql.record_event(entry)

    async def _redis_sessions(self, user_id: str) -> list[Session]:
        if self._redis is None:
            return []
        return [entry.session for entry in await self._redis.sessions_of(user_id, self._clock())]

    async def _forget(self, user_id: str, tokens: list[str], revoke_all: bool = False) -> None:
        if self._redis is not None:
            now = self._clock()
            await self._redis.delete(user_id, tokens, now, revoke_all_before=now if revoke_all else None)
            self.revoked.extend((user_id, token) for token in tokens)
            if not revoke_all:
                self.deleted.append((user_id, tokens))

    async def delete_session_by_token(self, stored_token: str) -> Session | None:
        """Delete one session, in SQL and in Redis."""
        if self._sessions_in_sql:
            deleted = await self._sql.delete_session_by_token(stored_token)
        else:
            assert self._redis is not None
            entry = await self._redis.get(stored_token)
            deleted = entry.session if entry is not None else None
        if deleted is not None:
            await self._forget(deleted.user_id, [deleted.stored_token])
        return deleted

    async def delete_session_by_id(self, user_id: str, session_id: str) -> Session | None:
        """Delete one of the user's sessions by id, in SQL and in Redis."""
        if self._sessions_in_sql:
            deleted = await self._sql.delete_session_by_id(user_id, session_id)
        else:
            deleted = next((s for s in await self._redis_sessions(user_id) if s.id == session_id), None)
        if deleted is not None:
            await self._forget(user_id, [deleted.stored_token])
        return deleted

    async def delete_user_sessions(self, user_id: str, except_session_id: str | None = None) -> list[Session]:
        """Delete the user's sessions (but one), in SQL and in Redis. Revoking all of them also sets Better
        Auth's revoked-sessions-before mark, which covers a session whose reference was lost."""
        if self._sessions_in_sql:
            deleted = await self._sql.delete_user_sessions(user_id, except_session_id)
        else:
            deleted = [s for s in await self._redis_sessions(user_id) if s.id != except_session_id]
        tokens = {s.stored_token for s in deleted}
        if self._redis is not None and except_session_id is None:
            tokens.update(await self._redis.tokens_of(user_id))
        await self._forget(user_id, sorted(tokens), revoke_all=except_session_id is None)
        return deleted

    async def list_user_sessions(self, user_id: str, now: datetime) -> list[Session]:
        """The user's live sessions, newest first."""
        if self._sessions_in_sql:
            return await self._sql.list_user_sessions(user_id, now)
        sessions = await self._redis_sessions(user_id)
        return sorted(sessions, key=lambda s: s.created_at, reverse=True)


class BetterAuthDatabase(DatabasePassThrough):
    """A Database whose units of work also keep Better Auth's Redis layout (``redis`` None: SQL only); the rest is
    the inner database's."""

    def __init__(
        self,
        inner: Database,
        redis: BetterAuthRedis | None,
        sessions_in_database: bool,
        verification_in_database: bool,
        clock: Clock = _utc_now,
    ) -> None:
        if redis is None and not (sessions_in_database and verification_in_database):
            raise ValueError("without Redis, sessions and verification values live in the database")
        super().__init__(inner)
        self.redis = redis
        self.sessions_in_database = sessions_in_database
        self.verification_in_database = verification_in_database
        self.clock = clock
        self._later: dict[asyncio.Task[None], _Later] = {}
        self.on_revoked: Callable[[Invalidations], None] | None = None

    @asynccontextmanager
    async def transaction(self, autocommit: bool = False) -> AsyncIterator[UnitOfWork]:
        """The inner transaction, with Redis deletions inside it and user snapshot rewrites after commit."""
        async with self._inner.transaction(autocommit) as sql:
            uow = _UnitOfWork(sql, self)
            yield uow
        if uow.revoked and self.on_revoked is not None:  # this instance's own record (Redis-only: no SQL log)
            self.on_revoked(Invalidations(sessions=tuple(uow.revoked)))
        if uow.deleted or uow.changed_users:
            work = _Later(uow.deleted, list(uow.changed_users.values()))
            task = asyncio.create_task(self._again(work))
            self._later[task] = work
            task.add_done_callback(self._later.pop)

    async def _again(self, work: _Later) -> None:
        waited = 0.0
        for delay in AGAIN_AFTER:
            await asyncio.sleep(delay - waited)
            waited = delay
            await self._now(work)

    async def _now(self, work: _Later) -> None:
        assert self.redis is not None
        try:
            for user_id, tokens in work.deleted:
                await self.redis.delete(user_id, tokens, self.clock())
            for user in work.users:
                await self.redis.rewrite_user(user)
        except AuthSidecarError:
            log.warning("could not repeat a revocation or profile change in Redis (Redis unavailable)")

    async def find_session(self, stored_token: str) -> SessionWithUser | None:
        """The session row joined with its user (sessions in SQL), else None."""
        if not self.sessions_in_database:
            return None
        return await self._inner.find_session(stored_token)

    async def flush(self) -> None:
        """At shutdown: the repetitions still planned are made now, once."""
        pending = list(self._later.items())
        for task, _ in pending:
            task.cancel()
        for task, work in pending:
            await asyncio.gather(task, return_exceptions=True)
            await self._now(work)


def _check_ports(db: BetterAuthDatabase, uow: _UnitOfWork) -> tuple[Database, UnitOfWork]:
    return db, uow
