"""HS256 JSON Web Tokens, the minimum Better Auth's email-verification links need (compatibility profile).

Better Auth signs ``{"email", "userId", "updateTo"?, "requestType"?, "iat", "exp"}`` with header
``{"alg": "HS256"}`` and its current secret, and accepts only HS256. Nothing else of JOSE is supported here, on
purpose: no other algorithm, no "none", no key ids.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from typing import Any

__all__ = ["JwtError", "JwtExpired", "sign_hs256", "verify_hs256"]

_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256"}').rstrip(b"=")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class JwtError(ValueError):
    """Not a token signed with this key."""


class JwtExpired(JwtError):
    """A genuine token past its ``exp``."""


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(part: str) -> bytes:
    """Strict base64url without padding: any other character (or padding) makes the token invalid."""
    if not _BASE64URL.fullmatch(part) or len(part) % 4 == 1:
        raise JwtError("bad base64")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        raise JwtError("bad base64") from exc


def sign_hs256(payload: dict[str, Any], secret: str) -> str:
    """A compact JWS of ``payload``."""
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    signing_input = _HEADER + b"." + body
    signature = _b64(hmac.digest(secret.encode(), signing_input, hashlib.sha256))
    return (signing_input + b"." + signature).decode()


def verify_hs256(token: str, secret: str, now: float) -> dict[str, Any]:
    """The payload of a token signed with ``secret``; raises JwtExpired past ``exp`` (Unix seconds), JwtError
    for anything else that is wrong."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("not a compact JWS")
    try:
        header = json.loads(_unb64(parts[0]))
    except ValueError as exc:
        raise JwtError("bad header") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS256" or "crit" in header:
        raise JwtError("not HS256")
    expected = hmac.digest(secret.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256)
    if not hmac.compare_digest(expected, _unb64(parts[2])):
        raise JwtError("bad signature")
    try:
        payload = json.loads(_unb64(parts[1]))
    except ValueError as exc:
        raise JwtError("bad payload") from exc
    if not isinstance(payload, dict):
        raise JwtError("bad payload")
    exp = payload.get("exp")
    if exp is not None and (not isinstance(exp, int | float) or now >= exp):
        raise JwtExpired("expired")
    return payload
