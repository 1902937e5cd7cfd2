"""Administration of users and sessions without a session token (the admin CLI), under the rules of the RPCs.

Every write goes through the store as the other services see it (hooks, the outbox, Better Auth's Redis layout in
that profile), in one unit of work that declares what it invalidates: setting a password revokes the user's
sessions as ResetPassword does, deleting a user as DeleteUser does, and every instance stops validating them
within the invalidation bound (see "Revocation guarantee"). Emails are normalised and passwords checked and hashed
(argon2id or Better Auth's scrypt, as configured) as by SignUp, outside any transaction.
"""

from __future__ import annotations

import base64
import binascii
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from authsidecar.domain.models import CREDENTIAL_PROVIDER, Account, Session, User
from authsidecar.domain.ports import Database
from authsidecar.errors import Conflict, InvalidArgument, MissingField, SessionNotFound, UserAlreadyExists, UserNotFound
from authsidecar.schema_config import as_date
from authsidecar.security.ids import IdGenerator
from authsidecar.security.passwords import PasswordHasher
from authsidecar.services.clock import Clock, utc_now
from authsidecar.services.extra_fields import ExtraFieldRules
from authsidecar.services.limits import OUTSTANDING_LINKS
from authsidecar.services.rules import CredentialRules, normalize_email

__all__ = ["MAX_PAGE", "AdminService", "UserDetails", "UserPage"]

MAX_PAGE = 1000  # users per page of list_users


@dataclass(frozen=True, slots=True)
class UserPage:
    """A page of users; ``next_cursor`` continues after it (None: this was the last page)."""

    users: list[User]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class UserDetails:
    """A user with what an administrator wants to know besides the record (never the password hash)."""

    user: User
    has_password: bool
    active_sessions: int


