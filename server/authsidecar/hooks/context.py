"""What a hook is told about the call that caused a change: the RPC, the end user's client, and the acting session
and user (whoever's token the call carried). Set by the transport when a call starts, completed by the session
manager when it validates the caller's token; read by the hooked unit of work."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CallContext", "HookContext", "begin_call", "call_context", "note_actor"]


@dataclass(slots=True)
class CallContext:
    """The current call, as far as it is known (mutable: the acting session is learnt during the call)."""

    rpc: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    actor: Any = None  # the validated SessionWithUser, turned into payloads only when a hook needs them


@dataclass(frozen=True, slots=True)
class HookContext:
    """What a Python hook receives with the data: the event and the call that caused it.

    ``model``: user, session, account or verification; ``event``: create, update or delete; ``when``: before or
    after. ``session`` / ``user``: the acting session and user (payload dicts, never a token), when the call
    carried a session token. ``event_id`` and ``occurred_at`` (ISO 8601) are set for after hooks: deliveries are
    at least once, so ``event_id`` is what to deduplicate on.
    """

    model: str
    event: str
    when: str
    rpc: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    session: dict[str, Any] | None = None
    user: dict[str, Any] | None = None
    event_id: str | None = None
    occurred_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, model: str, event: str, when: str, call: dict[str, Any], **kwargs: Any) -> HookContext:
        """From a call context's JSON form."""
        return cls(
            model,
            event,
            when,
            rpc=call.get("rpc"),
            ip_address=call.get("ipAddress"),
            user_agent=call.get("userAgent"),
            session=call.get("session"),
            user=call.get("user"),
            **kwargs,
        )


_CALL: ContextVar[CallContext | None] = ContextVar("authsidecar_call", default=None)


def begin_call(rpc: str, ip_address: str | None, user_agent: str | None) -> None:
    """A call starts (in its own task: the context ends with it)."""
    _CALL.set(CallContext(rpc, ip_address or None, user_agent or None))


def note_actor(entry: Any) -> None:
    """The call's session token was validated: ``entry`` (a SessionWithUser) acts."""
    call = _CALL.get()
    if call is not None:
        call.actor = entry


def call_context() -> CallContext:
    """The current call's context (an empty one outside a call: a background job, the CLI)."""
    return _CALL.get() or CallContext()
