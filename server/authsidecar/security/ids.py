"""Record identifiers in Better Auth's format: 32 random characters from [A-Za-z0-9]."""

from __future__ import annotations

import secrets
import string

__all__ = ["ID_ALPHABET", "ID_LENGTH", "generate_id"]

ID_ALPHABET = string.ascii_letters + string.digits
ID_LENGTH = 32


def generate_id(length: int = ID_LENGTH) -> str:
    """A uniformly random identifier (``secrets.choice`` does unbiased sampling)."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(length))
