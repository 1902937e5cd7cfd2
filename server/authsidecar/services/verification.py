"""Verification tokens and the flows built on them: email verification, email change, password reset.

Tokens are 256-bit random strings. Only their SHA-256 is stored, in ``verification.identifier`` as
``<purpose>:<digest>``; ``value`` is a JSON payload that starts with the user id. Consuming a token is one
atomic DELETE ... RETURNING, so a token works once even under concurrent use; an expired token answers
TOKEN_EXPIRED, any other INVALID_TOKEN, and neither changes anything.

Requests that could reveal whether an address is registered (SendVerificationEmail, RequestPasswordReset) do
no database work on the request path at all: they queue a job, so the answer and its timing are the same
either way.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from authsidecar.delivery.messages import Message, render_link
from authsidecar.delivery.queue import DeliveryQueue
from authsidecar.domain.models import CREDENTIAL_PROVIDER, Account, User, Verification
from authsidecar.domain.ports import Database, UnitOfWork
from authsidecar.errors import Conflict, InvalidEmail, InvalidToken, TokenExpired, UserAlreadyExists
from authsidecar.security.ids import IdGenerator, id_generator
from authsidecar.security.passwords import PasswordHasher
from authsidecar.services.accounts import AuthResult
from authsidecar.services.clock import Clock, utc_now
from authsidecar.services.rules import CredentialRules, normalize_email
from authsidecar.services.sessions import ClientInfo, SessionManager

__all__ = ["VERIFY_EMAIL", "AccountFlows", "FlowSettings", "VerificationTokens"]

VERIFY_EMAIL = "verify-email"
CHANGE_EMAIL = "change-email"
RESET_PASSWORD = "reset-password"  # noqa: S105 - a purpose name


class VerificationTokens:
    """Issue and consume single-use tokens in the ``verification`` table."""

    def __init__(self, clock: Clock = utc_now, ids: IdGenerator | None = None) -> None:
        self._clock = clock
        self._ids = ids or id_generator("random")

    @staticmethod
    def identifier(purpose: str, token: str) -> str:
        """What is stored for a token: its purpose and digest, never the token."""
        return f"{purpose}:{hashlib.sha256(token.encode()).hexdigest()}"

    async def issue(
        self, tx: UnitOfWork, purpose: str, payload: dict[str, Any], ttl: timedelta
    ) -> tuple[str, datetime]:
        """A new token for ``payload`` (which must start with "userId"); returns it with its expiry."""
        assert next(iter(payload)) == "userId"
        token = secrets.token_urlsafe(32)
        now = self._clock()
        expires_at = now + ttl
        value = json.dumps(payload, separators=(",", ":"))
        await tx.insert_verification(
            Verification(self._ids("verification"), self.identifier(purpose, token), value, expires_at, now, now)
        )
        return token, expires_at

    async def consume(self, tx: UnitOfWork, purposes: tuple[str, ...], token: str) -> tuple[str, dict[str, Any]]:
        """The purpose and payload of a valid token, deleting it; raises InvalidToken / TokenExpired."""
        now = self._clock()
        for purpose in purposes:
            value = await tx.consume_verification(self.identifier(purpose, token), now)
            if value is not None:
                payload: dict[str, Any] = json.loads(value)
                return purpose, payload
        for purpose in purposes:
            if await tx.verification_exists(self.identifier(purpose, token)):
                raise TokenExpired()
        raise InvalidToken("invalid or already used token")


@dataclass(frozen=True, slots=True)
class FlowSettings:
    """The configurable parts of the flows."""

    link_template: str = "http://localhost:3000/auth/{purpose}?token={token}"
    verify_email_ttl: timedelta = timedelta(hours=1)
    change_email_ttl: timedelta = timedelta(hours=1)
    reset_password_ttl: timedelta = timedelta(hours=1)
    auto_sign_in_after_verification: bool = False
    revoke_sessions_on_password_reset: bool = True


class AccountFlows:
    """Email verification, email change and password reset."""

    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher,
        sessions: SessionManager,
        rules: CredentialRules,
        outbox: DeliveryQueue,
        settings: FlowSettings,
        clock: Clock = utc_now,
    ) -> None:
        self._db = db
        self._hasher = hasher
        self._sessions = sessions
        self._rules = rules
        self._outbox = outbox
        self._settings = settings
        self._clock = clock
        self._tokens = VerificationTokens(clock, sessions.ids)

    def _message(self, purpose: str, to: str, user: User, token: str, expires_at: datetime) -> Message:
        url = render_link(self._settings.link_template, purpose, token)
        return Message(purpose, to, user.name, token, url, expires_at, user.id)

    # -- email verification ----------------------------------------------------------------------------------

    async def _verification_job(self, email: str) -> Message | None:
        async with self._db.transaction() as tx:
            user = await tx.get_user_by_email(email)
            if user is None or user.email_verified:
                return None
            payload = {"userId": user.id, "email": user.email}
            token, expires = await self._tokens.issue(tx, VERIFY_EMAIL, payload, self._settings.verify_email_ttl)
        return self._message(VERIFY_EMAIL, user.email, user, token, expires)

    def send_verification(self, email: str) -> None:
        """Queue a verification message for an unverified user with that (already normalised) address."""
        self._outbox.submit(lambda: self._verification_job(email))

    async def send_verification_email(self, raw_email: str) -> None:
        """SendVerificationEmail: same answer whether or not the address exists."""
        self.send_verification(normalize_email(raw_email))

    async def verify_email(self, token: str, client: ClientInfo) -> AuthResult:
        """Consume a verify-email or change-email token and apply it."""
        now, read_at = self._clock(), time.time()
        try:
            async with self._db.transaction() as tx:
                purpose, payload = await self._tokens.consume(tx, (VERIFY_EMAIL, CHANGE_EMAIL), token)
                if purpose == VERIFY_EMAIL:
                    user = await tx.mark_email_verified(payload["userId"], payload["email"], now)
                else:
                    user = await tx.change_email(payload["userId"], payload["email"], payload["newEmail"], now)
                if user is None:  # the account changed or went away since the token was issued
                    raise InvalidToken("the token no longer matches the account")
        except Conflict as exc:  # the new address was taken meanwhile; the token stays usable
            raise UserAlreadyExists() from exc
        if not self._settings.auto_sign_in_after_verification:
            return AuthResult(user)
        session, session_token = await self._sessions.open_session(user, client, read_at)
        return AuthResult(user, session, session_token)

    # -- email change ----------------------------------------------------------------------------------------

    async def change_email(self, session_token: str, raw_new_email: str) -> None:
        """Send a verification to the new address; the change applies when it is verified."""
        new_email = normalize_email(raw_new_email, field="new_email")
        current = await self._sessions.validate(session_token)
        self._sessions.require_fresh(current)
        user = current.user
        if new_email == user.email:
            raise InvalidEmail.field("new_email", "is already the user's email")
        async with self._db.transaction() as tx:
            if await tx.get_user_by_email(new_email) is not None:
                raise UserAlreadyExists()
            payload = {"userId": user.id, "email": user.email, "newEmail": new_email}
            token, expires = await self._tokens.issue(tx, CHANGE_EMAIL, payload, self._settings.change_email_ttl)
        self._outbox.submit_message(self._message(CHANGE_EMAIL, new_email, user, token, expires))

    # -- password reset --------------------------------------------------------------------------------------

    async def _reset_job(self, email: str) -> Message | None:
        async with self._db.transaction() as tx:
            user = await tx.get_user_by_email(email)
            if user is None:
                return None
            payload = {"userId": user.id}
            token, expires = await self._tokens.issue(tx, RESET_PASSWORD, payload, self._settings.reset_password_ttl)
        return self._message(RESET_PASSWORD, user.email, user, token, expires)

    async def request_password_reset(self, raw_email: str) -> None:
        """RequestPasswordReset: same answer whether or not the address exists."""
        email = normalize_email(raw_email)
        self._outbox.submit(lambda: self._reset_job(email))

    async def reset_password(self, token: str, new_password: str) -> None:
        """Consume a reset token, set the password, and (by default) revoke every session of the user."""
        self._rules.check_password(new_password, field="new_password")
        identifier = VerificationTokens.identifier(RESET_PASSWORD, token)
        async with self._db.transaction(autocommit=True) as tx:  # cheap check before spending a hash
            if not await tx.verification_exists(identifier):
                raise InvalidToken("invalid or already used token")
        password_hash = await self._hasher.hash(new_password)
        now = self._clock()
        async with self._db.transaction() as tx:
            _, payload = await self._tokens.consume(tx, (RESET_PASSWORD,), token)
            user_id = payload["userId"]
            account = await tx.get_credential_account(user_id)
            if account is not None:
                await tx.update_account_password(account.id, password_hash, now)
            elif await tx.get_user_by_id(user_id) is not None:
                await tx.insert_account(
                    Account(
                        self._sessions.ids("account"), user_id, CREDENTIAL_PROVIDER, user_id, password_hash, now, now
                    )
                )
            else:
                raise InvalidToken("the token no longer matches the account")
            if self._settings.revoke_sessions_on_password_reset:
                await tx.delete_user_sessions(user_id)
