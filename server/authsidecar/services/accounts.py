"""Sign-up and sign-in with email and password.

Hashing always happens outside any database transaction. Sign-up writes user + credential account (+ session)
in one transaction and relies on the unique constraint on email, never on check-then-insert. Sign-in costs the
same hash time whether or not the email exists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from authsidecar.domain.models import CREDENTIAL_PROVIDER, Account, Session, SessionWithUser, User
from authsidecar.domain.ports import Database
from authsidecar.errors import (
    BackendUnavailable,
    Conflict,
    EmailNotVerified,
    InvalidCredentials,
    MissingField,
    UserAlreadyExists,
)
from authsidecar.security.ids import IdGenerator
from authsidecar.security.passwords import PasswordHasher
from authsidecar.services.clock import Clock, utc_now
from authsidecar.services.extra_fields import ExtraFieldRules
from authsidecar.services.limits import Limits, LoginGuard, client_key
from authsidecar.services.rules import CredentialRules, normalize_email
from authsidecar.services.sessions import ClientInfo, SessionManager

__all__ = ["AccountService", "AuthResult", "Challenge", "SignInGate", "VerificationPolicy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VerificationPolicy:
    """How sign-up and sign-in treat unverified email addresses. ``send`` queues a verification message."""

    required: bool = False
    send_on_sign_up: bool = False
    send_on_sign_in: bool = False
    send: Callable[[str], None] | None = None


@dataclass(frozen=True, slots=True)
class Challenge:
    """A sign-in that needs one more step (a second factor): ``token`` completes it with one of ``methods``."""

    kind: str
    token: str
    methods: tuple[str, ...]
    expires_at: datetime


class SignInGate(Protocol):
    """Decides, once the password is right, whether the sign-in may go on (plugins provide gates): it may refuse it
    (``challenge`` raises a domain error, such as the admin plugin's BannedUser) or need one more step (a
    challenge, such as two_factor's)."""

    def guards(self, user: User) -> bool:
        """Whether a new session of this user needs the gate's say (then no flow may open one without it: a link
        never signs such a user in)."""

    async def challenge(self, user: User, client: ClientInfo, remember_me: bool) -> Challenge | None:
        """A challenge instead of a session, or None to sign in now; raises a domain error to refuse."""


@dataclass(frozen=True, slots=True)
class AuthResult:
    """A user and, when one was created, a session with its bearer token; or a challenge (no session yet)."""

    user: User
    session: Session | None = None
    token: str | None = None
    challenge: Challenge | None = None


class AccountService:
    """Email/password accounts."""

    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher,
        sessions: SessionManager,
        rules: CredentialRules,
        auto_sign_in: bool = True,
        clock: Clock = utc_now,
        verification: VerificationPolicy | None = None,
        user_fields: ExtraFieldRules | None = None,
        ids: IdGenerator | None = None,
        limits: Limits | None = None,
        guard: LoginGuard | None = None,
    ) -> None:
        self._limits = limits or Limits.off()
        self._guard = guard or LoginGuard(self._limits)
        self._ids = ids or sessions.ids
        self._db = db
        self._hasher = hasher
        self._sessions = sessions
        self._rules = rules
        self._auto_sign_in = auto_sign_in
        self._clock = clock
        self._verification = verification or VerificationPolicy()
        self._user_fields = user_fields or ExtraFieldRules.none()
        # Plugins' say after the password (two_factor: a second step; admin: refuse banned users), in order.
        self.gates: list[SignInGate] = []

    async def sign_up(
        self,
        email: str,
        password: str,
        name: str,
        image: str | None,
        client: ClientInfo,
        remember_me: bool = True,
        additional: Mapping[str, Any] | None = None,
    ) -> AuthResult:
        """Create a user with a credential account, and a session unless auto sign-in is off."""
        email = normalize_email(email)
        await self._limits.check("SignUp", client.ip_address, email)
        if not name.strip():
            raise MissingField.field("name", "is required")
        extra = self._user_fields.for_create(additional or {})
        self._rules.check_password(password)
        with self._hasher.admitted(
            client_key(client.ip_address) if client.ip_address else ""
        ):  # a slot of this client's share
            password_hash = await self._hasher.hash(password)
        now = self._clock()
        user = User(
            id=self._ids("user"),
            name=name,
            email=email,
            email_verified=False,
            image=image or None,
            created_at=now,
            updated_at=now,
            additional=extra,
        )
        account = Account(
            id=self._ids("account"),
            account_id=user.id,
            provider_id=CREDENTIAL_PROVIDER,
            user_id=user.id,
            password=password_hash,
            created_at=now,
            updated_at=now,
        )
        session, token = (None, None)
        if self._auto_sign_in and not self._verification.required:
            await self._sessions.check_writable()  # nothing is written when the session could not be
            session, token = self._sessions.new_session(user.id, client, remember_me, now)
        written_at = self._sessions.stamp()
        try:
            async with self._db.transaction() as tx:  # ids may be the database's own (generate_id false / serial)
                user = await tx.insert_user(user)
                await tx.insert_account(replace(account, account_id=user.id, user_id=user.id))
                if session is not None:
                    session = replace(session, user_id=user.id)
                    session = await tx.insert_session(session)
        except Conflict as exc:
            raise self._user_fields.taken(exc.constraint) or UserAlreadyExists() from exc
        if session is not None:
            try:
                await self._sessions.remember(SessionWithUser(session, user, written_at))
            except BackendUnavailable:  # the user exists now: answer with it, without a session (SignIn later)
                log.warning("sign-up: the user was created but its session could not be stored")
                session, token = None, None
        if self._verification.send_on_sign_up and self._verification.send is not None:
            self._verification.send(user.email)
        return AuthResult(user, session, token)

    async def sign_in(self, email: str, password: str, client: ClientInfo, remember_me: bool = True) -> AuthResult:
        """Check the password and create a session; raises InvalidCredentials for any mismatch."""
        email = normalize_email(email)
        if not password:
            raise MissingField.field("password", "is required")
        ip = client.ip_address
        await self._limits.check("SignIn", ip, email)  # a refused call is no password check: the guard is not charged
        await self._guard.slow_down(email)  # the account's slowdown, before a hashing slot is taken
        if len(password) > self._rules.max_password_length:
            await self._guard.charge(email, ip)
            await self._guard.failed(email, ip)
            raise InvalidCredentials()  # no stored password can be this long; do not spend a hash on it
        with self._hasher.admitted(client_key(ip) if ip else ""):  # shed load before touching the database
            await self._guard.charge(email, ip)  # this IP's checks on the account: only those made are counted
            read_at = self._sessions.stamp()
            async with self._db.transaction(autocommit=True) as tx:
                found = await tx.get_user_with_credential(email)
            user, account = found if found is not None else (None, None)
            if user is None or account is None or account.password is None:
                await self._hasher.verify_dummy(password)
                await self._guard.failed(email, ip)
                raise InvalidCredentials()
            if not await self._hasher.verify(account.password, password):
                await self._guard.failed(email, ip)
                raise InvalidCredentials()
            new_hash = await self._rehash(account.password, password)
        await self._guard.succeeded(email, ip)
        if self._verification.required and not user.email_verified:
            if self._verification.send_on_sign_in and self._verification.send is not None:
                self._verification.send(user.email)
            raise EmailNotVerified()
        challenge: Challenge | None = None
        # Every gate is asked, so a refusal holds whatever their order (a challenge made by an earlier gate is then
        # never handed out, and expires).
        for gate in self.gates:
            asked = await gate.challenge(user, client, remember_me)
            challenge = challenge or asked
        if challenge is not None:
            return AuthResult(user, challenge=challenge)
        now = self._clock()
        session, token = self._sessions.new_session(user.id, client, remember_me, now)
        # One statement (no BEGIN/COMMIT round trips) unless the hash is replaced too.
        async with self._db.transaction(autocommit=new_hash is None) as tx:
            # The password was checked against the hash read above, outside any transaction; a reset or password
            # change that committed since must win, or its revocation would miss this new session.
            inserted = await tx.insert_session_if_credential(account.id, account.password, session)
            if inserted is None:
                raise InvalidCredentials()
            session = inserted
            if new_hash is not None:
                await tx.update_account_password(account, new_hash, now)
        await self._sessions.remember(SessionWithUser(session, user, read_at))
        return AuthResult(user, session, token)

    async def _rehash(self, encoded: str, password: str) -> str | None:
        """A new hash when the stored one used other parameters (called inside the sign-in's hashing slot)."""
        if not self._hasher.needs_rehash(encoded):
            return None
        return await self._hasher.hash(password)
