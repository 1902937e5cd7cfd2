"""Tokens, identifiers, password hashing (cheap argon2 parameters) and the session refresh rule."""

from __future__ import annotations

import asyncio
import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import argon2
import pytest

from authsidecar.domain.models import Session
from authsidecar.errors import TooManyRequests
from authsidecar.security.ids import ID_ALPHABET, generate_id
from authsidecar.security.passwords import Argon2Parameters, PasswordHasher, normalize_password
from authsidecar.security.tokens import MAX_TOKEN_LENGTH, HashedTokenPolicy
from authsidecar.services.sessions import SessionPolicy

FAST = Argon2Parameters(time_cost=1, memory_kib=8192, parallelism=1)
URLSAFE = re.compile(r"[A-Za-z0-9_-]+")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# ---------------------------------------------------------------------------------------------------- tokens / ids


class TestHashedTokenPolicy:
    policy = HashedTokenPolicy()

    def test_token_shape(self) -> None:
        token = self.policy.generate()
        assert len(token) >= 43
        assert len(token) <= MAX_TOKEN_LENGTH
        assert URLSAFE.fullmatch(token)

    def test_more_entropy_longer_token(self) -> None:
        assert len(HashedTokenPolicy(entropy_bytes=48).generate()) >= 64

    @pytest.mark.parametrize("entropy", [0, 16, 31])
    def test_refuses_weak_tokens(self, entropy: int) -> None:
        with pytest.raises(ValueError, match="256 bits"):
            HashedTokenPolicy(entropy_bytes=entropy)

    def test_tokens_are_unique(self) -> None:
        tokens = {self.policy.generate() for _ in range(2000)}
        assert len(tokens) == 2000

    def test_stored_is_sha256_hex(self) -> None:
        token = self.policy.generate()
        stored = self.policy.stored(token)
        assert SHA256_HEX.fullmatch(stored)
        assert stored == hashlib.sha256(token.encode()).hexdigest()
        assert token not in stored

    def test_stored_is_deterministic_and_distinct(self) -> None:
        a, b = self.policy.generate(), self.policy.generate()
        assert self.policy.stored(a) == self.policy.stored(a)
        assert self.policy.stored(a) != self.policy.stored(b)

    def test_known_digest(self) -> None:
        assert self.policy.stored("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

    def test_cache_key(self) -> None:
        stored = self.policy.stored(self.policy.generate())
        assert self.policy.cache_key(stored) == f"session:{stored}"


class TestGenerateId:
    def test_shape(self) -> None:
        for _ in range(200):
            value = generate_id()
            assert len(value) == 32
            assert re.fullmatch(r"[A-Za-z0-9]{32}", value)

    def test_alphabet(self) -> None:
        assert sorted(ID_ALPHABET) == sorted(set(ID_ALPHABET))
        assert len(ID_ALPHABET) == 62

    def test_custom_length(self) -> None:
        assert len(generate_id(8)) == 8

    def test_unique_and_uses_the_whole_alphabet(self) -> None:
        values = [generate_id() for _ in range(500)]
        assert len(set(values)) == len(values)
        assert set("".join(values)) == set(ID_ALPHABET)  # 16,000 draws cover 62 symbols

    def test_unbiased(self) -> None:
        # 256 random byte values do not split evenly over 62 symbols: mapped naively (b % 62) the first 8 symbols
        # would come up 25 % more often than the rest. 64,000 draws: ~1,032 each, standard deviation ~32.
        counts = Counter("".join(generate_id() for _ in range(2000)))
        first, rest = ID_ALPHABET[:8], ID_ALPHABET[8:]
        mean_first = sum(counts[c] for c in first) / len(first)
        mean_rest = sum(counts[c] for c in rest) / len(rest)
        assert abs(mean_first / mean_rest - 1) < 0.08

    def test_longer_than_one_read(self) -> None:
        value = generate_id(1000)
        assert len(value) == 1000 and set(value) <= set(ID_ALPHABET)


# --------------------------------------------------------------------------------------------------------- hashing


@pytest.fixture
def hasher() -> Iterator[PasswordHasher]:
    h = PasswordHasher(FAST, workers=2, max_pending=8)
    yield h
    h.close()


class TestPasswordHasher:
    async def test_hash_and_verify(self, hasher: PasswordHasher) -> None:
        encoded = await hasher.hash("correct horse battery staple")
        assert encoded.startswith("$argon2id$")
        assert "m=8192,t=1,p=1" in encoded
        assert await hasher.verify(encoded, "correct horse battery staple") is True
        assert await hasher.verify(encoded, "correct horse battery stapl") is False
        assert await hasher.verify(encoded, "Correct horse battery staple") is False
        assert hasher.pending == 0

    async def test_salted(self, hasher: PasswordHasher) -> None:
        assert await hasher.hash("same password") != await hasher.hash("same password")

    async def test_verify_none_is_false(self, hasher: PasswordHasher) -> None:
        assert await hasher.verify(None, "anything") is False

    @pytest.mark.parametrize(
        "encoded",
        [
            "",
            "plaintext-password",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
            "$argon2id$v=19$m=8192,t=1,p=1$garbage",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ],
    )
    async def test_verify_non_argon2_is_false(self, hasher: PasswordHasher, encoded: str) -> None:
        assert await hasher.verify(encoded, "plaintext-password") is False

    async def test_verify_dummy_completes_and_frees_its_slot(self, hasher: PasswordHasher) -> None:
        await hasher.verify_dummy("whatever")
        assert hasher.pending == 0

    async def test_needs_rehash(self, hasher: PasswordHasher) -> None:
        current = await hasher.hash("pw")
        assert hasher.needs_rehash(current) is False
        other = PasswordHasher(Argon2Parameters(time_cost=2, memory_kib=8192, parallelism=1), 1, 1)
        try:
            stronger = await other.hash("pw")
            assert hasher.needs_rehash(stronger) is True
            assert other.needs_rehash(current) is True
            assert other.needs_rehash(stronger) is False
        finally:
            other.close()

    def test_needs_rehash_shortcut_agrees_with_argon2(self, hasher: PasswordHasher) -> None:
        # The prefix shortcut must answer what argon2-cffi's parsing answers: other salt or hash lengths, other
        # costs, argon2i, an older version all need a rehash.
        made = {
            (salt_len, hash_len, t, kind): argon2.PasswordHasher(
                time_cost=t, memory_cost=8192, parallelism=1, hash_len=hash_len, salt_len=salt_len, type=kind
            ).hash("pw")
            for salt_len in (16, 17, 15)
            for hash_len in (32, 31, 33)
            for t in (1, 2)
            for kind in (argon2.Type.ID, argon2.Type.I)
        }
        made["v=16"] = made[(16, 32, 1, argon2.Type.ID)].replace("$v=19$", "$v=16$")
        for key, encoded in made.items():
            assert hasher.needs_rehash(encoded) == hasher._hasher.check_needs_rehash(encoded), key
        assert hasher.needs_rehash(made[(16, 32, 1, argon2.Type.ID)]) is False

    @pytest.mark.parametrize(
        "encoded", ["", "plaintext", "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"]
    )
    def test_non_argon2_needs_rehash(self, hasher: PasswordHasher, encoded: str) -> None:
        assert hasher.needs_rehash(encoded) is True

    async def test_nfkc_normalisation(self, hasher: PasswordHasher) -> None:
        composed = "caf\u00e9-passw0rd"
        decomposed = "cafe\u0301-passw0rd"
        assert composed != decomposed
        assert unicodedata.normalize("NFKC", decomposed) == composed
        encoded = await hasher.hash(composed)
        assert await hasher.verify(encoded, decomposed) is True
        encoded = await hasher.hash(decomposed)
        assert await hasher.verify(encoded, composed) is True

    async def test_compatibility_forms_are_folded(self, hasher: PasswordHasher) -> None:
        encoded = await hasher.hash("\uff50\uff41\uff53\uff53")  # fullwidth "pass"
        assert await hasher.verify(encoded, "pass") is True
        assert normalize_password("\ufb01") == "fi"

    async def test_admission_control(self) -> None:
        hasher = PasswordHasher(FAST, workers=1, max_pending=1)
        try:
            results = await asyncio.gather(*(hasher.hash(f"pw{i}") for i in range(4)), return_exceptions=True)
            hashes = [r for r in results if isinstance(r, str)]
            refused = [r for r in results if isinstance(r, TooManyRequests)]
            assert len(hashes) == 1
            assert len(refused) == 3
            assert all(r.retry_after > 0 for r in refused)
            assert all(r.reason == "TOO_MANY_REQUESTS" for r in refused)
            assert hasher.pending == 0
            # Capacity is given back: the next call is admitted.
            assert await hasher.verify(hashes[0], "pw0") is True
        finally:
            hasher.close()

    async def test_admission_bound_counts_verifies_too(self) -> None:
        hasher = PasswordHasher(FAST, workers=1, max_pending=2)
        try:
            encoded = await hasher.hash("pw")
            results = await asyncio.gather(
                hasher.verify(encoded, "pw"),
                hasher.verify(encoded, "nope"),
                hasher.verify(None, "pw"),
                return_exceptions=True,
            )
            assert results[0] is True
            assert results[1] is False
            assert isinstance(results[2], TooManyRequests)
        finally:
            hasher.close()

    async def test_a_held_slot_refuses_others_and_is_reused_by_its_own_hashes(self) -> None:
        hasher = PasswordHasher(FAST, workers=1, max_pending=1)
        try:
            with hasher.admitted():
                assert hasher.pending == 1
                encoded = await hasher.hash("pw")  # runs in the held slot, no second one needed
                assert await hasher.verify(encoded, "pw") is True
                with pytest.raises(TooManyRequests):
                    await asyncio.create_task(hasher.hash("other"))  # another flow (task) finds no slot
            assert hasher.pending == 0
        finally:
            hasher.close()


# ------------------------------------------------------------------------------------------------- refresh policy

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def session(created_at: datetime, expires_at: datetime) -> Session:
    return Session(
        id="s" * 32,
        user_id="u" * 32,
        stored_token="t" * 64,
        expires_at=expires_at,
        created_at=created_at,
        updated_at=created_at,
        ip_address=None,
        user_agent=None,
    )


class TestSessionPolicy:
    policy = SessionPolicy(expires_in=7 * DAY, update_age=DAY, short_expires_in=DAY)

    def test_fresh_session_is_not_refreshed(self) -> None:
        s = session(NOW, NOW + 7 * DAY)
        assert self.policy.needs_refresh(s, NOW) is False
        assert self.policy.needs_refresh(s, NOW + DAY - timedelta(milliseconds=1)) is False

    def test_refresh_once_update_age_has_passed(self) -> None:
        s = session(NOW, NOW + 7 * DAY)
        assert self.policy.needs_refresh(s, NOW + DAY) is True  # boundary: <= now
        assert self.policy.needs_refresh(s, NOW + 3 * DAY) is True

    def test_rule_uses_the_expiry_not_the_creation(self) -> None:
        # Refreshed two days after creation: the clock restarts from the new expiry.
        s = session(NOW, NOW + 2 * DAY + 7 * DAY)
        assert self.policy.needs_refresh(s, NOW + 2 * DAY + timedelta(hours=23)) is False
        assert self.policy.needs_refresh(s, NOW + 3 * DAY) is True

    def test_short_sessions_are_never_refreshed(self) -> None:
        s = session(NOW, NOW + DAY)
        for offset in (timedelta(0), timedelta(hours=12), DAY - timedelta(seconds=1)):
            assert self.policy.needs_refresh(s, NOW + offset) is False

    def test_shorter_than_short_is_never_refreshed(self) -> None:
        s = session(NOW, NOW + timedelta(hours=1))
        assert self.policy.needs_refresh(s, NOW + timedelta(minutes=59)) is False

    def test_just_longer_than_short_is_a_remember_me_session(self) -> None:
        policy = SessionPolicy(expires_in=2 * DAY, update_age=timedelta(hours=1), short_expires_in=DAY)
        s = session(NOW, NOW + DAY + timedelta(seconds=1))
        assert policy.needs_refresh(s, NOW + DAY) is True

    def test_zero_update_age_refreshes_every_time(self) -> None:
        policy = SessionPolicy(expires_in=7 * DAY, update_age=timedelta(0), short_expires_in=DAY)
        s = session(NOW, NOW + 7 * DAY)
        assert policy.needs_refresh(s, NOW) is True

    def test_update_age_beyond_lifetime_never_refreshes(self) -> None:
        policy = SessionPolicy(expires_in=7 * DAY, update_age=8 * DAY, short_expires_in=DAY)
        s = session(NOW, NOW + 7 * DAY)
        assert policy.needs_refresh(s, NOW + 7 * DAY - timedelta(seconds=1)) is False


def sequence_ids(model: str) -> str:
    """A custom generate_id function for the tests below (imported by name, like a user's)."""
    sequence_ids.calls.append(model)  # type: ignore[attr-defined]
    return f"{model}-{len(sequence_ids.calls)}"  # type: ignore[attr-defined]


sequence_ids.calls = []  # type: ignore[attr-defined]


class TestIdGenerators:
    def test_random_ids_are_better_auths_format(self) -> None:
        from authsidecar.security.ids import ID_ALPHABET, id_generator

        made = {id_generator("random")("user") for _ in range(100)}
        assert len(made) == 100 and all(len(i) == 32 and set(i) <= set(ID_ALPHABET) for i in made)

    def test_uuid7_is_version_7_and_time_ordered(self) -> None:
        import time
        import uuid

        from authsidecar.security.ids import uuid7

        first = uuid7()
        time.sleep(0.002)
        second = uuid7()
        assert uuid.UUID(first).version == 7 and uuid.UUID(first).variant == uuid.RFC_4122
        assert first < second

    def test_a_custom_function_is_called_with_the_model_name(self) -> None:
        from authsidecar.security.ids import id_generator

        generate = id_generator("tests.unit.test_security:sequence_ids")
        assert generate("user").startswith("user-") and generate("session").startswith("session-")
        assert sequence_ids.calls[-2:] == ["user", "session"]  # type: ignore[attr-defined]

    def test_unusable_custom_functions_are_refused(self) -> None:
        from authsidecar.security.ids import id_generator

        with pytest.raises(ValueError, match="cannot import"):
            id_generator("tests.unit.nope:f")
        with pytest.raises(ValueError, match="is not callable"):
            id_generator("tests.unit.test_security:__doc__")
        returns_none = id_generator("builtins:print")
        with pytest.raises(TypeError, match="expected a non-empty string"):
            returns_none("user")

    def test_database_ids_are_left_empty_for_the_database(self) -> None:
        from authsidecar.security.ids import id_generator

        assert id_generator("serial")("user") == "" and id_generator("false")("user") == ""
