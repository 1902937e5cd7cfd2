"""Session tokens: how they are made, how they are stored at rest, and how their cache key is built.

Transport (where a token travels) is not decided here; only how a token is checked and kept. A later
interoperability profile can store tokens as Better Auth does (plain) by providing another TokenPolicy.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Protocol

__all__ = ["MAX_TOKEN_LENGTH", "HashedTokenPolicy", "TokenPolicy"]

MAX_TOKEN_LENGTH = 256


class TokenPolicy(Protocol):
    """How session tokens are generated, stored and keyed in the cache."""

    def generate(self) -> str:
        """A new bearer token."""

    def stored(self, token: str) -> str:
        """The value kept in ``session.token`` for a bearer token."""

    def cache_key(self, stored: str) -> str:
        """The secondary-storage key (before the store's prefix) of a session, from its stored token."""


class HashedTokenPolicy:
    """Default: 256-bit random URL-safe tokens; only their SHA-256 (hex) is stored and used as the cache key,
    so a leaked database or cache dump yields no usable token."""

    def __init__(self, entropy_bytes: int = 32) -> None:
        if entropy_bytes < 32:
            raise ValueError("session tokens need at least 256 bits of entropy")
        self._entropy = entropy_bytes

    def generate(self) -> str:
        """43 URL-safe characters for 32 bytes of entropy."""
        return secrets.token_urlsafe(self._entropy)

    def stored(self, token: str) -> str:
        """SHA-256 hex digest of the token."""
        return hashlib.sha256(token.encode()).hexdigest()

    def cache_key(self, stored: str) -> str:
        """The digest itself: the cache never holds a usable token either."""
        return "session:" + stored
