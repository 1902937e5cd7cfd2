"""Better Auth's formats, checked against values the real better-auth 1.7.25 produced: signed cookie values,
email-verification JWTs, scrypt hashes; and the profile's settings."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import unquote

import pytest

from authsidecar.config import ConfigError, load_settings
from authsidecar.security.cookies import SessionCookies
from authsidecar.security.jwt import JwtError, JwtExpired, sign_hs256, verify_hs256
from authsidecar.security.passwords import Argon2Parameters, PasswordHasher, scheme_of
from authsidecar.security.tokens import PlainTokenPolicy
from tests.better_auth.harness import SCRYPT_HASH

# Produced by better-auth 1.7.25 (sign-up with this secret and password).
SECRET = "0123456789abcdef0123456789abcdef-x"
TOKEN = "wX6HQZrpfwrfhv7F9zaMDwxPjMpKR3Ib"
COOKIE = "wX6HQZrpfwrfhv7F9zaMDwxPjMpKR3Ib.lQXiuFVURqwegPYPdCib%2FEHZcdaW6t88LZqtDxnnZ9k%3D"
FAST = Argon2Parameters(time_cost=1, memory_kib=8192)


def test_cookie_value_is_better_auths() -> None:
    cookies = SessionCookies(SECRET)
    assert cookies.sign(TOKEN) == COOKIE
    assert cookies.unsign(COOKIE) == TOKEN
    assert cookies.unsign(unquote(COOKIE)) == TOKEN


@pytest.mark.parametrize(
    "value",
    [
        COOKIE.replace("lQX", "lQY"),  # altered signature
        COOKIE.replace("wX6", "wX7"),  # altered token
        TOKEN,  # no signature
        f"{TOKEN}.",  # empty signature
        f"{TOKEN}.{'A' * 44}",  # no padding: not a 32-byte base64
        f"{TOKEN}.{'*' * 43}=",  # not base64
        "%",  # lone escape
        "." + unquote(COOKIE).rpartition(".")[2],  # no token
    ],
)
def test_cookie_value_refused(value: str) -> None:
    assert SessionCookies(SECRET).unsign(value) is None


def test_cookie_signed_with_another_secret_is_refused() -> None:
    assert SessionCookies("another-secret-of-enough-length-000").unsign(COOKIE) is None


def test_cookie_header_parsing() -> None:
    cookies = SessionCookies(SECRET, prefix="my-app")
    assert cookies.from_header(f"a=1; my-app.session_token={COOKIE}; b=2") == COOKIE
    header = f"my-app.session_token=plain; __Secure-my-app.session_token={COOKIE}"
    assert cookies.from_header(header) == COOKIE  # only an https origin can set the __Secure- one
    assert cookies.from_header("better-auth.session_token=x") is None
    assert cookies.from_header("") is None
    assert cookies.from_header(f'my-app.session_token="{COOKIE}"') == COOKIE
    plain_only = SessionCookies(SECRET, prefix="my-app", secure=False)
    assert plain_only.from_header(header) == "plain"  # the one name the app reads over http
    assert SessionCookies(SECRET, prefix="my-app", secure=True).from_header("my-app.session_token=x") is None


def test_jwt_round_trip_and_refusals() -> None:
    now = time.time()
    token = sign_hs256({"email": "a@example.com", "userId": "u1", "iat": int(now), "exp": int(now) + 60}, SECRET)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "HS256"}
    assert verify_hs256(token, SECRET, now)["userId"] == "u1"
    with pytest.raises(JwtExpired):
        verify_hs256(token, SECRET, now + 61)
    with pytest.raises(JwtError):
        verify_hs256(token, SECRET + "x", now)
    body = token.split(".")[1]
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    forgeries = [f"{none_alg}.{body}.", f"{none_alg}.{body}.{token.split('.')[2]}", "a.b", "x.y.z", ""]
    forgeries += [token + "$$", token + "=", token + "A"]  # altered copies must not verify either
    for forged in forgeries:
        with pytest.raises(JwtError):
            verify_hs256(forged, SECRET, now)


def test_plain_tokens_look_like_better_auths() -> None:
    tokens = PlainTokenPolicy()
    token = tokens.generate()
    assert len(token) == 32 and token.isascii() and token.isalnum()
    assert tokens.stored(token) == tokens.cache_key(token) == token


async def test_scrypt_hash_from_better_auth_verifies_and_is_upgraded_to_argon2() -> None:
    hasher = PasswordHasher(FAST, workers=1, max_pending=4)
    try:
        assert scheme_of(SCRYPT_HASH) == "scrypt"
        assert await hasher.verify(SCRYPT_HASH, "password123")
        assert not await hasher.verify(SCRYPT_HASH, "password124")
        assert hasher.needs_rehash(SCRYPT_HASH)  # argon2id is the write scheme
        assert not await hasher.verify(SCRYPT_HASH[:-1] + "0", "password123")
    finally:
        hasher.close()


async def test_scrypt_write_scheme() -> None:
    hasher = PasswordHasher(FAST, workers=1, max_pending=4, write_scheme="scrypt")
    argon = PasswordHasher(FAST, workers=1, max_pending=4)
    try:
        encoded = await hasher.hash("\uff50assword")  # fullwidth p: NFKC makes it "password"
        assert scheme_of(encoded) == "scrypt" and not hasher.needs_rehash(encoded)
        assert await hasher.verify(encoded, "password")
        argon_hash = await argon.hash("password")
        assert hasher.needs_rehash(argon_hash) and await hasher.verify(argon_hash, "password")
        assert not await hasher.verify("not-a-hash", "password")
    finally:
        hasher.close()
        argon.close()


async def test_mixed_schemes_take_the_same_time() -> None:
    """Once both schemes are in use, a verify of the faster one (argon2id at test cost), and the dummy verify for
    an unknown email, wait until the slower one's typical time has passed; with one scheme nobody waits."""
    hasher = PasswordHasher(FAST, workers=1, max_pending=4)
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    hasher.sleep = record
    try:
        argon_hash = await hasher.hash("password")
        await hasher.verify(argon_hash, "password")
        await hasher.verify_dummy("password")
        assert waits == []  # one scheme: no padding
        await hasher.verify(SCRYPT_HASH, "password123")
        await hasher.verify(argon_hash, "password")
        await hasher.verify_dummy("password")
        assert len(waits) == 2 and all(w > 0 for w in waits), waits
    finally:
        hasher.close()


