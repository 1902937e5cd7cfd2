"""Gateways (Envoy ext_authz, forward-auth): an HTTP request's credential -> allow with identity headers, or deny.

How the session travels is decided here; how it is checked is not: the session manager validates it exactly as
ValidateSession does (revocation, expiry, sliding refresh, the cache and its coherence, Better Auth's signed
cookies and cookie cache in the compatibility profile).

Where the session is read, first match wins:

1. ``Authorization: Bearer <token>``. When the request carries a Bearer credential it decides: a bad one is a
   denial even if a cookie would have passed (no silent fallback from an explicit credential). Other schemes
   (Basic, ...) are left to the upstream and ignored here. Two Authorization headers are a denial.
2. The session cookie: ``authsidecar.session_token`` (or the configured name) holding the token itself; in the
   compatibility profile Better Auth's signed ``<prefix>.session_token`` (a bare token there is no cookie, as in
   Better Auth).

A verdict carries the identity headers to set on the upstream request (set, never appended: the transports
overwrite what the client sent under those names), or the denial's reason and WWW-Authenticate challenge. An
outage (BackendUnavailable) is not a verdict: it propagates, so no transport can mistake it for a denial.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from authsidecar.domain.models import SessionWithUser
from authsidecar.errors import InvalidToken, Unauthenticated
from authsidecar.observability.metrics import GatewayChecks
from authsidecar.security.tokens import MAX_TOKEN_LENGTH
from authsidecar.services.sessions import SessionManager

__all__ = [
    "DEFAULT_COOKIE_NAME",
    "MAX_COOKIE_HEADER",
    "CookieSource",
    "Gateway",
    "IdentityHeaders",
    "PlainCookie",
    "Verdict",
    "cookie_source",
]

DEFAULT_COOKIE_NAME = "authsidecar.session_token"
MAX_COOKIE_HEADER = 16_384  # longer Cookie headers are a denial, never parsed
REALM = 'Bearer realm="authsidecar"'


@dataclass(frozen=True, slots=True)
class IdentityHeaders:
    """Names (lower-case) of the headers an allowed request carries upstream; ``email`` None: not sent."""

    user_id: str = "x-authsidecar-user-id"
    session_id: str = "x-authsidecar-session-id"
    email: str | None = None

    def names(self) -> tuple[str, ...]:
        """Every configured name."""
        return tuple(name for name in (self.user_id, self.session_id, self.email) if name is not None)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one request. Allowed: ``headers`` are the identity headers. Denied: ``headers`` hold the
    WWW-Authenticate challenge, ``reason`` is an ErrorInfo reason (INVALID_TOKEN, SESSION_EXPIRED), ``message``
    says why in words (no credential material in either)."""

    allowed: bool
    headers: tuple[tuple[str, str], ...]
    reason: str = ""
    message: str = ""

    def body(self) -> bytes:
        """A small JSON body for a denial."""
        payload = {"error": "unauthenticated", "reason": self.reason, "message": self.message}
        return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


class CookieSource(Protocol):
    """Where the session cookie is in a Cookie header, and how its value is validated."""

    name: str

    def find(self, header: str) -> str | None:
        """The session cookie's value, or None when the header has none."""

    async def validate(self, header: str) -> SessionWithUser:
        """The session of the Cookie header's session cookie; raises Unauthenticated / BackendUnavailable."""


def _cookie(header: str, name: str) -> str | None:
    """The first ``name=value`` pair's value in a Cookie header (quotes removed)."""
    for part in header.split(";"):
        key, eq, value = part.strip().partition("=")
        if eq and key == name:
            return value.strip().strip('"')
    return None


class PlainCookie:
    """A cookie holding the session token itself (the standalone profile)."""

    def __init__(self, name: str, sessions: SessionManager) -> None:
        self.name = name
        self._sessions = sessions

    def find(self, header: str) -> str | None:
        """The token, or None."""
        return _cookie(header, self.name)

    async def validate(self, header: str) -> SessionWithUser:
        """The session of the cookie's token."""
        return await self._sessions.validate(_well_formed(self.find(header) or ""))


def cookie_source(sessions: SessionManager, name: str | None) -> CookieSource:
    """The session manager's own session cookie when its profile has one (Better Auth's signed cookie, its
    signature verified and its cookie cache read when configured), else a plain cookie named ``name``."""
    if sessions.cookies is not None:
        return sessions.cookies
    return PlainCookie(name or DEFAULT_COOKIE_NAME, sessions)


class _NoCredential(InvalidToken):
    """A request without any session credential."""


def _well_formed(token: str) -> str:
    """The token when it could be one (visible ASCII, bounded); raises InvalidToken otherwise."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not all("!" <= c <= "~" for c in token):
        raise InvalidToken("the session token is malformed")
    return token


class Gateway:
    """Checks the credential of a proxied request."""

    def __init__(self, sessions: SessionManager, cookie: CookieSource, identity: IdentityHeaders) -> None:
        self._sessions = sessions
        self._cookie = cookie
        self.identity = identity
        self.checks = GatewayChecks()  # what the transports decided, for the metrics

    async def check(self, authorization: Sequence[str], cookies: Sequence[str]) -> Verdict:
        """The verdict for a request with these Authorization and Cookie header values (each list in the order
        received; several Cookie headers are joined with "; ", as HTTP/2 requires). Raises BackendUnavailable
        (and any unexpected error) rather than deny when the session cannot be checked."""
        try:
            entry = await self._session(authorization, cookies)
        except _NoCredential as exc:  # a plain challenge (RFC 6750, section 3)
            return Verdict(False, (("www-authenticate", REALM),), exc.reason, exc.message)
        except Unauthenticated as exc:
            challenge = f'{REALM}, error="invalid_token"'
            return Verdict(False, (("www-authenticate", challenge),), exc.reason, exc.message)
        headers = [(self.identity.user_id, entry.user.id), (self.identity.session_id, entry.session.id)]
        if self.identity.email is not None:
            headers.append((self.identity.email, entry.user.email))
        return Verdict(True, tuple(headers))

    async def _session(self, authorization: Sequence[str], cookies: Sequence[str]) -> SessionWithUser:
        if len(authorization) > 1:
            raise InvalidToken("more than one Authorization header")
        if authorization:
            scheme, _, credential = authorization[0].strip().partition(" ")
            if scheme.lower() == "bearer":
                return await self._sessions.validate(_well_formed(credential.strip()))
        header = "; ".join(cookies)
        if len(header) > MAX_COOKIE_HEADER:
            raise InvalidToken("the Cookie header is too long")
        if header and self._cookie.find(header) is not None:
            return await self._cookie.validate(header)
        raise _NoCredential(f"no session: send Authorization: Bearer <token> or the {self._cookie.name} cookie")
