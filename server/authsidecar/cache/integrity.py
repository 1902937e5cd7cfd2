"""Authenticated cache documents: anyone who can write to Redis must not be able to forge or alter a session.

A stored value is ``m1:<hex HMAC-SHA256>:<document>``; the MAC covers the full Redis key and the document, so a
valid document copied under another key is refused too. The key is derived from the server secret
(``AUTHSIDECAR_SECRET``) and is never the secret itself.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["DocumentSigner", "derive_key"]

_PREFIX = b"m1:"
_MAC_HEX = 64


def derive_key(secret: str, purpose: str) -> bytes:
    """A 256-bit key for one purpose, derived from the server secret."""
    return hmac.digest(secret.encode(), b"authsidecar/" + purpose.encode(), hashlib.sha256)


class DocumentSigner:
    """Signs and verifies cache documents bound to their key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the document key needs at least 256 bits")
        self._key = key

    def _mac(self, name: bytes, body: bytes) -> bytes:
        return hmac.new(self._key, name + b"\x00" + body, hashlib.sha256).hexdigest().encode()

    def sign(self, name: str, body: bytes) -> bytes:
        """The value to store under ``name``."""
        return _PREFIX + self._mac(name.encode(), body) + b":" + body

    def verify(self, name: str, value: bytes) -> bytes | None:
        """The document, or None when the value is unsigned, altered or stored under another key."""
        head = len(_PREFIX)
        if not value.startswith(_PREFIX) or len(value) < head + _MAC_HEX + 1 or value[head + _MAC_HEX] != ord(":"):
            return None
        mac, body = value[head : head + _MAC_HEX], value[head + _MAC_HEX + 1 :]
        if not hmac.compare_digest(mac, self._mac(name.encode(), body)):
            return None
        return body