def test_profile_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSIDECAR_COMPAT", "better-auth")
    with pytest.raises(ConfigError, match="BETTER_AUTH_SECRET"):
        load_settings().better_auth_current_secret()
    monkeypatch.setenv("BETTER_AUTH_SECRET", "legacy")
    settings = load_settings()
    assert settings.better_auth_current_secret() == "legacy"
    assert settings.effective_password_hash == "scrypt"
    assert settings.effective_redis_key_prefix == "better-auth:"
    monkeypatch.setenv("BETTER_AUTH_SECRETS", "2:current-one, 1:older-one")
    assert load_settings().better_auth_current_secret() == "current-one"
    for malformed in ("current-one", "2:current-one, older-one"):  # every entry must be "<version>:<secret>"
        monkeypatch.setenv("BETTER_AUTH_SECRETS", malformed)
        with pytest.raises(ConfigError, match="BETTER_AUTH_SECRETS"):
            load_settings().better_auth_current_secret()
    monkeypatch.setenv("BETTER_AUTH_SECRETS", "")  # empty counts as unset, as in Better Auth
    monkeypatch.setenv("BETTER_AUTH_SECRET", "")
    monkeypatch.setenv("AUTH_SECRET", "from-auth-secret")
    assert load_settings().better_auth_current_secret() == "from-auth-secret"
    monkeypatch.setenv("AUTHSIDECAR_PASSWORD_HASH", "argon2id")
    monkeypatch.setenv("AUTHSIDECAR_REDIS_KEY_PREFIX", "app:")
    settings = load_settings()
    assert settings.effective_password_hash == "argon2id" and settings.effective_redis_key_prefix == "app:"
