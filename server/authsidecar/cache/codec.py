"""JSON documents for cached sessions, in Better Auth's secondary-storage shape:
``{"session": {...}, "user": {...}}`` with camelCase keys and ISO-8601 UTC dates (millisecond precision), plus
``checkedAt``: when the snapshot was last read from SQL (Unix milliseconds; absent in Better Auth's own
documents, which are then never trusted without a re-check)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from authsidecar.domain.models import Session, SessionWithUser, User

__all__ = ["decode_session", "encode_session", "iso"]


def _from_iso(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("cached date without a time zone")
    return parsed


def iso(value: datetime) -> str:
    """JavaScript's Date.toISOString() format."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_session(entry: SessionWithUser) -> bytes:
    """Serialise for Redis."""
    s, u = entry.session, entry.user
    doc: dict[str, Any] = {
        "session": {
            "id": s.id,
            "token": s.stored_token,
            "userId": s.user_id,
            "expiresAt": iso(s.expires_at),
            "createdAt": iso(s.created_at),
            "updatedAt": iso(s.updated_at),
            "ipAddress": s.ip_address,
            "userAgent": s.user_agent,
        },
        "user": {
            "id": u.id,
            "name": u.name,
            "email": u.email,
            "emailVerified": u.email_verified,
            "image": u.image,
            "createdAt": iso(u.created_at),
            "updatedAt": iso(u.updated_at),
        },
        "checkedAt": int(entry.checked_at * 1000),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_session(raw: bytes | str) -> SessionWithUser:
    """Parse a cached document; raises ValueError/KeyError/TypeError on a malformed one."""
    doc = json.loads(raw)
    s, u = doc["session"], doc["user"]
    return SessionWithUser(
        Session(
            id=s["id"],
            user_id=s["userId"],
            stored_token=s["token"],
            expires_at=_from_iso(s["expiresAt"]),
            created_at=_from_iso(s["createdAt"]),
            updated_at=_from_iso(s["updatedAt"]),
            ip_address=s.get("ipAddress"),
            user_agent=s.get("userAgent"),
        ),
        User(
            id=u["id"],
            name=u["name"],
            email=u["email"],
            email_verified=bool(u["emailVerified"]),
            image=u.get("image"),
            created_at=_from_iso(u["createdAt"]),
            updated_at=_from_iso(u["updatedAt"]),
        ),
        int(doc.get("checkedAt", 0)) / 1000,
    )
