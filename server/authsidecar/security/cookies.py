"""Better Auth's session cookie (compatibility profile).

Better Auth sets ``<prefix>.session_token`` (``__Secure-<prefix>.session_token`` over https) to
``encodeURIComponent(token + "." + base64(HMAC-SHA256(secret, token)))``, signed with its current secret (the
first of BETTER_AUTH_SECRETS, else BETTER_AUTH_SECRET) and verified with that secret only. This module makes and
checks such values and finds them in a Cookie header, so a gateway can pass either the cookie's value or the whole
header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from urllib.parse import quote, unquote

__all__ = ["SessionCookies"]

_SIGNATURE_LENGTH = 44  # base64 of 32 bytes, padded
_URI_COMPONENT_SAFE = "-_.!~*'()"  # what encodeURIComponent leaves as it is (besides letters and digits)


class SessionCookies:
    """Sign and verify session cookie values with the app's current secret."""

    def __init__(self, secret: str, prefix: str = "better-auth", secure: bool | None = None) -> None:
        self._key = secret.encode()
        self.name = f"{prefix}.session_token"
        self.secure_name = f"__Secure-{prefix}.session_token"
        # Which name a Cookie header is read under: Better Auth reads exactly one (the __Secure- one when its
        # baseURL is https); None accepts either, the __Secure- one first.
        self._names = {True: (self.secure_name,), False: (self.name,), None: (self.secure_name, self.name)}[secure]
        self.dont_remember_name = f"{prefix}.dont_remember"

    def _signature(self, token: str) -> str:
        return base64.b64encode(hmac.digest(self._key, token.encode(), hashlib.sha256)).decode()

    def sign(self, token: str) -> str:
        """The cookie value Better Auth would set for this session token (URL-encoded)."""
        return quote(f"{token}.{self._signature(token)}", safe=_URI_COMPONENT_SAFE)

    def dont_remember(self) -> str:
        """The value of Better Auth's ``dont_remember`` cookie, which keeps a remember-me=false session from
        being refreshed by the app."""
        return self.sign("true")

    def unsign(self, value: str) -> str | None:
        """The token inside a signed value (URL-encoded or not); None when the signature does not verify."""
        if "%" in value:
            value = unquote(value)
        token, dot, signature = value.rpartition(".")
        if not dot or not token or len(signature) != _SIGNATURE_LENGTH or not signature.endswith("="):
            return None
        try:
            given = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            return None
        expected = hmac.digest(self._key, token.encode(), hashlib.sha256)
        return token if hmac.compare_digest(given, expected) else None

    def from_header(self, header: str) -> str | None:
        """The session cookie's (still signed) value in a Cookie header, under the configured name (by default
        ``__Secure-`` first, since only an https origin can set it); the first occurrence of a name counts.
        None when there is none."""
        found: dict[str, str] = {}
        for part in header.split(";"):
            name, eq, value = part.strip().partition("=")
            if eq and name in self._names and name not in found:
                found[name] = value.strip().strip('"')
        return next((found[name] for name in self._names if name in found), None)