def _cursor(user: User) -> str:
    raw = json.dumps([user.created_at.isoformat(), user.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _position(cursor: str) -> tuple[datetime, str]:
    """The (createdAt, id) a cursor of ``_cursor`` names; raises InvalidArgument for anything else."""
    try:
        created, user_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        at = as_date(created)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument.field("after", "is not a cursor given by a previous page") from None
    if at is None or not isinstance(user_id, str):
        raise InvalidArgument.field("after", "is not a cursor given by a previous page")
    return at, user_id


class AdminService:
    """Create, find, list, change and delete users; list and revoke their sessions."""

    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher,
        rules: CredentialRules,
        ids: IdGenerator,
        user_fields: ExtraFieldRules | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._db = db
        self._hasher = hasher
        self._rules = rules
        self._ids = ids
        self._user_fields = user_fields or ExtraFieldRules.none()
        self._clock = clock

    async def find_user(self, user_id: str | None = None, email: str | None = None) -> User:
        """The user with that id, or with that email (normalised); raises UserNotFound."""
        if user_id is None and email is None:
            raise MissingField.field("id", "give the user's id or email")
        address = normalize_email(email) if email is not None else ""
        async with self._db.transaction(autocommit=True) as tx:
            user = await (tx.get_user_by_id(user_id) if user_id is not None else tx.get_user_by_email(address))
        if user is None:
            raise UserNotFound(
                f"no user with id {user_id!r}" if user_id is not None else f"no user with email {address}"
            )
        return user

    async def create_user(
        self,
        email: str,
        name: str,
        password: str | None = None,
        verified: bool = False,
        additional: Mapping[str, Any] | None = None,
    ) -> User:
        """A new user, with a credential account when ``password`` is given (without one, the user sets it
        through a password reset); written in one transaction, the unique email deciding duplicates."""
        email = normalize_email(email)
        if not name.strip():
            raise MissingField.field("name", "is required")
        extra = self._user_fields.for_create(additional or {})
        password_hash = None
        if password is not None:
            self._rules.check_password(password)
            password_hash = await self._hasher.hash(password)
        now = self._clock()
        user = User(self._ids("user"), name, email, verified, None, now, now, extra)
        try:
            async with self._db.transaction() as tx:
                user = await tx.insert_user(user)
                if password_hash is not None:
                    account_id = self._ids("account")
                    await tx.insert_account(
                        Account(account_id, user.id, CREDENTIAL_PROVIDER, user.id, password_hash, now, now)
                    )
        except Conflict as exc:
            raise self._user_fields.taken(exc.constraint) or UserAlreadyExists() from exc
        return user

    async def list_users(self, limit: int = 50, after: str | None = None, email_prefix: str = "") -> UserPage:
        """Users oldest first, ``limit`` at a time; ``after``: the cursor of the previous page; ``email_prefix``:
        only addresses starting with it (compared as stored: lower-cased, NFC)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgument.field("limit", f"must be between 1 and {MAX_PAGE}")
        position = _position(after) if after else None
        prefix = unicodedata.normalize("NFC", email_prefix.strip()).lower()
        async with self._db.transaction(autocommit=True) as tx:
            users = await tx.list_users(limit + 1, position, prefix)
        more = len(users) > limit
        users = users[:limit]
        return UserPage(users, _cursor(users[-1]) if more else None)

    async def details(self, user: User) -> UserDetails:
        """Whether the user has a password, and how many unexpired sessions."""
        async with self._db.transaction(autocommit=True) as tx:
            account = await tx.get_credential_account(user.id)
            sessions = await tx.list_user_sessions(user.id, self._clock())
        return UserDetails(user, account is not None and account.password is not None, len(sessions))

    async def set_password(self, user_id: str, password: str, revoke_sessions: bool = True) -> int:
        """Set the user's password (creating the credential account if it has none), as ResetPassword does:
        outstanding reset and email-change links stop working and, unless ``revoke_sessions`` is False, every
        session of the user is revoked. Returns how many sessions were revoked."""
        self._rules.check_password(password)
        password_hash = await self._hasher.hash(password)
        now = self._clock()
        async with self._db.transaction() as tx:
            if await tx.get_user_by_id(user_id) is None:
                raise UserNotFound()
            account = await tx.get_credential_account(user_id)
            if account is not None:
                await tx.update_account_password(account, password_hash, now)
            else:
                await tx.insert_account(
                    Account(self._ids("account"), user_id, CREDENTIAL_PROVIDER, user_id, password_hash, now, now)
                )
            await tx.delete_user_verifications(user_id, OUTSTANDING_LINKS)
            revoked = await tx.delete_user_sessions(user_id) if revoke_sessions else []
        return len(revoked)

    async def verify_email(self, user: User) -> bool:
        """Mark the user's current address verified; False when it already was."""
        if user.email_verified:
            return False
        async with self._db.transaction() as tx:
            if await tx.mark_email_verified(user.id, user.email, self._clock()) is None:
                raise UserNotFound("the user changed or went away meanwhile; look it up again")
        return True

    async def delete_user(self, user_id: str) -> None:
        """Delete the user with its sessions (revoked), accounts and verification tokens, as DeleteUser does."""
        async with self._db.transaction() as tx:
            await tx.delete_user_verifications(user_id)
            if not await tx.delete_user(user_id):
                raise UserNotFound()

    async def list_sessions(self, user_id: str) -> list[Session]:
        """The user's unexpired sessions, newest first."""
        async with self._db.transaction(autocommit=True) as tx:
            return await tx.list_user_sessions(user_id, self._clock())

    async def revoke_session(self, user_id: str, session_id: str) -> None:
        """Revoke one session of the user; raises SessionNotFound."""
        async with self._db.transaction() as tx:
            deleted = await tx.delete_session_by_id(user_id, session_id)
        if deleted is None:
            raise SessionNotFound(f"the user has no session {session_id!r}")

    async def revoke_sessions(self, user_id: str) -> int:
        """Revoke every session of the user; returns how many."""
        async with self._db.transaction() as tx:
            deleted = await tx.delete_user_sessions(user_id)
        return len(deleted)
