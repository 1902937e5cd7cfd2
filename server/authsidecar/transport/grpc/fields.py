"""Request shape checks: presence, length and NUL bytes, collected into one INVALID_ARGUMENT."""

from __future__ import annotations

import ipaddress
import unicodedata

from authsidecar.errors import FieldViolation, InvalidArgument, MissingField
from authsidecar.security.tokens import MAX_TOKEN_LENGTH
from authsidecar.services.sessions import ClientInfo

__all__ = ["FieldChecker"]

MAX_NAME = 256
MAX_EMAIL = 320
MAX_PASSWORD = 4096  # the configured policy (128 by default) reports PASSWORD_TOO_LONG below this bound
MAX_IMAGE = 2048
MAX_ID = 128
MAX_USER_AGENT = 1024
# Control (Cc), format (Cf: zero-width, bidi overrides, soft hyphen, BOM) and line/paragraph separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


def has_invisible(value: str) -> bool:
    """Whether a string holds control, format (zero-width, bidi override) or line-separator characters."""
    if value.isascii():  # the usual user agent: its only such characters are the ASCII controls
        return not value.isprintable()
    return any(unicodedata.category(c) in _INVISIBLE for c in value)


MAX_COOKIE_HEADER = 16_384
MAX_VERIFICATION_TOKEN = 2048  # Better Auth's email-verification tokens are JWTs of a few hundred characters


class FieldChecker:
    """Collects violations; ``done()`` raises MissingField when only presence failed, else InvalidArgument."""

    def __init__(self) -> None:
        self._missing: list[FieldViolation] = []
        self._invalid: list[FieldViolation] = []

    def text(self, field: str, value: str, max_length: int, required: bool = True, plain: bool = False) -> str:
        """A string field; returns it unchanged. ``plain``: one line of text, without control characters (CR/LF,
        terminal escapes, line separators), as names and user agents must be."""
        if not value:
            if required:
                self._missing.append(FieldViolation(field, "is required"))
            return value
        if len(value) > max_length:
            self._invalid.append(FieldViolation(field, f"must be at most {max_length} characters"))
        elif "\x00" in value:
            self._invalid.append(FieldViolation(field, "must not contain NUL characters"))
        elif plain and has_invisible(value):
            self._invalid.append(
                FieldViolation(field, "must not contain control, invisible or direction-override characters")
            )
        return value

    def token(self, field: str, value: str) -> str:
        """A bearer token."""
        return self.text(field, value, MAX_TOKEN_LENGTH)

    def client(self, field: str, ip_address: str, user_agent: str) -> ClientInfo:
        """The end user's client context; both parts optional."""
        ip = self.text(f"{field}.ip_address", ip_address, 64, required=False)
        if ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                self._invalid.append(FieldViolation(f"{field}.ip_address", "is not an IP address"))
        ua = self.text(f"{field}.user_agent", user_agent, MAX_USER_AGENT, required=False, plain=True)
        return ClientInfo(ip_address=ip or None, user_agent=ua or None)

    def done(self) -> None:
        """Raise if anything was wrong."""
        if self._invalid:
            raise InvalidArgument(self._missing + self._invalid)
        if self._missing:
            raise MissingField(self._missing)
