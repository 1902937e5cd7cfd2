"""Sessions: creation, validation (the hot path), listing and revocation.

Validation answers from the secondary storage when the cached snapshot is trusted (services/coherence.py);
otherwise it runs one SQL query and refills the cache. Revocations are SQL deletes that declare themselves
(the unit of work logs them and the coherence mechanism applies them after commit); nothing here invalidates a
cache by hand. Expiry is always checked, whatever the source.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from authsidecar.cache.memo import IdentityMemo
from authsidecar.domain.models import NO_EXTRA, Extra, Session, SessionWithUser, User
from authsidecar.domain.ports import Database, SessionCache
from authsidecar.errors import InvalidToken, SessionExpired, SessionNotFound, SessionNotFresh
from authsidecar.hooks.context import note_actor
from authsidecar.security.ids import IdGenerator, id_generator
from authsidecar.security.tokens import TokenPolicy
from authsidecar.services.clock import Clock, utc_now
from authsidecar.services.coherence import CacheCoherence

__all__ = ["ClientInfo", "SessionCookieJar", "SessionManager", "SessionPolicy"]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """The end user's client as reported by the calling service."""

    ip_address: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """Better Auth's session lifetime rules.

    A remember_me=false session lives ``short_expires_in`` and is never refreshed; it is recognised by its
    lifetime (expiresAt - createdAt <= short_expires_in), so no extra column is needed.
    """

    expires_in: timedelta = timedelta(days=7)
    update_age: timedelta = timedelta(days=1)
    short_expires_in: timedelta = timedelta(days=1)
    fresh_age: timedelta = timedelta(days=1)
    max_lifetime: timedelta | None = None  # absolute: sliding refresh never takes a session past it

    def capped(self, created_at: datetime, expires_at: datetime) -> datetime:
        """``expires_at``, but never later than the absolute lifetime allows."""
        if self.max_lifetime is None:
            return expires_at
        return min(expires_at, created_at + self.max_lifetime)

    def refreshed(self, session: Session, now: datetime) -> datetime:
        """The expiry a refresh at ``now`` sets."""
        return self.capped(session.created_at, now + self.expires_in)

    def is_fresh(self, session: Session, now: datetime) -> bool:
        """Better Auth's freshAge: sensitive operations need a session created recently."""
        return now - session.created_at <= self.fresh_age

    def is_short(self, session: Session) -> bool:
        """A remember_me=false session."""
        return session.expires_at - session.created_at <= self.short_expires_in

    def needs_refresh(self, session: Session, now: datetime) -> bool:
        """Better Auth's rule: refresh once ``update_age`` has passed since the expiry was last set."""
        if self.is_short(session):
            return False
        if self.max_lifetime is not None and self.refreshed(session, now) <= session.expires_at:
            return False  # already as late as the absolute lifetime allows
        return session.expires_at - self.expires_in + self.update_age <= now


class SessionCookieJar(Protocol):
    """A profile's own session cookie (``SessionManager.cookies``): found and validated in a Cookie header (the
    gateways, ValidateSession's ``cookie``), and made for the replies that open a session."""

    name: str

    def find(self, header: str) -> str | None:
        """The session cookie's value in a Cookie header, or None when the header has none."""

    async def validate(self, header: str) -> SessionWithUser:
        """The session of the Cookie header's session cookie; raises Unauthenticated / BackendUnavailable."""

    def values(self, session: Session, token: str) -> tuple[str, str]:
        """The session cookie's value for a new session, and its ``dont_remember`` cookie's ("": none)."""


def _ttl(expires_at: datetime, now: datetime) -> int:
    return int((expires_at - now).total_seconds())


