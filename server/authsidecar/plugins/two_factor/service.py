"""Two-factor authentication (no gRPC, no SQL): enrolment, the sign-in challenge and its completion.

- Enrolment: EnableTwoFactor (password) writes the encrypted secret and backup codes, unverified; ConfirmTwoFactor
  with a code from the authenticator app marks the row verified and sets ``user.twoFactorEnabled`` (as Better
  Auth's verify-totp does on first use).
- Sign-in: a correct password of a user with ``twoFactorEnabled`` yields a challenge: a random token whose SHA-256
  names a verification row (``two-factor:<digest>``, value {"userId", "rememberMe", "attempts"}) that expires in
  ``challenge_ttl``. Each attempt takes the row (one DELETE ... RETURNING: two concurrent attempts cannot both
  use it) and puts it back with one more attempt on a wrong code, until ``challenge_attempts``.
- Per user: ``max_failures`` wrong codes in a row (any challenge, and enrolment confirmations) lock two-factor
  sign-in for ``lock_seconds`` (Better Auth's failedVerificationCount / lockedUntil).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from authsidecar.domain.models import User, Verification
from authsidecar.domain.ports import Database
from authsidecar.errors import InvalidToken, UserNotFound
from authsidecar.plugins.two_factor import formats
from authsidecar.plugins.two_factor.errors import (
    InvalidTwoFactorCode,
    TwoFactorAlreadyEnabled,
    TwoFactorLocked,
    TwoFactorNotEnabled,
)
from authsidecar.plugins.two_factor.store import TwoFactorRow, TwoFactorStore
from authsidecar.security.ids import generate_id
from authsidecar.security.passwords import PasswordHasher
from authsidecar.services.accounts import AuthResult, Challenge
from authsidecar.services.limits import LoginGuard
from authsidecar.services.profile import verify_current_password
from authsidecar.services.sessions import ClientInfo, SessionManager

__all__ = ["ENABLED_FIELD", "Enrolment", "TwoFactorOptions", "TwoFactorService"]

log = logging.getLogger("authsidecar.two_factor")

ENABLED_FIELD = "twoFactorEnabled"  # the field the plugin adds to user
PURPOSE = "two-factor"
USED_PURPOSE = "two-factor-used"
METHODS = ("totp", "backup_code")


@dataclass(frozen=True, slots=True)
class TwoFactorOptions:
    """The plugin's options (``[plugins.two_factor]``)."""

    issuer: str = "authsidecar"
    challenge_ttl: int = 600
    challenge_attempts: int = 5
    max_failures: int = 10
    lock_seconds: int = 900
    backup_codes_storage: formats.BackupCodeStorage = "encrypted"
    digits: int = formats.DEFAULT_DIGITS  # Better Auth's totpOptions.digits / .period: match the app's
    period: int = formats.DEFAULT_PERIOD


@dataclass(frozen=True, slots=True)
class Enrolment:
    """What EnableTwoFactor returns: the otpauth URI and the backup codes (shown once)."""

    totp_uri: str
    backup_codes: list[str]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _identifier(token: str) -> str:
    return f"{PURPOSE}:{hashlib.sha256(token.encode()).hexdigest()}"


