"""What is delivered: one message per verification token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

__all__ = ["Message", "render_link"]


@dataclass(frozen=True, slots=True)
class Message:
    """A verification, email-change (approval, confirmation), password-reset message, or a notice, to one address.
    A notice ("email-changed") carries no token or link; ``detail`` is what it tells (the new address)."""

    purpose: str  # "verify-email" | "approve-email-change" | "change-email" | "reset-password" | "email-changed"
    to: str
    name: str
    token: str
    url: str
    expires_at: datetime
    user_id: str
    detail: str = ""


def render_link(template: str, purpose: str, token: str) -> str:
    """Fill {purpose} and {token} (URL-quoted) into the configured link template."""
    return template.replace("{purpose}", quote(purpose, safe="")).replace("{token}", quote(token, safe=""))
