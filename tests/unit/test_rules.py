"""Input rules: email normalisation and the password length policy."""

from __future__ import annotations

import random
import unicodedata

import pytest

from authsidecar.errors import InvalidEmail, MissingField, PasswordTooLong, PasswordTooShort
from authsidecar.services import rules
from authsidecar.services.rules import MAX_EMAIL_LENGTH, CredentialRules, normalize_email
from authsidecar.transport.grpc.fields import has_invisible


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice@example.com", "alice@example.com"),
        ("  Alice@Example.COM \t\n", "alice@example.com"),
        ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
        ("a@b.co", "a@b.co"),
    ],
)
def test_normalize_email_trims_and_lowercases(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "\t\n"])
def test_normalize_email_empty_is_missing_field(raw: str) -> None:
    with pytest.raises(MissingField) as info:
        normalize_email(raw, field="new_email")
    assert info.value.reason == "MISSING_FIELD"
    assert [v.field for v in info.value.violations] == ["new_email"]


@pytest.mark.parametrize(
    "raw",
    [
        "plainaddress",
        "@example.com",
        "alice@",
        "alice@example",  # no dot in the domain
        "alice@@example.com",
        "al@ice@example.com",
        "alice smith@example.com",  # inner space
        "alice@exa mple.com",
        "alice@example..com",  # '..' in the domain
        "alice@sub..example.com",
        "alice@example.",  # nothing after the last dot
        "alice@example.com\x00",  # NUL
        "ali\x00ce@example.com",
        "ali\x07ce@example.com",  # BEL
        "alice@exam\x1bple.com",  # ESC
        "alice@example.c\x7fom",  # DEL
    ],
)
def test_normalize_email_rejects_malformed_addresses(raw: str) -> None:
    with pytest.raises(InvalidEmail) as info:
        normalize_email(raw)
    assert info.value.reason == "INVALID_EMAIL"
    assert [v.field for v in info.value.violations] == ["email"]


def _email_of_length(length: int) -> str:
    """The longest local part RFC 5321 allows (64), and a domain of valid labels making up the rest."""
    rest = length - 65 - 2 * 64  # two labels of 63 and their dots
    return "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * rest


def test_normalize_email_length_limit() -> None:
    longest = _email_of_length(MAX_EMAIL_LENGTH)
    assert MAX_EMAIL_LENGTH == 254
    assert normalize_email(longest) == longest
    with pytest.raises(InvalidEmail):
        normalize_email(_email_of_length(MAX_EMAIL_LENGTH + 1))


def test_normalize_email_length_is_checked_after_trimming() -> None:
    longest = _email_of_length(MAX_EMAIL_LENGTH)
    assert normalize_email(f"  {longest}  ") == longest


def test_normalize_email_is_not_missing_field_for_invalid_input() -> None:
    # InvalidEmail and MissingField are siblings: a malformed address must not be reported as missing.
    with pytest.raises(InvalidEmail) as info:
        normalize_email("nope")
    assert not isinstance(info.value, MissingField)


class TestCredentialRules:
    rules = CredentialRules(min_password_length=8, max_password_length=12)

    @pytest.mark.parametrize("password", ["a" * 8, "a" * 10, "a" * 12, "pässwörd"])
    def test_within_bounds(self, password: str) -> None:
        self.rules.check_password(password)

    def test_empty_is_missing(self) -> None:
        with pytest.raises(MissingField) as info:
            self.rules.check_password("", field="new_password")
        assert [v.field for v in info.value.violations] == ["new_password"]

    def test_one_below_minimum(self) -> None:
        with pytest.raises(PasswordTooShort) as info:
            self.rules.check_password("a" * 7)
        assert info.value.reason == "PASSWORD_TOO_SHORT"
        assert info.value.violations[0].field == "password"
        assert "8" in info.value.violations[0].description

    def test_one_above_maximum(self) -> None:
        with pytest.raises(PasswordTooLong) as info:
            self.rules.check_password("a" * 13)
        assert info.value.reason == "PASSWORD_TOO_LONG"
        assert "12" in info.value.violations[0].description

    def test_length_counts_characters_not_bytes(self) -> None:
        # 12 characters, 24 bytes in UTF-8.
        self.rules.check_password("é" * 12)

    def test_defaults(self) -> None:
        rules = CredentialRules()
        rules.check_password("a" * 8)
        rules.check_password("a" * 128)
        with pytest.raises(PasswordTooShort):
            rules.check_password("a" * 7)
        with pytest.raises(PasswordTooLong):
            rules.check_password("a" * 129)


def test_plain_ascii_domains_skip_idna_with_the_same_result() -> None:
    # The fast path for plain lower-case ASCII host names must answer exactly what the IDNA processing answers,
    # for the odd ones too (hyphens, digits, empty labels, lengths at the limits, xn-- labels).
    rng = random.Random(7)
    samples = ["example.com", "a" * 63 + ".com", "a" * 64 + ".com", "xn--bcher-kva.example", "ab--cd.com", "1.2"]
    samples += ["example.c0m", "-ex.com", "ex-.com", "example.com.", ".com", "a.b", ("a" * 62 + ".") * 4 + "com"]
    samples += ["".join(rng.choice("abz09-.") for _ in range(rng.randint(1, 14))) for _ in range(50_000)]
    for host in samples:
        assert rules._domain(host) == rules._idna_domain(host), host


def test_the_ascii_shortcut_of_the_invisible_character_check_agrees_with_the_full_one() -> None:
    samples = [chr(i) for i in range(128)] + ["Mozilla/5.0 (X11; Linux x86_64)", "a\tb", "x\x7f", "ok", "é\u200b"]
    samples += ["".join(random.Random(i).choice([chr(c) for c in range(128)]) for _ in range(20)) for i in range(300)]
    for value in samples:
        full = any(unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"} for c in value)
        assert has_invisible(value) == full, repr(value)
