"""Ports owned by the services. Storage and cache implementations are checked against them statically."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from authsidecar.domain.models import (
    Account,
    Invalidations,
    OutboxEntry,
    OutboxRow,
    Session,
    SessionWithUser,
    User,
    Verification,
)

__all__ = [
    "AccountStore",
    "Database",
    "EventStore",
    "InvalidationLog",
    "Outbox",
    "RetentionStore",
    "SessionCache",
    "SessionStore",
    "UnitOfWork",
    "UserStore",
    "VerificationStore",
]


class UserStore(Protocol):
    """Users (the ``user`` table and its additional fields)."""

    async def insert_user(self, user: User) -> User:
        """Insert a user; raises Conflict on a duplicate email. Returns the user as stored: with the id the
        database assigned when ``user.id`` is empty (``generate_id`` false / "serial"), and whatever a before
        hook changed; likewise for sessions."""

    async def get_user_with_credential(self, email: str) -> tuple[User, Account | None] | None:
        """The user with that (normalised) email and their credential account, if any."""

    async def get_user_by_id(self, user_id: str) -> User | None:
        """The user with that id."""

    async def get_user_by_email(self, email: str) -> User | None:
        """The user with that (normalised) email."""

    async def list_users(
        self, limit: int, after: tuple[datetime, str] | None = None, email_prefix: str = ""
    ) -> list[User]:
        """Up to ``limit`` users in (createdAt, id) order, those after the position ``after`` (createdAt, id) only,
        and only those whose email starts with ``email_prefix`` (normalised) when given."""

    async def mark_email_verified(self, user_id: str, email: str, now: datetime) -> User | None:
        """Set emailVerified if the user still has that email; the updated user, or None."""

    async def change_email(
        self, user_id: str, old_email: str, new_email: str, now: datetime, verified: bool = True
    ) -> User | None:
        """Replace the email (emailVerified := ``verified``) if it is still ``old_email``; raises Conflict if
        taken."""

    async def update_user(self, user_id: str, changes: dict[str, Any], now: datetime) -> User | None:
        """Set the given fields (logical names: name, image, additional fields); the updated user, or None."""

    async def delete_user(self, user_id: str) -> bool:
        """Delete the user, its sessions (declared revoked) and accounts; False if it did not exist."""


class AccountStore(Protocol):
    """Accounts: the email/password credential."""

    async def insert_account(self, account: Account) -> str:
        """Insert an account row; returns its id."""

    async def get_credential_account(self, user_id: str) -> Account | None:
        """The user's email/password account."""

    async def update_account_password(self, account: Account, password_hash: str, now: datetime) -> None:
        """Replace an account's password hash."""

    async def lock_credential(self, account_id: str, password_hash: str) -> bool:
        """Lock the account row until the transaction ends; True if its password hash is still ``password_hash``."""


class SessionStore(Protocol):
    """Sessions of record (SQL; Better Auth's Redis layout in that profile)."""

    async def insert_session(self, session: Session) -> Session:
        """Insert a session row; returns it as stored."""

    async def insert_session_if_credential(
        self, account_id: str, password_hash: str, session: Session
    ) -> Session | None:
        """Insert a session row only while the credential account's hash is still ``password_hash``, with that
        account's row locked until the transaction ends (a password change or reset that committed first wins;
        one that comes later waits, then revokes this session too); returns it as stored, None when the hash
        changed. One statement, so it is atomic even in an autocommit block."""

    async def refresh_session(self, session: Session, expires_at: datetime, now: datetime) -> bool:
        """Extend a session; False when it no longer exists."""

    async def get_session(self, stored_token: str) -> Session | None:
        """The session with that stored token (expired or not)."""

    async def delete_session_by_token(self, stored_token: str) -> Session | None:
        """Delete one session by token; returns what was deleted."""

    async def delete_session_by_id(self, user_id: str, session_id: str) -> Session | None:
        """Delete one of the user's sessions by id; returns what was deleted."""

    async def delete_user_sessions(self, user_id: str, except_session_id: str | None = None) -> list[Session]:
        """Delete all of the user's sessions (but one); returns what was deleted."""

    async def list_user_sessions(self, user_id: str, now: datetime) -> list[Session]:
        """The user's unexpired sessions, newest first."""


class VerificationStore(Protocol):
    """Verification values: email links, reset tokens, plugins' codes."""

    async def insert_verification(self, verification: Verification) -> str:
        """Insert a verification row; returns its id."""

    async def consume_verification(self, identifier: str, now: datetime) -> str | None:
        """Atomically delete an unexpired verification and return its value; None if absent or expired."""

    async def verification_exists(self, identifier: str) -> bool:
        """Whether a row with that identifier exists (expired or not)."""

    async def delete_user_verifications(self, user_id: str, purposes: tuple[str, ...] = ()) -> int:
        """Delete the verifications whose payload names the user (only those of ``purposes`` when given)."""


