"""Records as hooks and events see them: JSON objects with Better Auth's field names (``emailVerified``), dates in
ISO 8601, additional fields included, and never a secret: no session token, no password hash, no OAuth token, no
verification identifier or value (they hold token digests, or in the compatibility profile the tokens themselves).

A before hook may answer with replacement data; ``Payloads.apply_*`` merge it into the record, limited to the
fields a hook may write, and check each value against the field's type.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from authsidecar.cache.codec import iso
from authsidecar.domain.fields import ModelDef, Registry
from authsidecar.domain.models import Account, Extra, Session, SessionWithUser, User, Verification
from authsidecar.errors import AuthSidecarError
from authsidecar.hooks.context import CallContext
from authsidecar.schema_config import accepts, as_date

__all__ = ["SECRET_FIELDS", "WRITABLE", "Payloads"]

log = logging.getLogger("authsidecar.hooks")

# Fields never put in a payload.
SECRET_FIELDS = {
    "session": frozenset({"token"}),
    "account": frozenset({"password", "access_token", "refresh_token", "id_token"}),
    "verification": frozenset({"identifier", "value"}),
}
# Built-in fields a before hook may set (besides every additional field of user and session), by model and event.
WRITABLE: dict[tuple[str, str], frozenset[str]] = {
    ("user", "create"): frozenset({"name", "image", "email_verified"}),
    ("user", "update"): frozenset({"name", "image"}),
    ("session", "create"): frozenset({"expires_at", "ip_address", "user_agent"}),
}


def _out(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    return value


class Payloads:
    """Converts records to payloads and hook answers back, for one field registry."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def _payload(self, model: ModelDef, item: Any) -> dict[str, Any]:
        hidden = SECRET_FIELDS.get(model.name, frozenset())
        out = {f.key: _out(getattr(item, f.attr)) for f in model.builtin if f.name not in hidden}
        extra = getattr(item, "additional", None)
        if extra is not None:
            out.update({f.key: _out(extra.get(f.name)) for f in model.additional})
        return out

    def user(self, user: User) -> dict[str, Any]:
        """A user."""
        return self._payload(self._registry.user, user)

    def session(self, session: Session) -> dict[str, Any]:
        """A session, without its token."""
        return self._payload(self._registry.session, session)

    def account(self, account: Account) -> dict[str, Any]:
        """An account, without password hash or OAuth tokens."""
        model = self._registry.account
        hidden = SECRET_FIELDS["account"]
        return {
            f.key: _out(getattr(account, f.attr))
            for f in model.builtin
            if f.name not in hidden and hasattr(account, f.attr)
        }

    def verification(self, verification: Verification) -> dict[str, Any]:
        """A verification: its purpose, owner and dates, never its identifier or value."""
        return {
            "id": verification.id,
            **self.verification_parts(verification.identifier, verification.value),
            "expiresAt": iso(verification.expires_at),
            "createdAt": iso(verification.created_at),
            "updatedAt": iso(verification.updated_at),
        }

    @staticmethod
    def verification_parts(identifier: str, value: str | None) -> dict[str, Any]:
        """``purpose`` (the identifier's prefix) and ``userId`` (from the value, when it names one)."""
        purpose, sep, _ = identifier.partition(":")
        parts: dict[str, Any] = {"purpose": purpose if sep else identifier.partition("-")[0]}
        user_id = _user_of(value)
        if user_id:
            parts["userId"] = user_id
        return parts

    def changes(self, model: str, changes: dict[str, Any]) -> dict[str, Any]:
        """An update's changes (logical names) as payload keys."""
        definition = self._registry.model(model)
        return {definition[name].key: _out(value) for name, value in changes.items() if name in definition}

    def call(self, call: CallContext) -> dict[str, Any]:
        """A call context's JSON form: stored with events and sent to webhooks."""
        actor: SessionWithUser | None = call.actor
        return {
            "rpc": call.rpc,
            "ipAddress": call.ip_address,
            "userAgent": call.user_agent,
            "session": self.session(actor.session) if actor is not None else None,
            "user": self.user(actor.user) if actor is not None else None,
        }

    # -- replacement data from before hooks ------------------------------------------------------------------

    def _writable(self, model: str, event: str, answer: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
        """The answer's changed values by logical name, checked. A field a hook may not set (built-in fields
        outside WRITABLE, plugins' own fields) or a value of the wrong type is a bug of the hook: the change is
        refused with INTERNAL (the details go to the log, not to the client)."""
        definition = self._registry.model(model)
        allowed = WRITABLE.get((model, event), frozenset())
        by_key = {f.key: f for f in definition}
        out: dict[str, Any] = {}
        for key, value in answer.items():
            f = by_key.get(key)
            if f is not None and current.get(key, _MISSING) == value:
                continue  # handed back unchanged
            extra = f is not None and not f.builtin and not f.plugin and model in ("user", "session")
            if f is None or not (f.name in allowed or extra):
                raise _misbehaved(f"a hook may not set {model}.{key} on {event}")
            if value is None:
                if f.required and f.default is None:
                    raise _misbehaved(f"a hook set the required field {model}.{key} to null")
            elif not accepts(f.type, value, f.bigint):
                raise _misbehaved(f"a hook set {model}.{key} to a value that is not a {f.type}")
            out[f.name] = as_date(value) if f.type == "date" and value is not None else value
        return out

    def apply_user(self, user: User, answer: dict[str, Any], event: str = "create") -> User:
        """A user with a before hook's replacement data merged in."""
        changes = self._writable("user", event, answer, self.user(user))
        return _merged(user, self._registry.user, changes)

    def apply_session(self, session: Session, answer: dict[str, Any]) -> Session:
        """A new session with a before hook's replacement data merged in (its expiry may only come earlier: the
        lifetime rules, absolute lifetime included, stay the upper bound)."""
        changes = self._writable("session", "create", answer, self.session(session))
        if "expires_at" in changes and not session.created_at < changes["expires_at"] <= session.expires_at:
            raise _misbehaved("a hook may only bring session.expiresAt earlier (after createdAt)")
        return _merged(session, self._registry.session, changes)

    def apply_changes(
        self, model: str, changes: dict[str, Any], answer: dict[str, Any], sent: dict[str, Any]
    ) -> dict[str, Any]:
        """An update's changes (logical names) with a before hook's replacement data merged in (``sent``: the
        data the hooks were given)."""
        merged = dict(changes)
        merged.update(self._writable(model, "update", answer, sent))
        return merged


_MISSING = object()


def _misbehaved(detail: str) -> AuthSidecarError:
    """A hook answered what it may not: logged; the client gets INTERNAL with a request id, nothing is written."""
    log.error("%s; the change was refused", detail)
    return AuthSidecarError("a hook answered data it may not set; see the server log")


R = TypeVar("R", User, Session)


def _merged(item: R, model: ModelDef, changes: dict[str, Any]) -> R:
    builtin = {model[name].attr: value for name, value in changes.items() if model[name].builtin}
    extra = {name: value for name, value in changes.items() if not model[name].builtin}
    if extra:
        builtin["additional"] = Extra({**item.additional, **extra})
    return replace(item, **builtin) if builtin else item


def _user_of(value: str | None) -> str | None:
    """The user a verification value names: {"userId": ...} (ours), or a bare id (Better Auth's password resets)."""
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return value if value.isalnum() and len(value) <= 64 else None
    if isinstance(parsed, dict) and isinstance(parsed.get("userId"), str):
        return str(parsed["userId"])
    return None
