"""Input rules shared by the flows: email normalisation and the password length policy."""
# (control characters in names and user agents are refused by the transport's field checks)

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import idna

from authsidecar.errors import InvalidEmail, MissingField, PasswordTooLong, PasswordTooShort

__all__ = ["CredentialRules", "normalize_email"]

MAX_EMAIL_LENGTH = 254
# RFC 5322 dot-atom local part (RFC 6531: non-ASCII letters, digits and marks too): no display name, angle
# brackets, comments, quoted strings, spaces or control characters.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]|[^\x00-\x7f\s\u0080-\u009f\u2028\u2029]"
_LOCAL = re.compile(rf"(?:{_ATEXT})+(?:\.(?:{_ATEXT})+)*")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})  # zero-width, bidi overrides, soft hyphen, spaces
# Lower-case ASCII host names whose IDNA form is themselves: LDH labels, no "--" (so no xn-- label), a TLD that is
# not all digits. The full IDNA processing (~0.1 ms) is for every other domain.
_PLAIN_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN_HOST = re.compile(rf"(?:{_PLAIN_LABEL}\.)+{_PLAIN_LABEL}")


def _domain(raw: str) -> str | None:
    """The domain in its canonical IDNA form (UTS #46 mapping, Unicode labels), or None when it is not a host
    name of at least two labels."""
    if len(raw) <= 253 and "--" not in raw and _PLAIN_HOST.fullmatch(raw) and not raw.rpartition(".")[2].isdigit():
        return raw
    return _idna_domain(raw)


def _idna_domain(raw: str) -> str | None:
    """_domain through the full IDNA processing."""
    try:
        ascii_form = idna.encode(raw, uts46=True).decode("ascii")
        canonical = idna.decode(ascii_form)
    except (idna.IDNAError, UnicodeError, ValueError):
        return None
    labels = ascii_form.split(".")
    if len(labels) < 2 or len(ascii_form) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    if labels[-1].isdigit():
        return None
    return canonical


def normalize_email(raw: str, field: str = "email") -> str:
    """A strict addr-spec, NFC, lower-cased, its domain IDNA-normalised; raise MissingField / InvalidEmail.
    Display names, angle brackets, comments and quoted local parts are refused: only the address itself."""
    email = unicodedata.normalize("NFC", raw.strip()).lower()
    if not email:
        raise MissingField.field(field, "is required")
    local, at, host = email.rpartition("@")
    domain = _domain(host) if at and host else None
    if (
        domain is None
        or len(local) > 64
        or not _LOCAL.fullmatch(local)
        or any(unicodedata.category(c) in _INVISIBLE for c in local)
        or len(f"{local}@{domain}") > MAX_EMAIL_LENGTH
    ):
        raise InvalidEmail.field(field, "is not a valid email address (user@example.com, nothing around it)")
    return f"{local}@{domain}"


@dataclass(frozen=True, slots=True)
class CredentialRules:
    """Password length bounds (in characters), checked before any hashing."""

    min_password_length: int = 8
    max_password_length: int = 128

    def check_password(self, password: str, field: str = "password") -> None:
        """Raise MissingField / PasswordTooShort / PasswordTooLong."""
        if not password:
            raise MissingField.field(field, "is required")
        if len(password) < self.min_password_length:
            raise PasswordTooShort.field(field, f"must be at least {self.min_password_length} characters")
        if len(password) > self.max_password_length:
            raise PasswordTooLong.field(field, f"must be at most {self.max_password_length} characters")
