"""What Better Auth 1.7.25's ``twoFactor`` plugin stores, read and written byte for byte; no I/O, no clock.

Ciphertext (``symmetricEncrypt``/``symmetricDecrypt`` in better-auth ``dist/crypto/index.mjs``):
    key = SHA-256(UTF-8 of the secret string); a random 24-byte nonce; XChaCha20-Poly1305 (no associated data)
    over the UTF-8 plaintext; stored as lowercase hex of ``nonce || ciphertext || 16-byte tag``. With a rotating
    key set (Better Auth's ``secrets`` option or ``BETTER_AUTH_SECRETS``) the hex is wrapped as
    ``$ba$<version>$<hex>``, and bare hex is read with the legacy ``BETTER_AUTH_SECRET``.
    XChaCha20-Poly1305 comes from libsodium through PyNaCl (``crypto_aead_xchacha20poly1305_ietf_*``): the
    ``cryptography`` package only has the 12-byte-nonce ChaCha20-Poly1305, and a maintained binding is preferred
    to a hand-written HChaCha20.

``twoFactor.secret``:
    the encryption of a 32-character string over ``[a-z0-9A-Z-_]``. TOTP uses that string's UTF-8 bytes as the
    HMAC-SHA1 key (not a base32 decoding of it); the otpauth URI carries the base32 of those bytes. A decrypted
    value ``base32:<BASE32>`` (a secret imported from elsewhere) means the key is the base32-decoded bytes.
    TOTP: 6 digits, 30-second steps, counter = floor(unix ms / 30000), verification accepts steps -1..+1.

``twoFactor.backupCodes``:
    ``JSON.stringify`` of the codes (10 codes of 10 characters over ``[a-z0-9A-Z]``, shown as ``XXXXX-XXXXX``),
    encrypted as above (``storeBackupCodes: "encrypted"``, the default) or stored as that JSON itself
    (``storeBackupCodes: "plain"``). Using a code rewrites the column without it (freshly encrypted).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias
from urllib.parse import quote

import pyotp
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt, crypto_aead_xchacha20poly1305_ietf_encrypt
from nacl.exceptions import CryptoError

__all__ = [
    "BACKUP_CODE_COUNT",
    "BACKUP_CODE_LENGTH",
    "BASE32_PREFIX",
    "DEFAULT_DIGITS",
    "DEFAULT_PERIOD",
    "DEFAULT_WINDOW",
    "TOTP_SECRET_LENGTH",
    "BackupCodeStorage",
    "Secret",
    "SecretKeyring",
    "consume_backup_code",
    "decode_backup_codes",
    "decrypt",
    "encode_backup_codes",
    "encrypt",
    "new_backup_codes",
    "new_totp_secret",
    "otpauth_uri",
    "totp_code",
    "totp_key",
    "verify_totp",
]

NONCE_BYTES: Final = 24
TAG_BYTES: Final = 16
ENVELOPE_PREFIX: Final = "$ba$"
# Better Auth's built-in fallback secret; never used as the legacy key of a key set.
_DEFAULT_BETTER_AUTH_SECRET: Final = "better-auth-secret-12345678901234567890"  # noqa: S105 - a public default

TOTP_SECRET_LENGTH: Final = 32
DEFAULT_DIGITS: Final = 6
DEFAULT_PERIOD: Final = 30
DEFAULT_WINDOW: Final = 1
BASE32_PREFIX: Final = "base32:"
BACKUP_CODE_COUNT: Final = 10
BACKUP_CODE_LENGTH: Final = 10

# Better Auth's generateRandomString alphabets, in its order ("a-z", "0-9", "A-Z", "-_").
_TOTP_SECRET_ALPHABET: Final = string.ascii_lowercase + string.digits + string.ascii_uppercase + "-_"
_BACKUP_CODE_ALPHABET: Final = string.ascii_lowercase + string.digits + string.ascii_uppercase
_BASE32_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_HEX: Final = re.compile(r"[0-9a-fA-F]*")
_LEADING_INT: Final = re.compile(r"([+-]?)([0-9]+)")
# What encodeURIComponent leaves alone beyond ASCII letters and digits (quote() always keeps "_.-~").
_URI_COMPONENT_SAFE: Final = "!*'()"
# What URLSearchParams (application/x-www-form-urlencoded) leaves alone.
_FORM_SAFE: Final = frozenset((string.ascii_letters + string.digits + "*-._").encode("ascii"))

BackupCodeStorage: TypeAlias = Literal["encrypted", "plain"]


@dataclass(frozen=True)
class SecretKeyring:
    """Better Auth's rotating key set: ``secrets: [{version, value}, ...]`` or ``BETTER_AUTH_SECRETS``.

    ``keys`` maps each version to its secret; ``current_version`` (the first entry in Better Auth's list) encrypts;
    ``legacy_secret`` (``BETTER_AUTH_SECRET``) still decrypts values written before rotation, as bare hex.
    """

    keys: Mapping[int, str]
    current_version: int
    legacy_secret: str | None = None

    def __post_init__(self) -> None:
        if self.current_version not in self.keys:
            raise ValueError(f"secret version {self.current_version} is not in the key set")
        if any(version < 0 or not value for version, value in self.keys.items()):
            raise ValueError("secret versions must be non-negative and their secrets non-empty")


Secret: TypeAlias = str | SecretKeyring


def encrypt(secret: Secret, plaintext: str) -> str:
    """Better Auth's ``symmetricEncrypt``: hex of nonce || XChaCha20-Poly1305 ciphertext || tag, wrapped as
    ``$ba$<version>$<hex>`` when ``secret`` is a key set. A fresh random nonce each call."""
    if isinstance(secret, str):
        return _encrypt_hex(secret, plaintext)
    hex_text = _encrypt_hex(secret.keys[secret.current_version], plaintext)
    return f"{ENVELOPE_PREFIX}{secret.current_version}${hex_text}"


def decrypt(secret: Secret, stored: str) -> str:
    """Better Auth's ``symmetricDecrypt``. Raises ValueError when ``stored`` is malformed, was altered, or was not
    made with this secret (or, for a key set, names a version it does not hold)."""
    if isinstance(secret, str):
        return _decrypt_hex(secret, stored)
    envelope = _parse_envelope(stored)
    if envelope is not None:
        version, hex_text = envelope
        key = secret.keys.get(version)
        if key is None:
            raise ValueError(f"secret version {version} is not in the key set")
        return _decrypt_hex(key, hex_text)
    legacy = secret.legacy_secret
    if legacy and legacy != _DEFAULT_BETTER_AUTH_SECRET:
        return _decrypt_hex(legacy, stored)
    raise ValueError("a bare-hex value needs the legacy secret, and the key set has none")


def _cipher_key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def _encrypt_hex(secret: str, plaintext: str) -> str:
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext.encode("utf-8"), None, nonce, _cipher_key(secret))
    return (nonce + sealed).hex()


def _decrypt_hex(secret: str, hex_text: str) -> str:
    if len(hex_text) % 2 or not _HEX.fullmatch(hex_text):
        raise ValueError("not an encrypted value: expected an even number of hex digits")
    raw = bytes.fromhex(hex_text)
    if len(raw) < NONCE_BYTES + TAG_BYTES:
        raise ValueError("not an encrypted value: too short")
    try:
        opened = crypto_aead_xchacha20poly1305_ietf_decrypt(
            raw[NONCE_BYTES:], None, raw[:NONCE_BYTES], _cipher_key(secret)
        )
    except CryptoError:
        raise ValueError("the value was altered or was encrypted with another secret") from None
    # As TextDecoder does: a leading BOM is dropped and invalid UTF-8 becomes U+FFFD.
    return opened.decode("utf-8-sig", errors="replace")


def _parse_envelope(stored: str) -> tuple[int, str] | None:
    """``$ba$<version>$<hex>`` as Better Auth's parseEnvelope reads it (the version through ``parseInt``)."""
    if not stored.startswith(ENVELOPE_PREFIX):
        return None
    end = stored.find("$", len(ENVELOPE_PREFIX))
    if end == -1:
        return None
    match = _LEADING_INT.match(stored[len(ENVELOPE_PREFIX) : end].lstrip())
    if match is None:
        return None
    version = int(match.group(2))
    if match.group(1) == "-" and version != 0:
        return None
    return version, stored[end + 1 :]


def new_totp_secret() -> str:
    """A new TOTP secret as Better Auth makes it: 32 characters over ``[a-z0-9A-Z-_]`` (the value to encrypt)."""
    return "".join(secrets.choice(_TOTP_SECRET_ALPHABET) for _ in range(TOTP_SECRET_LENGTH))


def totp_key(secret: str) -> bytes:
    """The HMAC key of a decrypted ``twoFactor.secret``: its UTF-8 bytes, or for ``base32:<BASE32>`` (an imported
    secret) the decoded bytes. Raises ValueError on a malformed base32 value."""
    if secret.startswith(BASE32_PREFIX):
        return _base32_decode(secret[len(BASE32_PREFIX) :].upper())
    return secret.encode("utf-8")


def _base32_decode(text: str) -> bytes:
    """RFC 4648 base32 read as Better Auth reads it: stops at the first "=", ignores trailing partial bits."""
    out = bytearray()
    buffer = 0
    bits = 0
    for char in text:
        if char == "=":
            break
        value = _BASE32_ALPHABET.find(char)
        if value < 0:
            raise ValueError(f"invalid base32 character {char!r}")
        buffer = (buffer << 5) | value
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((buffer >> bits) & 0xFF)
            buffer &= (1 << bits) - 1
    return bytes(out)


def otpauth_uri(
    secret: str, issuer: str, account: str, *, digits: int = DEFAULT_DIGITS, period: int = DEFAULT_PERIOD
) -> str:
    """The ``otpauth://totp/...`` URI Better Auth returns as ``totpURI``, for a decrypted ``twoFactor.secret``.

    Better Auth passes the ``issuer`` request field, else the plugin's ``issuer`` option, else ``appName``; and
    the user's email as ``account``. No ``algorithm`` parameter (authenticator apps assume SHA1)."""
    label = f"{quote(issuer, safe=_URI_COMPONENT_SAFE)}:{quote(account, safe=_URI_COMPONENT_SAFE)}"
    encoded_secret = base64.b32encode(totp_key(secret)).decode("ascii").rstrip("=")
    query = f"secret={encoded_secret}&issuer={_form_encode(issuer)}&digits={digits}&period={period}"
    return f"otpauth://totp/{label}?{query}"


def _form_encode(text: str) -> str:
    return "".join(
        chr(byte) if byte in _FORM_SAFE else "+" if byte == 0x20 else f"%{byte:02X}" for byte in text.encode("utf-8")
    )


class _StoredTotp(pyotp.TOTP):
    """pyotp's TOTP for secrets already stored: our own are 256 bits, but a secret imported into Better Auth
    (``base32:...``) may be shorter than pyotp's NIST minimum for new secrets, and Better Auth accepts it."""

    min_secret_length_bits = 8


def _totp(secret: str, digits: int, period: int) -> pyotp.TOTP:
    """pyotp's TOTP over the secret's HMAC key (pyotp takes the key as base32)."""
    if not 1 <= digits <= 8:
        raise ValueError("digits must be between 1 and 8")
    if period <= 0:
        raise ValueError("period must be positive")
    return _StoredTotp(base64.b32encode(totp_key(secret)).decode("ascii"), digits=digits, interval=period)


def totp_code(secret: str, at: float, *, digits: int = DEFAULT_DIGITS, period: int = DEFAULT_PERIOD) -> str:
    """The TOTP code (HMAC-SHA1, RFC 6238, by pyotp) at unix time ``at`` (seconds) for a decrypted
    ``twoFactor.secret``."""
    return _totp(secret, digits, period).at(math.floor(at))


def verify_totp(
    secret: str,
    code: str,
    at: float,
    window: int = DEFAULT_WINDOW,
    *,
    digits: int = DEFAULT_DIGITS,
    period: int = DEFAULT_PERIOD,
) -> bool:
    """Whether ``code`` is the TOTP of any step from ``-window`` to ``+window`` around ``at``, as Better Auth's
    verify-totp decides: exactly ``digits`` ASCII digits (pyotp alone would NFKC-normalise full-width digits),
    compared in constant time by pyotp."""
    if len(code) != digits or not code.isascii() or not code.isdigit():
        return False
    return bool(_totp(secret, digits, period).verify(code, for_time=math.floor(at), valid_window=window))


def new_backup_codes(count: int = BACKUP_CODE_COUNT, length: int = BACKUP_CODE_LENGTH) -> list[str]:
    """New backup codes as Better Auth makes them: ``length`` characters over ``[a-z0-9A-Z]``, with "-" after the
    fifth (``XXXXX-XXXXX`` by default; a code of five or fewer characters still ends in "-")."""
    if count < 0 or length <= 0:
        raise ValueError("count must be non-negative and length positive")
    codes = ["".join(secrets.choice(_BACKUP_CODE_ALPHABET) for _ in range(length)) for _ in range(count)]
    return [f"{code[:5]}-{code[5:]}" for code in codes]


def encode_backup_codes(secret: Secret, codes: Sequence[str], storage: BackupCodeStorage = "encrypted") -> str:
    """The ``twoFactor.backupCodes`` value: ``JSON.stringify(codes)``, encrypted unless ``storage`` is "plain"."""
    text = json.dumps(list(codes), ensure_ascii=False, separators=(",", ":"))
    return encrypt(secret, text) if storage == "encrypted" else text


def decode_backup_codes(secret: Secret, stored: str, storage: BackupCodeStorage = "encrypted") -> list[str]:
    """The codes in a ``twoFactor.backupCodes`` value. Raises ValueError when it does not decrypt or is not a
    JSON array of strings (Better Auth then rejects every code)."""
    text = decrypt(secret, stored) if storage == "encrypted" else stored
    try:
        codes: object = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("backup codes are not JSON") from None
    if not isinstance(codes, list) or not all(isinstance(code, str) for code in codes):
        raise ValueError("backup codes are not a JSON array of strings")
    return [str(code) for code in codes]


def consume_backup_code(secret: Secret, stored: str, code: str, storage: BackupCodeStorage = "encrypted") -> str | None:
    """The ``twoFactor.backupCodes`` value to write after using ``code`` (every copy of it removed), or None when
    ``code`` is not one of them. Better Auth writes it as a compare-and-set on the old value, so two requests
    cannot spend the same code. Raises ValueError when ``stored`` cannot be read."""
    codes = decode_backup_codes(secret, stored, storage)
    given = code.encode("utf-8")
    hits = [hmac.compare_digest(given, candidate.encode("utf-8")) for candidate in codes]
    if not any(hits):
        return None
    return encode_backup_codes(secret, [c for c, hit in zip(codes, hits, strict=True) if not hit], storage)
