"""Sessions shared with a Better Auth app (compatibility profile).

Better Auth's rules, not the standalone coherence rules: with Redis, a session document present under
``<prefix><token>`` is the session (unless ``revoked-sessions-before`` says otherwise), as the app itself reads
it; both sides revoke by deleting it. When the document is missing and sessions are also kept in SQL
(``store_session_in_database``), the row answers, and the document is NOT put back: a Better Auth revocation
deletes the document before the row, and a refill in between would bring the session back. When Redis fails,
the row answers (sessions in SQL) or the call fails with UNAVAILABLE (Redis-only).

Tokens arrive raw, or as Better Auth's signed cookie value (URL-encoded or not), whose signature must verify.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime

from authsidecar.cache.better_auth import BetterAuthRedis
from authsidecar.cache.codec import from_document
from authsidecar.cache.memory import NullSessionCache
from authsidecar.domain.fields import Registry
from authsidecar.domain.models import NO_EXTRA, Extra, Session, SessionWithUser
from authsidecar.domain.ports import Database
from authsidecar.errors import BackendUnavailable, InvalidToken, SessionExpired
from authsidecar.hooks.context import note_actor
from authsidecar.security.cookie_cache import CookieCache
from authsidecar.security.cookies import SessionCookies
from authsidecar.security.ids import IdGenerator
from authsidecar.security.tokens import PlainTokenPolicy
from authsidecar.services.clock import Clock, utc_now
from authsidecar.services.coherence import CacheCoherence
from authsidecar.services.sessions import SessionManager, SessionPolicy

__all__ = ["BetterAuthCookies", "BetterAuthSessionManager"]

log = logging.getLogger(__name__)


class BetterAuthCookies:
    """Better Auth's signed session cookie (the compatibility profile's ``SessionCookieJar``)."""

    def __init__(
        self,
        signer: SessionCookies,
        validate: Callable[[str], Awaitable[SessionWithUser]],
        policy: SessionPolicy,
        coherence: CacheCoherence,
        clock: Clock,
        cookie_cache: CookieCache | None,
        registry: Registry,
    ) -> None:
        self.name = signer.name
        self._signer = signer
        self._validate = validate  # the session manager's validation of a token
        self._policy = policy
        self._coherence = coherence
        self._clock = clock
        self._cookie_cache = cookie_cache
        self._registry = registry

    def find(self, header: str) -> str | None:
        """The (still signed) value of the session cookie in a Cookie header, or None."""
        return self._signer.from_header(header)

    def _token_in(self, header: str) -> str:
        """The session token in a Cookie header's session cookie, whose signature must verify (as in Better Auth:
        a bare token is no cookie); raises InvalidToken otherwise."""
        value = self._signer.from_header(header)
        if value is None:
            raise InvalidToken(f"no {self._signer.name} cookie in the Cookie header")
        token = self._signer.unsign(value)
        if token is None:
            raise InvalidToken("the session cookie's signature does not verify")
        return token

    async def validate(self, header: str) -> SessionWithUser:
        """The session of a Cookie header's session cookie; with the cookie cache turned on, a valid
        ``session_data`` cookie for that session answers without asking Redis or SQL (Better Auth's trade)."""
        token = self._token_in(header)
        if self._cookie_cache is not None and not self._coherence.revoked(token):
            document = self._cookie_cache.read(header, token, self._clock())
            if document is not None:
                try:
                    return from_document(document, self._registry, lenient=True)
                except (ValueError, KeyError, TypeError):
                    pass  # not a snapshot this configuration reads: ask the storage
        return await self._validate(token)

    def values(self, session: Session, token: str) -> tuple[str, str]:
        """The values of Better Auth's session cookie and, for a remember_me=false session, of its
        ``dont_remember`` cookie (without it the app would extend the session to the full lifetime)."""
        return self._signer.sign(token), self._signer.dont_remember() if self._policy.is_short(session) else ""


class BetterAuthSessionManager(SessionManager):
    """SessionManager over Better Auth's storage: plain tokens, signed cookies, Redis as the session store."""

    def __init__(
        self,
        db: Database,
        redis: BetterAuthRedis | None,
        cookies: SessionCookies,
        sessions_in_database: bool,
        policy: SessionPolicy,
        coherence: CacheCoherence,
        clock: Clock = utc_now,
        session_fields: Extra = NO_EXTRA,
        ids: IdGenerator | None = None,
        retry_after: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        cookie_cache: CookieCache | None = None,
        registry: Registry | None = None,
        preserve_sessions: bool = False,
    ) -> None:
        super().__init__(db, NullSessionCache(), PlainTokenPolicy(), policy, coherence, clock, session_fields, ids)
        self._redis = redis
        self._signer = cookies
        # SQL answers when the Redis document is missing or Redis fails: sessions are stored there too, and the
        # app does not keep ended sessions as rows (preserveSessionInDatabase) that only Redis tells apart.
        self._fallback = sessions_in_database and not preserve_sessions
        self._retry_after = retry_after
        self._mono = monotonic
        self._redis_back_at = 0.0  # Redis is skipped for reads until then, after a failure (sessions in SQL)
        self.cookies = BetterAuthCookies(
            cookies, self.validate, policy, coherence, self._clock, cookie_cache, registry or Registry()
        )

    def bearer(self, credential: str) -> str:
        """The session token in a raw token or a signed cookie value (Better Auth's tokens have neither '.' nor
        '%'); raises InvalidToken when a signature does not verify."""
        if "." not in credential and "%" not in credential:
            return credential
        token = self._signer.unsign(credential)
        if token is None:
            raise InvalidToken("the session cookie's signature does not verify")
        return token

    async def _from_redis(self, token: str) -> SessionWithUser | None:
        """The session's document; None when absent, or when Redis is skipped or failed and SQL may answer."""
        if self._redis is None or (self._fallback and self._mono() < self._redis_back_at):
            return None
        try:
            return await self._redis.get(token)
        except BackendUnavailable:
            if not self._fallback:
                raise
            if self._mono() >= self._redis_back_at:
                log.warning("Redis unavailable: sessions are read from the database for %.1fs", self._retry_after)
            self._redis_back_at = self._mono() + self._retry_after
            return None

    async def validate(self, token: str) -> SessionWithUser:
        """The session and user of a token (raw or signed); raises InvalidToken / SessionExpired."""
        token = self.bearer(token)
        now = self._clock()
        entry = await self._from_redis(token)
        if entry is None and self._fallback:
            self.misses += 1
            entry = await self._db.find_session(token)
        else:
            self.hits += 1
        if (
            entry is None
            or not hmac.compare_digest(entry.session.stored_token, token)
            or self._coherence.revoked(token)
        ):
            raise InvalidToken()
        session = entry.session
        if session.expires_at <= now:
            raise SessionExpired()
        note_actor(entry)  # hooks: this call acts as that session
        if self._policy.needs_refresh(session, now):
            entry = await self._refresh(entry, now)
        return entry

    async def _refresh(self, entry: SessionWithUser, now: datetime) -> SessionWithUser:
        session = replace(entry.session, expires_at=self._policy.refreshed(entry.session, now), updated_at=now)
        async with self._db.transaction(autocommit=True) as tx:
            alive = await tx.refresh_session(session, session.expires_at, now)
        if not alive:
            raise InvalidToken()
        refreshed = SessionWithUser(session, entry.user, entry.checked_at)
        if self._redis is not None:
            try:
                written = await self._redis.refresh(session, now)
            except BackendUnavailable:
                if not self._fallback:
                    raise
                written = True
            if not written and not self._fallback:  # the document went away meanwhile: revoked
                raise InvalidToken()
        return refreshed

    async def check_writable(self) -> None:
        """Redis-only sessions: Redis must answer before a sign-up writes its user."""
        if self._redis is not None and not self._fallback:
            await self._redis.ping()

    async def remember(self, entry: SessionWithUser) -> None:
        """Write a new session's document and reference, as Better Auth does on creation. Without it a
        Redis-only session does not exist (UNAVAILABLE); with the row in SQL, it is logged and SQL answers."""
        if self._redis is None:
            return
        try:
            await self._redis.store(entry, self._clock())
        except BackendUnavailable:
            if not self._fallback:
                raise
            log.warning("Redis unavailable: a new session is in the database only")

    async def sign_out(self, token: str) -> None:
        """End the session of a raw or signed token; unknown or expired tokens are not an error."""
        await super().sign_out(self.bearer(token))
