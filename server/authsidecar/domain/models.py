"""Domain records: immutable, storage- and transport-agnostic. Datetimes are timezone-aware UTC."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "CREDENTIAL_PROVIDER",
    "NO_EXTRA",
    "Account",
    "Extra",
    "Invalidations",
    "OutboxEntry",
    "OutboxRow",
    "Session",
    "SessionWithUser",
    "User",
    "Verification",
    "version_of",
]

CREDENTIAL_PROVIDER = "credential"


class Extra(Mapping[str, Any]):
    """Values of a record's additional fields, by field name: an immutable, hashable mapping (records are used
    as memo keys). Values are JSON-compatible; dates are ``datetime``."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = dict(data or {})
        self._hash: int | None = None

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(json.dumps(self._data, sort_keys=True, default=str))
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Extra) and self._data == other._data

    def __repr__(self) -> str:
        return f"Extra({self._data!r})"


NO_EXTRA = Extra()


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
    additional: Extra = field(default=NO_EXTRA)


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
    additional: Extra = field(default=NO_EXTRA)


@dataclass(frozen=True, slots=True)
class SessionWithUser:
    """What validating a token yields. ``checked_at`` (Unix seconds) is when this snapshot was last read from,
    or written to, the store of record; a cached copy is trusted only for a bounded time after it (0: never)."""

    session: Session
    user: User
    checked_at: float = 0.0


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)  # cached documents keep milliseconds
    return value


def version_of(user: User) -> str:
    """A user snapshot's version: a digest of its content (dates to the millisecond, as cached documents keep
    them). Two different states never share a version, even when written in the same millisecond."""
    fields = [_canonical(getattr(user, f.name)) for f in dataclasses.fields(User) if f.name != "additional"]
    extra = {name: _canonical(value) for name, value in user.additional.items()}
    text = json.dumps([fields, extra], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Invalidations:
    """What a committed write made stale in every cache, declared by the write itself.

    ``sessions``: (user id, stored token) of sessions that were deleted and must never validate again.
    ``users``: (user id, version) of users whose snapshot changed; only a snapshot of that version is current
    (``version_of``: a digest of the new row).
    ``seq``: the entry's place in the invalidation log (commit order), once logged.
    """

    sessions: tuple[tuple[str, str], ...] = ()
    users: tuple[tuple[str, str], ...] = ()
    seq: int = 0

    def __bool__(self) -> bool:
        return bool(self.sessions or self.users)


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


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An after event bound for one target (a hook, the event stream), written in the transaction of the change.

    ``key`` orders delivery: entries with the same key reach a target in commit order (the user's id, so a
    user's events arrive in order). ``payload`` is the event's JSON text, with no secret in it.
    """

    target: str
    key: str
    payload: str


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A stored outbox entry awaiting delivery."""

    seq: int
    target: str
    key: str
    payload: str
    attempts: int
    next_attempt_at: datetime
