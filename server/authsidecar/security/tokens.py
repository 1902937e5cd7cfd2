"""Session tokens: how they are made, how they are stored at rest, and how their cache key is built.

Transport (where a token travels) is not decided here; only how a token is checked and kept. The standalone
default stores digests; the Better Auth compatibility profile stores tokens as Better Auth does (plain).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Protocol

__all__ = ["MAX_TOKEN_LENGTH", "HashedTokenPolicy", "PlainTokenPolicy", "TokenPolicy", "alphanumeric"]

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


_ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def alphanumeric(length: int) -> str:
    """Better Auth's generateId(length): uniformly random characters of [A-Za-z0-9]."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


class PlainTokenPolicy:
    """Better Auth's tokens (compatibility profile): 32 random characters of [A-Za-z0-9] (190 bits), stored as
    they are in ``session.token`` and used as the Redis key, so a Better Auth app reads the same rows and keys."""

    def generate(self) -> str:
        """32 alphanumeric characters, as Better Auth's generateId(32)."""
        return alphanumeric(32)

    def stored(self, token: str) -> str:
        """The token itself."""
        return token

    def cache_key(self, stored: str) -> str:
        """The token itself (Better Auth's key, before the store's prefix)."""
        return stored