class SessionManager:
    """Session rules over the store of record and the secondary storage."""

    def __init__(
        self,
        db: Database,
        cache: SessionCache,
        tokens: TokenPolicy,
        policy: SessionPolicy,
        coherence: CacheCoherence,
        clock: Clock = utc_now,
        session_fields: Extra = NO_EXTRA,
        ids: IdGenerator | None = None,
    ) -> None:
        self.ids = ids or id_generator("random")
        self._session_fields = session_fields  # the defaults of the session's additional fields
        self._db = db
        self._cache = cache
        self._tokens = tokens
        self._policy = policy
        self._coherence = coherence
        self._clock = clock
        # The clock as Unix seconds, for a cache hit's comparisons (utc_now is truncated to milliseconds, so
        # time.time() is never earlier than it: a float check that says "not yet" is right for the datetime too).
        self._now: Callable[[], float] = time.time if clock is utc_now else lambda: clock().timestamp()
        # Per cached snapshot (the in-process tiers hand out the same object while it is current): the Unix times
        # at which it expires and from which it may need a refresh. A hit compares two floats instead of building
        # a datetime and doing date arithmetic (measured in the running server: ~6 us of ~12 us per hit).
        self._deadlines: IdentityMemo[SessionWithUser, tuple[float, float]] = IdentityMemo(4096)
        self.hits = 0  # validations answered from the secondary storage / from SQL, for the metrics
        self.misses = 0
        # The profile's own session cookie (Better Auth's signed one); None: sessions travel as bearer tokens only.
        self.cookies: SessionCookieJar | None = None

    def stamp(self) -> float:
        """When a snapshot about to be read or written is checked: now by the database's clock (Unix seconds), 0
        (never trusted) until that clock has been read."""
        return self._coherence.clock.stamp()

    def new_session(self, user_id: str, client: ClientInfo, remember_me: bool, now: datetime) -> tuple[Session, str]:
        """A session record (not yet stored) and its bearer token."""
        token = self._tokens.generate()
        lifetime = self._policy.expires_in if remember_me else self._policy.short_expires_in
        session = Session(
            id=self.ids("session"),
            user_id=user_id,
            stored_token=self._tokens.stored(token),
            expires_at=self._policy.capped(now, now + lifetime),
            created_at=now,
            updated_at=now,
            ip_address=client.ip_address,
            user_agent=client.user_agent,
            additional=self._session_fields,
        )
        return session, token

    async def open_session(
        self, user: User, client: ClientInfo, checked_at: float, remember_me: bool = True
    ) -> tuple[Session, str]:
        """Create, store and cache a new session for the user, whose snapshot was read from SQL at ``checked_at``
        (Unix seconds); returns the session with its bearer token."""
        session, token = self.new_session(user.id, client, remember_me, self._clock())
        async with self._db.transaction(autocommit=True) as tx:
            session = await tx.insert_session(session)
        await self.remember(SessionWithUser(session, user, checked_at))
        return session, token

    async def check_writable(self) -> None:
        """Raise BackendUnavailable when a new session could not be stored now (checked before writing anything
        else it depends on, such as a new user)."""

    def require_fresh(self, entry: SessionWithUser) -> None:
        """Raise SessionNotFresh unless the session is recent enough for a sensitive operation."""
        if not self._policy.is_fresh(entry.session, self._clock()):
            raise SessionNotFresh()

    async def remember(self, entry: SessionWithUser) -> None:
        """Write a session this instance just stored through to the cache (saves the first validation a query).
        ``entry.checked_at`` must say when its user snapshot was read (``stamp()``): the copy is trusted from then,
        not from now (0, before the database's clock was read: never trusted)."""
        ttl = _ttl(entry.session.expires_at, self._clock())
        await self._cache.put(self._tokens.cache_key(entry.session.stored_token), entry, ttl)

    async def validate(self, token: str) -> SessionWithUser:
        """The session and user of a token; raises InvalidToken / SessionExpired."""
        stored = self._tokens.stored(token)
        key = self._tokens.cache_key(stored)
        cached = await self._cache.get(key)
        if (
            cached is not None
            and hmac.compare_digest(cached.session.stored_token, stored)
            and self._coherence.trusted(cached)
        ):
            entry, from_cache = cached, True
            self.hits += 1
            expires, refresh_from = self._deadlines_of(entry)
            now_ts = self._now()
            if now_ts < expires and now_ts < refresh_from:  # the common case: neither expired nor due
                note_actor(entry)  # hooks: this call acts as that session
                return entry
        else:
            self.misses += 1
            found = await self._db.find_session(stored)
            if found is None:
                if cached is not None:  # a stale or foreign document: remove it
                    await self._coherence.drop(key, cached.session.user_id)
                raise InvalidToken()
            entry, from_cache = found, False
        now = self._clock()
        session = entry.session
        if session.expires_at <= now:
            await self._coherence.drop(key, session.user_id)
            raise SessionExpired()
        note_actor(entry)  # hooks: this call acts as that session
        if self._policy.needs_refresh(session, now):
            entry = await self._refresh(entry, now)
        elif not from_cache and not self._coherence.revoked(stored):
            await self._cache.put(key, entry, _ttl(session.expires_at, now))
        return entry

    def _deadlines_of(self, entry: SessionWithUser) -> tuple[float, float]:
        """When the cached snapshot expires, and from when it may need a refresh (Unix seconds)."""
        known = self._deadlines.get(entry)
        if known is None:
            session, policy = entry.session, self._policy
            due = session.expires_at - policy.expires_in + policy.update_age  # as needs_refresh has it
            known = (session.expires_at.timestamp(), math.inf if policy.is_short(session) else due.timestamp())
            self._deadlines.put(entry, known)
        return known

    async def _refresh(self, entry: SessionWithUser, now: datetime) -> SessionWithUser:
        session = replace(entry.session, expires_at=self._policy.refreshed(entry.session, now), updated_at=now)
        async with self._db.transaction(autocommit=True) as tx:
            alive = await tx.refresh_session(session, session.expires_at, now)
        if not alive:  # revoked between the read and the refresh
            raise InvalidToken()
        refreshed = SessionWithUser(session, entry.user, entry.checked_at)
        await self._cache.put(self._tokens.cache_key(session.stored_token), refreshed, _ttl(session.expires_at, now))
        return refreshed

    async def list_sessions(self, token: str) -> list[Session]:
        """The token's user's active sessions, newest first."""
        return (await self.sessions_of(token))[1]

    async def sessions_of(self, token: str) -> tuple[Session, list[Session]]:
        """The token's own session, and its user's active sessions, newest first."""
        current = await self.validate(token)
        async with self._db.transaction(autocommit=True) as tx:
            return current.session, await tx.list_user_sessions(current.user.id, self._clock())

    async def revoke(self, token: str, session_id: str) -> None:
        """Revoke one of the token's user's sessions; raises SessionNotFound."""
        current = await self.validate(token)
        async with self._db.transaction() as tx:
            deleted = await tx.delete_session_by_id(current.user.id, session_id)
        if deleted is None:
            raise SessionNotFound()

    async def revoke_others(self, token: str) -> int:
        """Revoke all of the user's sessions but the token's own; returns how many."""
        current = await self.validate(token)
        async with self._db.transaction() as tx:
            deleted = await tx.delete_user_sessions(current.user.id, except_session_id=current.session.id)
        return len(deleted)

    async def revoke_all(self, token: str) -> int:
        """Revoke all of the user's sessions, the token's own included; returns how many."""
        current = await self.validate(token)
        async with self._db.transaction() as tx:
            deleted = await tx.delete_user_sessions(current.user.id)
        return len(deleted)

    async def sign_out(self, token: str) -> None:
        """End the token's session; unknown or expired tokens are not an error."""
        async with self._db.transaction() as tx:
            await tx.delete_session_by_token(self._tokens.stored(token))