class RetentionStore(Protocol):
    """Batched removal of rows nobody needs any more (cleanup, not hooked)."""

    async def delete_expired(self, table: str, now: datetime, limit: int) -> int:
        """Delete up to ``limit`` rows of ``session`` or ``verification`` that expired before ``now``."""

    async def delete_old_invalidations(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` invalidation log entries written before ``before``."""


class EventStore(Protocol):
    """Outbox entries written in the transaction (plugins' own events)."""

    def record_event(self, entry: OutboxEntry) -> None:
        """Write an outbox entry in this transaction (at its end, numbered in commit order)."""


class UnitOfWork(UserStore, AccountStore, SessionStore, VerificationStore, RetentionStore, EventStore, Protocol):
    """Repositories bound to one open transaction. Nothing is committed until the transaction block ends.

    Writes that make cached snapshots stale (deleting sessions, changing or deleting a user) declare it
    themselves: the transaction logs the invalidations in the same commit and hands them to the commit
    listeners afterwards. Services never invalidate caches by hand.
    """


class InvalidationLog(Protocol):
    """The durable log of invalidations, numbered in commit order without gaps, that every instance follows."""

    async def invalidation_cursor(self) -> int:
        """The sequence number of the last committed entry (0: none yet)."""

    async def invalidations_after(self, seq: int, limit: int) -> list[tuple[int, Invalidations]]:
        """Up to ``limit`` entries after ``seq``, in order."""

    async def invalidations_since(self, since: datetime, upto: int) -> list[tuple[int, Invalidations]]:
        """Entries written after ``since`` with a sequence number up to ``upto``, in order."""

    async def listen_for_invalidations(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` soon after any instance logs an entry, until cancelled; return at once when the store
        cannot announce entries (then polling alone applies)."""

    async def database_time(self) -> float:
        """The store's own wall clock now (Unix seconds), the time every instance stamps snapshots in."""


class Outbox(Protocol):
    """The delivery side of the transactional outbox."""

    async def pending(self, limit: int, now: datetime) -> list[OutboxRow]:
        """The oldest deliverable entries in commit order: live, due at ``now``, and with no earlier live entry of
        their (target, key) waiting for a retry."""

    async def delivered(self, seqs: list[int]) -> None:
        """Remove delivered entries."""

    async def failed(self, seq: int, attempts: int, next_attempt_at: datetime, error: str, dead: bool) -> None:
        """Record a failed attempt; ``dead``: give up on the entry (it stays, for inspection)."""

    async def acquire_lease(self, holder: str, now: datetime, until: datetime) -> bool:
        """Take or renew the delivery lease until ``until``; False when another holder's lease is live."""

    async def release_lease(self, holder: str) -> None:
        """Give the lease up (at shutdown)."""

    async def backlog(self) -> tuple[int, int]:
        """(live entries, dead entries)."""

    async def delete_dead(self, before: datetime, limit: int) -> int:
        """Remove up to ``limit`` dead entries written before ``before``."""


class Database(InvalidationLog, Protocol):
    """The store of record."""

    def add_commit_listener(self, listener: Callable[[Invalidations], Awaitable[None]]) -> None:
        """Call ``listener`` after every commit of this process that logged invalidations."""

    def add_outbox_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every commit of this process that wrote outbox entries."""

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

    A cache is a copy, never the authority: what it returns is checked by the coherence rules before it is
    trusted. ``put`` is refused for a key invalidated within the last ``ttl`` seconds given to ``invalidate``,
    so a refill racing a revocation does not even reach the cache. ``shared`` is True when other instances
    read the same cache (Redis), False for an in-process one.
    """

    shared: bool

    async def get(self, key: str) -> SessionWithUser | None:
        """The cached session, or None on a miss (or when the cache is unavailable)."""

    async def put(self, key: str, entry: SessionWithUser, ttl: int) -> None:
        """Cache a session for ``ttl`` seconds and index it under its user."""

    async def invalidate(self, user_id: str, keys: Sequence[str], ttl: int) -> None:
        """Remove sessions and block their re-caching for ``ttl`` seconds."""

    async def evict_user(self, user_id: str) -> None:
        """Drop the user's cached sessions (their user snapshot changed); no tombstones (they stay valid)."""

    async def close(self) -> None:
        """Release connections."""