class TwoFactorService:
    """The plugin's operations; each starts from a session token or a challenge."""

    def __init__(
        self,
        store: Database,
        rows: TwoFactorStore,
        sessions: SessionManager,
        hasher: PasswordHasher,
        guard: LoginGuard,
        key: formats.Secret,
        options: TwoFactorOptions,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._db = store
        self._rows = rows
        self._sessions = sessions
        self._hasher = hasher
        self._guard = guard
        self._key = key
        self._options = options
        self._clock = clock

    # -- enrolment -------------------------------------------------------------------------------------------

    async def enable(self, token: str, password: str, issuer: str, client: ClientInfo) -> Enrolment:
        """Start enrolment: a new secret and backup codes, stored encrypted and unverified."""
        user = (await self._sessions.validate(token)).user
        await verify_current_password(self._db, self._hasher, self._guard, user, password, client.ip_address)
        if user.additional.get(ENABLED_FIELD):
            raise TwoFactorAlreadyEnabled()
        secret = formats.new_totp_secret()
        codes = formats.new_backup_codes()
        row = TwoFactorRow(
            id=self._sessions.ids("two_factor") or generate_id(),
            user_id=user.id,
            secret=formats.encrypt(self._key, secret),
            backup_codes=formats.encode_backup_codes(self._key, codes, self._options.backup_codes_storage),
            verified=False,
            failed_count=0,
            locked_until=None,
        )
        await self._rows.replace(row)
        uri = formats.otpauth_uri(
            secret, issuer or self._options.issuer, user.email, digits=self._options.digits, period=self._options.period
        )
        return Enrolment(uri, codes)

    async def confirm(self, token: str, code: str) -> User:
        """Finish enrolment with a current code: two-factor authentication is on."""
        user = (await self._sessions.validate(token)).user
        if user.additional.get(ENABLED_FIELD):  # nothing to confirm: the code is not looked at, nor counted
            raise TwoFactorAlreadyEnabled()
        row = await self._rows.get(user.id)
        if row is None:
            raise TwoFactorNotEnabled("start with EnableTwoFactor")
        await self._attempt(row, self._totp_ok(row, code))
        await self._rows.update(user.id, verified=True)
        return await self._set_enabled(user.id, True)

    async def disable(self, token: str, password: str, client: ClientInfo) -> User:
        """Turn it off and delete the secret and backup codes."""
        user = (await self._sessions.validate(token)).user
        await verify_current_password(self._db, self._hasher, self._guard, user, password, client.ip_address)
        row = await self._rows.get(user.id)
        if row is None and not user.additional.get(ENABLED_FIELD):
            raise TwoFactorNotEnabled()
        updated = await self._set_enabled(user.id, False)
        await self._rows.delete(user.id)
        return updated

    async def new_backup_codes(self, token: str, password: str, client: ClientInfo) -> list[str]:
        """Replace the backup codes."""
        user = (await self._sessions.validate(token)).user
        await verify_current_password(self._db, self._hasher, self._guard, user, password, client.ip_address)
        row = await self._rows.get(user.id)
        if row is None or not user.additional.get(ENABLED_FIELD):
            raise TwoFactorNotEnabled()
        codes = formats.new_backup_codes()
        stored = formats.encode_backup_codes(self._key, codes, self._options.backup_codes_storage)
        await self._rows.update(user.id, backup_codes=stored)
        return codes

    async def _set_enabled(self, user_id: str, enabled: bool) -> User:
        async with self._db.transaction() as tx:  # user.update: hooks, outbox, cache invalidation
            user = await tx.update_user(user_id, {ENABLED_FIELD: enabled}, self._clock())
        if user is None:
            raise UserNotFound()
        return user

    # -- sign-in ---------------------------------------------------------------------------------------------

    def guards(self, user: User) -> bool:
        """Whether the user's new sessions need a second factor."""
        return bool(user.additional.get(ENABLED_FIELD))

    async def challenge(self, user: User, client: ClientInfo, remember_me: bool) -> Challenge | None:
        """The sign-in gate: a challenge for a user with two-factor authentication on."""
        if not self.guards(user):
            return None
        token = generate_id()
        now = self._clock()
        expires = now + timedelta(seconds=self._options.challenge_ttl)
        state = {
            "userId": user.id,
            "rememberMe": remember_me,
            "attempts": 0,
            "credential": await self._credential(user.id),
        }
        await self._put_challenge(token, state, expires, now)
        return Challenge("two_factor", token, METHODS, expires)

    async def _credential(self, user_id: str) -> str:
        """A fingerprint of the user's password hash: a challenge dies with the password it was won with."""
        async with self._db.transaction(autocommit=True) as tx:
            account = await tx.get_credential_account(user_id)
        stored = account.password if account is not None and account.password else ""
        return hashlib.sha256(stored.encode()).hexdigest()[:32]

    async def _put_challenge(self, token: str, state: dict[str, Any], expires: datetime, now: datetime) -> None:
        value = json.dumps(state, separators=(",", ":"))
        row = Verification(
            self._sessions.ids("verification") or generate_id(), _identifier(token), value, expires, now, now
        )
        async with self._db.transaction() as tx:
            await tx.insert_verification(row)

    async def verify_totp(self, challenge: str, code: str, client: ClientInfo) -> AuthResult:
        """Complete a sign-in with a TOTP code."""

        async def totp(row: TwoFactorRow) -> bool:
            return await self._totp_ok(row, code)

        return await self._complete(challenge, client, totp)

    async def verify_backup_code(self, challenge: str, code: str, client: ClientInfo) -> AuthResult:
        """Complete a sign-in with a backup code (spent by a compare-and-set: it works once)."""

        async def spend(row: TwoFactorRow) -> bool:
            try:
                remaining = formats.consume_backup_code(
                    self._key, row.backup_codes, code, self._options.backup_codes_storage
                )
            except ValueError:
                log.error("backup codes of user %s cannot be read with this secret", row.user_id)
                return False
            return remaining is not None and await self._rows.swap_backup_codes(
                row.user_id, row.backup_codes, remaining
            )

        return await self._complete(challenge, client, spend)

    async def _totp_ok(self, row: TwoFactorRow, code: str) -> bool:
        """The code is right and was not used before (RFC 6238 section 5.2: a code is accepted once, so one seen
        over a shoulder cannot be replayed within its window); a used code is remembered for that window."""
        secret = self._secret_of(row)
        digits, period = self._options.digits, self._options.period
        if not secret or not formats.verify_totp(secret, code, time.time(), digits=digits, period=period):
            return False
        digest = hashlib.sha256(f"{row.user_id}:{code}".encode()).hexdigest()
        now = self._clock()
        expires = now + timedelta(seconds=period * (2 * formats.DEFAULT_WINDOW + 2))
        marker_id = self._sessions.ids("verification") or generate_id()
        return await self._rows.mark_used(
            row.user_id, Verification(marker_id, f"{USED_PURPOSE}:{digest}", "{}", expires, now, now)
        )

    async def _complete(
        self, challenge: str, client: ClientInfo, check: Callable[[TwoFactorRow], Coroutine[Any, Any, bool]]
    ) -> AuthResult:
        now = self._clock()
        identifier = _identifier(challenge)
        async with self._db.transaction() as tx:  # taken by one attempt at a time
            value = await tx.consume_verification(identifier, now)
        if value is None:
            raise InvalidToken("unknown, used up or expired challenge: sign in again")
        state: dict[str, Any] = json.loads(value)
        user_id, remember_me, attempts = str(state["userId"]), bool(state["rememberMe"]), int(state["attempts"])
        row = await self._rows.get(user_id)
        if row is None or not row.verified:
            raise InvalidToken("two-factor authentication was turned off meanwhile: sign in again")
        if state.get("credential") != await self._credential(user_id):
            raise InvalidToken("the password changed since this challenge was issued: sign in again")
        expires = now + timedelta(seconds=self._options.challenge_ttl)  # bounded by the attempts
        try:
            await self._attempt(row, check(row))
        except TwoFactorLocked:
            await self._put_challenge(challenge, state, expires, now)  # not this challenge's fault
            raise
        except InvalidTwoFactorCode:
            if attempts + 1 < self._options.challenge_attempts:
                await self._put_challenge(challenge, {**state, "attempts": attempts + 1}, expires, now)
                raise
            raise InvalidTwoFactorCode("invalid two-factor code; this challenge is used up: sign in again") from None
        checked_at = self._sessions.stamp()
        async with self._db.transaction(autocommit=True) as tx:
            user = await tx.get_user_by_id(user_id)
        if user is None:
            raise InvalidToken()
        session, token = await self._sessions.open_session(user, client, checked_at, remember_me)
        return AuthResult(user, session, token)

    # -- helpers ---------------------------------------------------------------------------------------------

    def _secret_of(self, row: TwoFactorRow) -> str:
        try:
            return formats.decrypt(self._key, row.secret)
        except ValueError:
            log.error("the TOTP secret of user %s cannot be read with this secret", row.user_id)
            return ""

    async def _attempt(self, row: TwoFactorRow, check: Coroutine[Any, Any, bool]) -> None:
        """One attempt at a code, counted before it is checked (concurrent attempts cannot outrun the limit):
        raises TwoFactorLocked, or InvalidTwoFactorCode (locking the user at ``max_failures`` in a row)."""
        now = self._clock()
        limit = self._options.max_failures
        if not await self._rows.reserve_attempt(row.user_id, now, limit):
            check.close()  # never run: the code is not even looked at
            await self._rows.lock_if_spent(row.user_id, now, limit, now + timedelta(seconds=self._options.lock_seconds))
            raise TwoFactorLocked(await self._locked_for(row.user_id))
        if not await check:
            until = now + timedelta(seconds=self._options.lock_seconds)
            if await self._rows.lock_if_spent(row.user_id, now, limit, until):
                log.warning(
                    "two-factor sign-in of user %s locked for %ds after wrong codes",
                    row.user_id,
                    self._options.lock_seconds,
                )
            raise InvalidTwoFactorCode()
        await self._rows.update(row.user_id, failed_verification_count=0, locked_until=None)

    async def _locked_for(self, user_id: str) -> float:
        """Seconds until the user's lock ends."""
        row = await self._rows.get(user_id)
        if row is None or row.locked_until is None:
            return float(self._options.lock_seconds)
        return max(1.0, (row.locked_until - self._clock()).total_seconds())
