"""Domain records: immutable, storage- and transport-agnostic. Datetimes are timezone-aware UTC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["CREDENTIAL_PROVIDER", "Account", "Session", "SessionWithUser", "User", "Verification"]

CREDENTIAL_PROVIDER = "credential"


@dataclass(frozen=True, slots=True)
class User:
    """A row of ``user``."""

    id: str
    name: str
    email: str
    email_verified: bool
    image: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Session:
    """A row of ``session``. ``stored_token`` is the token as stored at rest (by default its SHA-256 digest),
    never the bearer token itself; it is never sent to clients."""

    id: str
    user_id: str
    stored_token: str
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    ip_address: str | None
    user_agent: str | None


@dataclass(frozen=True, slots=True)
class SessionWithUser:
    """What validating a token yields."""

    session: Session
    user: User


@dataclass(frozen=True, slots=True)
class Account:
    """A row of ``account``; for email/password sign-in, provider_id is "credential" and account_id the user id."""

    id: str
    account_id: str
    provider_id: str
    user_id: str
    password: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Verification:
    """A row of ``verification``: ``identifier`` is "<purpose>:<sha256 of the token>", ``value`` a JSON payload."""

    id: str
    identifier: str
    value: str
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
