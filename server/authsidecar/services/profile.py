"""Operations a signed-in user performs on their own account: change password, update profile, delete."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authsidecar.domain.models import Account, Session, SessionWithUser, User
from authsidecar.domain.ports import Database
from authsidecar.errors import Conflict, CredentialAccountNotFound, InvalidPassword, MissingField, UserNotFound
from authsidecar.security.passwords import PasswordHasher
from authsidecar.services.clock import Clock, utc_now
from authsidecar.services.extra_fields import ExtraFieldRules
from authsidecar.services.limits import OUTSTANDING_LINKS, Limits, LoginGuard, client_key
from authsidecar.services.rules import CredentialRules
from authsidecar.services.sessions import ClientInfo, SessionManager

__all__ = ["PasswordChanged", "ProfileService"]


@dataclass(frozen=True, slots=True)
class PasswordChanged:
    """ChangePassword's outcome: the replacement session when every session was revoked."""

    session: Session | None = None
    token: str | None = None


async def verify_current_password(
    db: Database, hasher: PasswordHasher, guard: LoginGuard, user: User, password: str, ip: str | None
) -> Account:
    """The user's credential account, once ``password`` is verified against it: under the brute-force guard (a
    stolen session must not become a password oracle), in a hashing slot of the client's share. Raises
    InvalidPassword, or CredentialAccountNotFound when the user has no password."""
    await guard.slow_down(user.email)
    with hasher.admitted(client_key(ip) if ip else ""):
        await guard.charge(user.email, ip)  # only a check that is made is counted
        async with db.transaction(autocommit=True) as tx:
            account = await tx.get_credential_account(user.id)
        if account is None or account.password is None:
            raise CredentialAccountNotFound()
        if not await hasher.verify(account.password, password):
            await guard.failed(user.email, ip)
            raise InvalidPassword()
    await guard.succeeded(user.email, ip)
    return account


class ProfileService:
    """Self-service account operations; each starts by validating the caller's session token."""

    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher,
        sessions: SessionManager,
        rules: CredentialRules,
        clock: Clock = utc_now,
        user_fields: ExtraFieldRules | None = None,
        limits: Limits | None = None,
        guard: LoginGuard | None = None,
    ) -> None:
        self._limits = limits or Limits.off()
        self._guard = guard or LoginGuard(self._limits)
        self._user_fields = user_fields or ExtraFieldRules.none()
        self._db = db
        self._hasher = hasher
        self._sessions = sessions
        self._rules = rules
        self._clock = clock

    async def _check_password(self, user: User, password: str, ip: str | None) -> Account:
        return await verify_current_password(self._db, self._hasher, self._guard, user, password, ip)

    async def change_password(
        self, token: str, current_password: str, new_password: str, revoke_other_sessions: bool, client: ClientInfo
    ) -> PasswordChanged:
        """Check the current password, store the new one; optionally replace every session with a new one."""
        if not current_password:
            raise MissingField.field("current_password", "is required")
        self._rules.check_password(new_password, field="new_password")
        current = await self._sessions.validate(token)
        await self._limits.check("ChangePassword", client.ip_address, current.user.id)
        account = await self._check_password(current.user, current_password, client.ip_address)
        with self._hasher.admitted(client_key(client.ip_address) if client.ip_address else ""):
            new_hash = await self._hasher.hash(new_password)
        now = self._clock()
        async with self._db.transaction() as tx:
            await tx.update_account_password(account, new_hash, now)
            await tx.delete_user_verifications(current.user.id, OUTSTANDING_LINKS)
            if revoke_other_sessions:
                await tx.delete_user_sessions(current.user.id)
        if not revoke_other_sessions:
            return PasswordChanged()
        session, new_token = await self._sessions.open_session(current.user, client, current.checked_at)
        return PasswordChanged(session, new_token)

    async def update_user(
        self, token: str, changes: dict[str, Any], additional: Mapping[str, Any] | None = None
    ) -> User:
        """Set name, image and/or additional fields; every cached snapshot of the user is superseded."""
        current = await self._sessions.validate(token)
        if "name" in changes and not (changes["name"] or "").strip():
            raise MissingField.field("name", "must not be empty")
        changes = {**changes, **self._user_fields.for_update(additional or {})}
        if not changes:
            return current.user
        try:
            async with self._db.transaction() as tx:
                user = await tx.update_user(current.user.id, changes, self._clock())
        except Conflict as exc:
            raise self._user_fields.taken(exc.constraint) or exc from None
        if user is None:
            raise UserNotFound()
        return user

    async def delete_user(self, token: str, password: str, client: ClientInfo | None = None) -> None:
        """Delete the user with sessions, accounts and verifications; needs the password or a fresh session."""
        current: SessionWithUser = await self._sessions.validate(token)
        user_id = current.user.id
        ip = (client or ClientInfo()).ip_address
        await self._limits.check("DeleteUser", ip, user_id)
        if password:
            try:
                await self._check_password(current.user, password, ip)
            except CredentialAccountNotFound:
                raise InvalidPassword() from None
        else:
            self._sessions.require_fresh(current)
        async with self._db.transaction() as tx:
            await tx.delete_user_verifications(user_id)
            await tx.delete_user(user_id)  # sessions declared revoked; accounts cascade
