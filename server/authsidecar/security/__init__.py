"""Password hashing, identifiers and session tokens."""

from authsidecar.security.ids import generate_id, id_generator
from authsidecar.security.passwords import Argon2Parameters, PasswordHasher
from authsidecar.security.tokens import HashedTokenPolicy, TokenPolicy

__all__ = ["Argon2Parameters", "HashedTokenPolicy", "PasswordHasher", "TokenPolicy", "generate_id", "id_generator"]
