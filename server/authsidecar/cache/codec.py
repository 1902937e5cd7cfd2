"""JSON documents for cached sessions, in Better Auth's secondary-storage shape, driven by the field registry:
``{"session": {...}, "user": {...}}`` keyed by Better Auth's field names (``emailVerified``; additional fields by
their own name, ``returned = false`` ones included, as Better Auth stores them), ISO-8601 UTC dates with
millisecond precision, plus ``checkedAt``: when the snapshot was last read from SQL (Unix milliseconds; absent in
Better Auth's own documents, which are then never trusted without a re-check).

A document written under another configuration (an additional field it lacks) decodes with ``StaleDocument``:
a miss, not an error.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from authsidecar.domain.fields import FieldDef, ModelDef, Registry
from authsidecar.domain.models import Extra, Session, SessionWithUser, User

__all__ = ["StaleDocument", "decode_session", "encode_session", "from_document", "iso", "user_document"]

_DEFAULT = Registry()


class StaleDocument(KeyError):
    """The document lacks a field the configuration now has."""


def _from_iso(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("cached date without a time zone")
    return parsed


def iso(value: datetime) -> str:
    """JavaScript's Date.toISOString() format."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _out(f: FieldDef, value: Any) -> Any:
    if value is None:
        return None
    return iso(value) if f.type == "date" else value


def _in(f: FieldDef, value: Any) -> Any:
    if value is None:
        return None
    if f.type == "date":
        return _from_iso(value)
    return bool(value) if f.type == "boolean" else value


def _part(model: ModelDef, item: Session | User) -> dict[str, Any]:
    doc = {f.key: _out(f, getattr(item, f.attr)) for f in model.builtin}
    doc.update({f.key: _out(f, item.additional.get(f.name)) for f in model.additional})
    return doc


def _required(f: FieldDef, doc: dict[str, Any]) -> Any:
    value = doc[f.key]
    if value is None:
        raise ValueError(f"{f.key} is null")
    return value


def _fields(model: ModelDef, doc: dict[str, Any], lenient: bool) -> dict[str, Any]:
    out = {f.attr: _in(f, _required(f, doc) if f.required else doc.get(f.key)) for f in model.builtin}
    if model.additional:
        missing = [f.key for f in model.additional if f.key not in doc]
        if missing and not lenient:
            raise StaleDocument(missing[0])
        out["additional"] = Extra({f.name: _in(f, doc.get(f.key)) for f in model.additional})
    return out


def user_document(user: User, registry: Registry = _DEFAULT) -> dict[str, Any]:
    """A user snapshot as cached documents hold it."""
    return _part(registry.user, user)


def encode_session(entry: SessionWithUser, registry: Registry = _DEFAULT, checked: bool = True) -> bytes:
    """Serialise for Redis; ``checked=False`` leaves out ``checkedAt`` (Better Auth's own shape)."""
    doc: dict[str, Any] = {
        "session": _part(registry.session, entry.session),
        "user": user_document(entry.user, registry),
    }
    if checked:
        doc["checkedAt"] = int(entry.checked_at * 1000)
    return json.dumps(doc, separators=(",", ":"), default=str).encode()


def decode_session(raw: bytes | str, registry: Registry = _DEFAULT, lenient: bool = False) -> SessionWithUser:
    """Parse a cached document; raises ValueError/KeyError/TypeError on a malformed one (StaleDocument, a
    KeyError, when it was written under another configuration). ``lenient``: an additional field the document
    lacks reads as null (documents a Better Auth app wrote, which are the truth in that profile)."""
    return from_document(json.loads(raw), registry, lenient)


def from_document(doc: dict[str, Any], registry: Registry = _DEFAULT, lenient: bool = False) -> SessionWithUser:
    """A parsed ``{"session", "user"}`` document (see decode_session)."""
    return SessionWithUser(
        Session(**_fields(registry.session, doc["session"], lenient)),
        User(**_fields(registry.user, doc["user"], lenient)),
        int(doc.get("checkedAt", 0)) / 1000,
    )
