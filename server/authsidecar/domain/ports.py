"""Ports owned by the services. Storage and cache implementations are checked against them statically."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from authsidecar.domain.models import Account, Session, SessionWithUser, User, Verification

__all__ = ["USER_REFILL_PAUSE_SECONDS", "Database", "SessionCache", "UnitOfWork"]

# After evict_user, refills for that user are refused this long, so a validation that read the old row just
# before a profile change cannot put the old snapshot back (those validations go to SQL meanwhile).
USER_REFILL_PAUSE_SECONDS = 60


class UnitOfWork(Protocol):
    """Repositories bound to one open transaction. Nothing is committed until the transaction block ends."""

    async def insert_user(self, user: User) -> None:
        """Insert a user; raises Conflict on a duplicate email."""

    async def get_user_with_credential(self, email: str) -> tuple[User, Account | None] | None:
        """The user with that (normalised) email and their credential account, if any."""

    async def get_user_by_id(self, user_id: str) -> User | None:
        """The user with that id."""

    async def get_user_by_email(self, email: str) -> User | None:
        """The user with that (normalised) email."""

    async def mark_email_verified(self, user_id: str, email: str, now: datetime) -> User | None:
        """Set emailVerified if the user still has that email; the updated user, or None."""

    async def change_email(self, user_id: str, old_email: str, new_email: str, now: datetime) -> User | None:
        """Replace (and mark verified) the email if it is still ``old_email``; raises Conflict if taken."""

    async def update_user(self, user_id: str, changes: dict[str, str | None], now: datetime) -> User | None:
        """Set the given profile fields (logical names: name, image); the updated user, or None."""

    async def delete_user(self, user_id: str) -> bool:
        """Delete the user (sessions and accounts cascade); False if it did not exist."""

    async def insert_verification(self, verification: Verification) -> None:
        """Insert a verification row."""

    async def consume_verification(self, identifier: str, now: datetime) -> str | None:
        """Atomically delete an unexpired verification and return its value; None if absent or expired."""

    async def verification_exists(self, identifier: str) -> bool:
        """Whether a row with that identifier exists (expired or not)."""

    async def delete_user_verifications(self, user_id: str) -> int:
        """Delete the verifications whose payload names the user."""

    async def delete_expired(self, table: str, now: datetime, limit: int) -> int:
        """Delete up to ``limit`` rows of ``session`` or ``verification`` that expired before ``now``."""

    async def insert_account(self, account: Account) -> None:
        """Insert an account row."""

    async def get_credential_account(self, user_id: str) -> Account | None:
        """The user's email/password account."""

    async def update_account_password(self, account_id: str, password_hash: str, now: datetime) -> None:
        """Replace an account's password hash."""

    async def insert_session(self, session: Session) -> None:
        """Insert a session row."""

    async def refresh_session(self, stored_token: str, expires_at: datetime, now: datetime) -> bool:
        """Extend a session; False when it no longer exists."""

    async def delete_session_by_token(self, stored_token: str) -> Session | None:
        """Delete one session by token; returns what was deleted."""

    async def delete_session_by_id(self, user_id: str, session_id: str) -> Session | None:
        """Delete one of the user's sessions by id; returns what was deleted."""

    async def delete_user_sessions(self, user_id: str, except_session_id: str | None = None) -> list[Session]:
        """Delete all of the user's sessions (but one); returns what was deleted."""

    async def list_user_sessions(self, user_id: str, now: datetime) -> list[Session]:
        """The user's unexpired sessions, newest first."""


class Database(Protocol):
    """The store of record."""

    def transaction(self, autocommit: bool = False) -> AbstractAsyncContextManager[UnitOfWork]:
        """Open a transaction; commits when the block exits cleanly, rolls back otherwise.
        ``autocommit``: each statement commits on its own (a single write, or reads needing no snapshot)."""

    async def find_session(self, stored_token: str) -> SessionWithUser | None:
        """The hot path's cache-miss query: one round trip, session joined with its user, no transaction."""

    async def ping(self, within: float = 2.0) -> None:
        """Raise BackendUnavailable when the database cannot be reached."""

    async def close(self) -> None:
        """Dispose of the connection pool."""


class SessionCache(Protocol):
    """Secondary storage for validated sessions (Redis or in-process).

    Implementations must never resurrect a revoked session: ``put`` is refused for a key invalidated within
    the last ``ttl`` seconds given to ``invalidate``.
    """

    async def get(self, key: str) -> SessionWithUser | None:
        """The cached session, or None on a miss (or when the cache is unavailable)."""

    async def put(self, key: str, entry: SessionWithUser, ttl: int) -> None:
        """Cache a session for ``ttl`` seconds and index it under its user."""

    async def invalidate(self, user_id: str, keys: Sequence[str], ttl: int) -> None:
        """Remove sessions and block their re-caching for ``ttl`` seconds."""

    async def evict_user(self, user_id: str) -> None:
        """Drop the user's cached sessions (their user snapshot changed); refills pause for
        USER_REFILL_PAUSE_SECONDS, no tombstones (the sessions stay valid)."""

    async def purge(self) -> None:
        """Drop every cached session (used when invalidations may have been lost)."""

    async def close(self) -> None:
        """Release connections."""
