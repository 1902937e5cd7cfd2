"""Input rules shared by the flows: email normalisation and the password length policy."""

from __future__ import annotations

import re
from dataclasses import dataclass

from authsidecar.errors import InvalidEmail, MissingField, PasswordTooLong, PasswordTooShort

__all__ = ["CredentialRules", "normalize_email"]

MAX_EMAIL_LENGTH = 254
_ATOM = r"[^\s@\x00-\x1f\x7f-\x9f]"
_EMAIL = re.compile(rf"{_ATOM}+@{_ATOM}+\.(?!\.){_ATOM}+")


def normalize_email(raw: str, field: str = "email") -> str:
    """Trim and lower-case; raise MissingField / InvalidEmail."""
    email = raw.strip().lower()
    if not email:
        raise MissingField.field(field, "is required")
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email) or ".." in email.split("@", 1)[1]:
        raise InvalidEmail.field(field, "is not a valid email address")
    return email


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
