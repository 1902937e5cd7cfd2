"""Better Auth's session cookie cache (``session.cookieCache``), read locally (compatibility profile, opt-in).

With it, the app puts a signed copy of the session in the ``<prefix>.session_data`` cookie (split into
``<name>.0``, ``<name>.1``... when large) and trusts it for ``maxAge`` (5 minutes by default) without asking its
storage, so a revoked session stays valid that long (better-auth#6893). Reading it here makes the same trade, only
when the operator asks for it. Two of the app's strategies are supported:

- ``compact`` (the app's default): base64url(JSON ``{"session": payload, "expiresAt": ms, "signature"}``) with
  signature = base64url(HMAC-SHA256(secret, JSON.stringify({...payload, expiresAt}))), unpadded;
- ``jwt``: an HS256 JWT of the payload signed with the secret.

The payload is ``{"session", "user", "updatedAt", "version"}``; it counts only for the token of the session cookie
it came with, with the configured version, before both its own expiry and the session's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from datetime import datetime
from typing import Any, Literal

from authsidecar.security.jwt import JwtError, verify_hs256

__all__ = ["CookieCache", "Strategy"]

Strategy = Literal["compact", "jwt"]
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def _unb64url(text: str) -> bytes | None:
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _stringify(value: Any) -> str:
    """JSON.stringify of a value parsed from JSON (compact, non-ASCII as is)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class CookieCache:
    """Reads the app's session_data cookie."""

    def __init__(self, secret: str, strategy: Strategy, version: str, names: tuple[str, ...]) -> None:
        self._secret = secret
        self._key = secret.encode()
        self._strategy = strategy
        self._version = version
        self._names = names  # the cookie's names, in order of preference

    def _value(self, header: str) -> str | None:
        """The cookie's value, its chunks joined (``name.0``, ``name.1``, ...) when it was split."""
        whole: dict[str, str] = {}
        chunks: dict[str, dict[int, str]] = {}
        for part in header.split(";"):
            key, eq, value = part.strip().partition("=")
            if not eq:
                continue
            for name in self._names:
                if key == name:
                    whole.setdefault(name, value.strip())
                elif key.startswith(name + ".") and key[len(name) + 1 :].isdigit():
                    chunks.setdefault(name, {}).setdefault(int(key[len(name) + 1 :]), value.strip())
        for name in self._names:
            if name in whole:
                return whole[name]
            if name in chunks:
                return "".join(chunks[name][i] for i in sorted(chunks[name]))
        return None

    def _payload(self, value: str, now: datetime) -> dict[str, Any] | None:
        if self._strategy == "jwt":
            try:
                claims = verify_hs256(value, self._secret, now.timestamp())
            except JwtError:
                return None
            return claims if "exp" in claims else None
        raw = _unb64url(value)
        if raw is None:
            return None
        try:
            outer = json.loads(raw)
            payload, expires_at, signature = outer["session"], outer["expiresAt"], outer["signature"]
            if (
                not isinstance(payload, dict)
                or not isinstance(expires_at, int | float)
                or not isinstance(signature, str)
            ):
                return None
            signed = _stringify({**payload, "expiresAt": expires_at}).encode()
        except (ValueError, KeyError, TypeError, UnicodeEncodeError):
            return None
        given = _unb64url(signature)
        if given is None or not hmac.compare_digest(given, hmac.digest(self._key, signed, hashlib.sha256)):
            return None
        if expires_at <= now.timestamp() * 1000:
            return None
        return payload

    def read(self, header: str, token: str, now: datetime) -> dict[str, Any] | None:
        """The verified ``{"session", "user"}`` the cookie holds for ``token``, or None (absent, altered, expired,
        another session's, another version)."""
        value = self._value(header)
        if not value:
            return None
        payload = self._payload(value, now)
        if payload is None:
            return None
        session, user = payload.get("session"), payload.get("user")
        if not isinstance(session, dict) or not isinstance(user, dict) or session.get("token") != token:
            return None
        if str(payload.get("version") or "1") != self._version:
            return None
        try:
            if datetime.fromisoformat(str(session["expiresAt"])) <= now:
                return None
        except (KeyError, ValueError, TypeError):
            return None
        return {"session": session, "user": user}
