"""Verification tokens and the flows built on them: email verification, email change, password reset.

Tokens are 256-bit random strings. Only their SHA-256 is stored, in ``verification.identifier`` as
``<purpose>:<digest>``; ``value`` is a JSON payload that starts with the user id. Consuming a token is one
atomic DELETE ... RETURNING, so a token works once even under concurrent use; an expired token answers
TOKEN_EXPIRED, any other INVALID_TOKEN, and neither changes anything.

How email verification and email change links carry their token is an ``EmailLinks`` strategy, chosen once by
the composition root: ``StoredLinks`` (tokens of the verification table) here, Better Auth's formats in the
compatibility profile (services/better_auth_links.py: stateless JWT links, plain reset tokens).

Requests that could reveal whether an address is registered (SendVerificationEmail, RequestPasswordReset) do
no database work on the request path at all: they queue a job, so the answer and its timing are the same
either way.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from authsidecar.delivery.messages import Message, render_link
from authsidecar.delivery.queue import DeliveryQueue
from authsidecar.domain.models import CREDENTIAL_PROVIDER, Account, User, Verification
from authsidecar.domain.ports import Database, UnitOfWork
from authsidecar.errors import (
    Conflict,
    CredentialAccountNotFound,
    InvalidEmail,
    InvalidPassword,
    InvalidToken,
    RateLimited,
    TokenExpired,
    UserAlreadyExists,
)
from authsidecar.security.ids import IdGenerator, id_generator
from authsidecar.security.passwords import PasswordHasher
from authsidecar.services.accounts import AuthResult, SignInGate
from authsidecar.services.clock import Clock, utc_now
from authsidecar.services.limits import OUTSTANDING_LINKS, Limits, LoginGuard, MailThrottle
from authsidecar.services.profile import verify_current_password
from authsidecar.services.rules import CredentialRules, normalize_email
from authsidecar.services.sessions import ClientInfo, SessionManager

__all__ = [
    "APPROVE_EMAIL_CHANGE",
    "CHANGE_EMAIL",
    "VERIFY_EMAIL",
    "AccountFlows",
    "EmailLinks",
    "FlowSettings",
    "LinkClaims",
    "StoredLinks",
    "VerificationTokens",
]

VERIFY_EMAIL = "verify-email"
CHANGE_EMAIL = "change-email"
APPROVE_EMAIL_CHANGE = "approve-email-change"
EMAIL_CHANGED = "email-changed"  # the notice to the former address (no token)
RESET_PASSWORD = "reset-password"  # noqa: S105 - a purpose name
_OUTSTANDING = OUTSTANDING_LINKS  # reset-password, change-email, approve-email-change


class VerificationTokens:
    """Issue and consume single-use tokens in the ``verification`` table (or wherever the unit of work keeps
    verification values): random tokens, stored as their digest with a JSON value."""

    def __init__(self, clock: Clock = utc_now, ids: IdGenerator | None = None) -> None:
        self._clock = clock
        self._ids = ids or id_generator("random")

    def identifier(self, purpose: str, token: str) -> str:
        """What is stored for a token: its purpose and digest."""
        return f"{purpose}:{hashlib.sha256(token.encode()).hexdigest()}"

    def new(self, payload: dict[str, Any]) -> tuple[str, str]:
        """A new token for ``payload`` and the value stored with it."""
        return secrets.token_urlsafe(32), json.dumps(payload, separators=(",", ":"))

    async def issue(
        self, tx: UnitOfWork, purpose: str, payload: dict[str, Any], ttl: timedelta
    ) -> tuple[str, datetime]:
        """A new token for ``payload`` (which must start with "userId"); returns it with its expiry."""
        assert next(iter(payload)) == "userId"
        token, value = self.new(payload)
        now = self._clock()
        expires_at = now + ttl
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
                payload: dict[str, Any] = json.loads(value) if value.startswith("{") else {"userId": value}
                return purpose, payload
        for purpose in purposes:
            if await tx.verification_exists(self.identifier(purpose, token)):
                raise TokenExpired()
        raise InvalidToken("invalid or already used token")


@dataclass(frozen=True, slots=True)
class LinkClaims:
    """What a stateless link says: the address it was issued for, its user (None: the user of that address), the
    new address of an email change, and its kind (Better Auth's ``requestType``, None for an older token)."""

    email: str
    user_id: str | None
    update_to: str | None
    request_type: object


class EmailLinks(Protocol):
    """The tokens of email-verification and email-change links (and the verification table's tokens, for
    password reset): ``StoredLinks``, or Better Auth's (services/better_auth_links.py)."""

    tokens: VerificationTokens  # the verification table's single-use tokens

    async def issue(
        self, tx: UnitOfWork, purpose: str, user: User, new_email: str | None, ttl: timedelta
    ) -> tuple[str, datetime]:
        """A link token of ``purpose`` (VERIFY_EMAIL, or CHANGE_EMAIL / APPROVE_EMAIL_CHANGE with ``new_email``)
        for the user at its current address, with its expiry."""

    def claims(self, token: str, now: datetime) -> LinkClaims | None:
        """What a stateless link token says (raises InvalidToken / TokenExpired when it does not verify); None:
        not one, a token of the verification table."""


class StoredLinks:
    """Links carrying single-use tokens of the verification table, whose value holds the addresses."""

    def __init__(self, clock: Clock = utc_now, ids: IdGenerator | None = None) -> None:
        self.tokens = VerificationTokens(clock, ids)

    async def issue(
        self, tx: UnitOfWork, purpose: str, user: User, new_email: str | None, ttl: timedelta
    ) -> tuple[str, datetime]:
        """A token of the verification table for ``{"userId", "email", "newEmail"?}``."""
        payload = {"userId": user.id, "email": user.email}
        if new_email is not None:
            payload["newEmail"] = new_email
        return await self.tokens.issue(tx, purpose, payload, ttl)

    def claims(self, token: str, now: datetime) -> LinkClaims | None:
        """None: every link token is one of the verification table."""
        return None


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
        links: EmailLinks | None = None,
        limits: Limits | None = None,
        mail: MailThrottle | None = None,
        guard: LoginGuard | None = None,
    ) -> None:
        self._limits = limits or Limits.off()
        self._guard = guard or LoginGuard(self._limits)
        self._mail = mail or MailThrottle(self._limits, interval=0)
        self._db = db
        self._hasher = hasher
        self._sessions = sessions
        self._rules = rules
        self._outbox = outbox
        self._settings = settings
        self._clock = clock
        self._links = links or StoredLinks(clock, sessions.ids)  # the profile's link tokens (composition root)
        self._tokens = self._links.tokens
        self.gates: list[SignInGate] = []  # plugins' sign-in gates (a second factor, bans): links never bypass them

    def _message(self, purpose: str, to: str, user: User, token: str, expires_at: datetime) -> Message:
        url = render_link(self._settings.link_template, purpose, token)
        return Message(purpose, to, user.name, token, url, expires_at, user.id)

    # -- email verification ----------------------------------------------------------------------------------

    async def _verification_job(self, email: str) -> Message | None:
        async with self._db.transaction() as tx:
            user = await tx.get_user_by_email(email)
            if user is None or user.email_verified or await self._mail.wait(VERIFY_EMAIL, user.email):
                return None
            token, expires = await self._links.issue(tx, VERIFY_EMAIL, user, None, self._settings.verify_email_ttl)
        return self._message(VERIFY_EMAIL, user.email, user, token, expires)

    def send_verification(self, email: str) -> None:
        """Queue a verification message for an unverified user with that (already normalised) address."""
        self._outbox.submit(lambda: self._verification_job(email))

    async def send_verification_email(self, raw_email: str, client: ClientInfo | None = None) -> None:
        """SendVerificationEmail: same answer whether or not the address exists."""
        email = normalize_email(raw_email)
        await self._limits.check("SendVerificationEmail", (client or ClientInfo()).ip_address, email)
        self.send_verification(email)

    async def verify_email(self, token: str, client: ClientInfo) -> AuthResult:
        """Consume a verify-email or change-email token and apply it."""
        await self._limits.check("VerifyEmail", client.ip_address, None)
        now, read_at = self._clock(), self._sessions.stamp()
        try:
            claims = self._links.claims(token, now)
            if claims is None:
                user, applied = await self._apply_token(token, now)
            else:
                user, applied = await self._apply_claims(claims, now)
            if not applied:  # already verified, or an approval: nothing changed, no session (as Better Auth)
                return AuthResult(user)
        except Conflict as exc:  # the new address was taken meanwhile; the token stays usable
            raise UserAlreadyExists() from exc
        if not self._settings.auto_sign_in_after_verification:
            return AuthResult(user)
        if any(gate.guards(user) for gate in self.gates):  # a second factor first, or banned: no session from a link
            return AuthResult(user)
        session, session_token = await self._sessions.open_session(user, client, read_at)
        return AuthResult(user, session, session_token)

    async def _apply_token(self, token: str, now: datetime) -> tuple[User, bool]:
        """Apply a token of the verification table; False when it was an approval (nothing changed yet)."""
        async with self._db.transaction() as tx:
            purpose, payload = await self._tokens.consume(tx, (VERIFY_EMAIL, CHANGE_EMAIL, APPROVE_EMAIL_CHANGE), token)
            if purpose == APPROVE_EMAIL_CHANGE:  # the current address approved: now confirm the new one
                user = await tx.get_user_by_id(payload["userId"])
                if user is None or user.email != payload["email"]:
                    raise InvalidToken("the token no longer matches the account")
                await self._confirm_new_address(tx, user, payload["newEmail"])
                return user, False
            if purpose == VERIFY_EMAIL:
                user = await tx.mark_email_verified(payload["userId"], payload["email"], now)
            else:
                user = await tx.change_email(payload["userId"], payload["email"], payload["newEmail"], now)
                if user is not None:  # links sent to the old address die with it
                    await tx.delete_user_verifications(user.id, (*_OUTSTANDING, VERIFY_EMAIL))
                    self._tell_former_address(payload["email"], user)
            if user is None:  # the account changed or went away since the token was issued
                raise InvalidToken("the token no longer matches the account")
        return user, True

    async def _apply_claims(self, claims: LinkClaims, now: datetime) -> tuple[User, bool]:
        """A stateless link (Better Auth's verification JWT): mark the address verified, or apply the email change
        it carries (the bound user must still have the address it was issued for). False: already verified."""
        email, user_id, update_to, request_type = claims.email, claims.user_id, claims.update_to, claims.request_type
        async with self._db.transaction() as tx:
            user = await (tx.get_user_by_id(user_id) if user_id is not None else tx.get_user_by_email(email))
            if user is None or user.email != email.lower():
                raise InvalidToken("the token no longer matches the account")
            if update_to is not None and request_type == "change-email-confirmation":
                # The current address approved (Better Auth's confirmation): now confirm the new one.
                await self._confirm_new_address(tx, user, normalize_email(update_to))
                return user, False
            if update_to is not None:
                # As Better Auth: a "change-email-verification" keeps the user's emailVerified; an older token
                # without requestType changes the address unverified (and a verification goes to it below).
                verified = user.email_verified if request_type == "change-email-verification" else False
                new_email = normalize_email(update_to)
                changed = await tx.change_email(user.id, user.email, new_email, now, verified)
                if changed is not None:  # links sent to the old address die with it
                    await tx.delete_user_verifications(user.id, (*_OUTSTANDING, VERIFY_EMAIL))
                    self._tell_former_address(user.email, changed)
            elif user.email_verified:
                return user, False
            else:
                changed = await tx.mark_email_verified(user.id, user.email, now)
            if changed is None:
                raise InvalidToken("the token no longer matches the account")
        if update_to is not None and not changed.email_verified and request_type is None:
            self.send_verification(changed.email)
        return changed, True

    # -- email change ----------------------------------------------------------------------------------------

    async def change_email(
        self,
        session_token: str,
        raw_new_email: str,
        client: ClientInfo | None = None,
        current_password: str = "",
    ) -> None:
        """Start an email change. When the current address is verified, it must approve first (a link to it),
        unless ``current_password`` is given and right; then a confirmation goes to the new address, and the
        change applies when it is confirmed (the former address is told). Outstanding reset and email-change
        links of the user stop working."""
        new_email = normalize_email(raw_new_email, field="new_email")
        current = await self._sessions.validate(session_token)
        self._sessions.require_fresh(current)
        user = current.user
        ip = (client or ClientInfo()).ip_address
        await self._limits.check("ChangeEmail", ip, user.id)
        if new_email == user.email:
            raise InvalidEmail.field("new_email", "is already the user's email")
        approved = not user.email_verified or (current_password and await self._password_ok(user, current_password, ip))
        purpose, address = (CHANGE_EMAIL, new_email) if approved else (APPROVE_EMAIL_CHANGE, user.email)
        wait = await self._mail.wait(purpose, address)
        if wait:
            raise RateLimited(wait)
        async with self._db.transaction() as tx:
            if await tx.get_user_by_email(new_email) is not None:
                raise UserAlreadyExists()
            await tx.delete_user_verifications(user.id, _OUTSTANDING)
            if approved:
                await self._confirm_new_address(tx, user, new_email, throttled=False)
                return
            token, expires = await self._links.issue(
                tx, APPROVE_EMAIL_CHANGE, user, new_email, self._settings.change_email_ttl
            )
        self._outbox.submit_message(self._message(APPROVE_EMAIL_CHANGE, user.email, user, token, expires))

    async def _password_ok(self, user: User, password: str, ip: str | None) -> bool:
        """Check the current password (raises InvalidPassword when wrong or when the user has none)."""
        try:
            await verify_current_password(self._db, self._hasher, self._guard, user, password, ip)
        except CredentialAccountNotFound:
            raise InvalidPassword() from None
        return True

    async def _confirm_new_address(self, tx: UnitOfWork, user: User, new_email: str, throttled: bool = True) -> None:
        """Issue the confirmation link and send it to the new address (after the transaction commits), at most
        one per address and interval (``throttled`` False: the caller counted it already)."""
        if throttled:
            wait = await self._mail.wait(CHANGE_EMAIL, new_email)
            if wait:
                raise RateLimited(wait)
        token, expires = await self._links.issue(tx, CHANGE_EMAIL, user, new_email, self._settings.change_email_ttl)
        self._outbox.submit_message(self._message(CHANGE_EMAIL, new_email, user, token, expires))

    def _tell_former_address(self, former: str, user: User) -> None:
        """After an email change: a notice to the address the account had (no link, no token)."""
        notice = Message(EMAIL_CHANGED, former, user.name, "", "", self._clock(), user.id, detail=user.email)
        self._outbox.submit_message(notice)

    async def _reset_job(self, email: str) -> Message | None:
        async with self._db.transaction() as tx:
            user = await tx.get_user_by_email(email)
            if user is None or await self._mail.wait(RESET_PASSWORD, user.email):
                return None
            await tx.delete_user_verifications(user.id, (RESET_PASSWORD,))  # a new link replaces older ones
            payload = {"userId": user.id}
            token, expires = await self._tokens.issue(tx, RESET_PASSWORD, payload, self._settings.reset_password_ttl)
        return self._message(RESET_PASSWORD, user.email, user, token, expires)

    async def request_password_reset(self, raw_email: str, client: ClientInfo | None = None) -> None:
        """RequestPasswordReset: same answer whether or not the address exists."""
        email = normalize_email(raw_email)
        await self._limits.check("RequestPasswordReset", (client or ClientInfo()).ip_address, email)
        self._outbox.submit(lambda: self._reset_job(email))

    async def reset_password(self, token: str, new_password: str, client: ClientInfo | None = None) -> None:
        """Consume a reset token, set the password, and (by default) revoke every session of the user; every other
        outstanding reset or email-change link of the user stops working."""
        await self._limits.check("ResetPassword", (client or ClientInfo()).ip_address, None)
        self._rules.check_password(new_password, field="new_password")
        identifier = self._tokens.identifier(RESET_PASSWORD, token)
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
                await tx.update_account_password(account, password_hash, now)
            elif await tx.get_user_by_id(user_id) is not None:
                await tx.insert_account(
                    Account(
                        self._sessions.ids("account"), user_id, CREDENTIAL_PROVIDER, user_id, password_hash, now, now
                    )
                )
            else:
                raise InvalidToken("the token no longer matches the account")
            await tx.delete_user_verifications(user_id, _OUTSTANDING)
            if self._settings.revoke_sessions_on_password_reset:
                await tx.delete_user_sessions(user_id)
