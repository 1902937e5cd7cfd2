"""Verification, reset, email change and profile flows over both backends (delivery recorded at its boundary)."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta

import pytest
import sqlalchemy as sa

from authsidecar import errors
from authsidecar.delivery import Message
from authsidecar.services.accounts import AccountService, VerificationPolicy
from authsidecar.services.cleanup import remove_expired
from authsidecar.services.sessions import ClientInfo
from authsidecar.services.verification import VerificationTokens
from tests.integration.conftest import Backend

PASSWORD = "correct horse battery"
NEW_PASSWORD = "tr0ub4dor & 3"
CLIENT = ClientInfo(ip_address="198.51.100.1", user_agent="flows")


def new_email() -> str:
    return f"flow-{secrets.token_hex(6)}@example.com"


async def count(backend: Backend, table: str) -> int:
    tbl: sa.Table = getattr(backend.db.schema, table)
    async with backend.db.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(tbl))).scalar_one())


async def messages_to(backend: Backend, email: str) -> list[Message]:
    return [m for m in await backend.delivered() if m.to == email]


async def test_email_verification_round_trip(backend: Backend) -> None:
    email = new_email()
    up = await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    assert up.token is not None
    await backend.flows.send_verification_email(email.upper())
    [message] = await messages_to(backend, email)
    assert message.purpose == "verify-email"
    assert message.token in message.url
    verified = await backend.flows.verify_email(message.token, CLIENT)
    assert verified.user.email_verified is True
    assert verified.session is None
    assert (await backend.sessions.validate(up.token)).user.email_verified is True  # cached snapshot refreshed
    with pytest.raises(errors.InvalidToken):
        await backend.flows.verify_email(message.token, CLIENT)  # single use
    await backend.flows.send_verification_email(email)  # already verified: nothing is sent
    assert len(await messages_to(backend, email)) == 1


async def test_unknown_address_gets_no_message_and_the_same_answer(backend: Backend) -> None:
    email = new_email()
    assert await backend.flows.send_verification_email(email) is None
    assert await backend.flows.request_password_reset(email) is None
    assert await messages_to(backend, email) == []


async def test_only_a_digest_of_the_token_is_stored(backend: Backend) -> None:
    email = new_email()
    await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    await backend.flows.request_password_reset(email)
    [message] = await messages_to(backend, email)
    v = backend.db.schema.verification
    async with backend.db.engine.connect() as conn:
        rows = (await conn.execute(sa.select(v.c.identifier, v.c.value))).all()
    assert all(message.token not in row.identifier and message.token not in row.value for row in rows)


async def test_expired_token_is_token_expired_without_side_effects(backend: Backend) -> None:
    email = new_email()
    await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    await backend.flows.request_password_reset(email)
    [message] = await messages_to(backend, email)
    backend.clock.now += timedelta(hours=1, seconds=1)
    for _ in range(2):
        with pytest.raises(errors.TokenExpired):
            await backend.flows.reset_password(message.token, NEW_PASSWORD)
    await backend.accounts.sign_in(email, PASSWORD, CLIENT)  # the old password still works


async def test_a_token_of_another_purpose_is_invalid(backend: Backend) -> None:
    email = new_email()
    await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    await backend.flows.send_verification_email(email)
    [message] = await messages_to(backend, email)
    with pytest.raises(errors.InvalidToken):
        await backend.flows.reset_password(message.token, NEW_PASSWORD)
    with pytest.raises(errors.InvalidToken):
        await backend.flows.verify_email("not-a-token", CLIENT)
    assert (await backend.flows.verify_email(message.token, CLIENT)).user.email_verified  # still usable


async def test_password_reset_consumes_once_and_revokes_sessions(backend: Backend) -> None:
    email = new_email()
    up = await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    other = await backend.accounts.sign_in(email, PASSWORD, CLIENT)
    assert up.token is not None
    assert other.token is not None
    await backend.flows.request_password_reset(email)
    [message] = await messages_to(backend, email)
    results = await asyncio.gather(
        *(backend.flows.reset_password(message.token, NEW_PASSWORD) for _ in range(5)), return_exceptions=True
    )
    assert results.count(None) == 1
    assert all(isinstance(r, errors.InvalidToken) for r in results if r is not None)
    for token in (up.token, other.token):
        with pytest.raises(errors.InvalidToken):
            await backend.sessions.validate(token)
    with pytest.raises(errors.InvalidCredentials):
        await backend.accounts.sign_in(email, PASSWORD, CLIENT)
    await backend.accounts.sign_in(email, NEW_PASSWORD, CLIENT)


async def test_change_email_applies_when_verified(backend: Backend) -> None:
    email, new = new_email(), new_email()
    up = await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    assert up.token is not None
    await backend.flows.change_email(up.token, new.upper())
    [message] = await messages_to(backend, new)
    assert message.purpose == "change-email"
    assert (await backend.sessions.validate(up.token)).user.email == email  # not yet
    changed = await backend.flows.verify_email(message.token, CLIENT)
    assert changed.user.email == new
    assert changed.user.email_verified is True
    assert (await backend.sessions.validate(up.token)).user.email == new
    await backend.accounts.sign_in(new, PASSWORD, CLIENT)
    with pytest.raises(errors.InvalidCredentials):
        await backend.accounts.sign_in(email, PASSWORD, CLIENT)


async def test_change_email_to_a_taken_address(backend: Backend) -> None:
    alice, bob, target = new_email(), new_email(), new_email()
    a = await backend.accounts.sign_up(alice, PASSWORD, "Alice", None, CLIENT)
    assert a.token is not None
    await backend.accounts.sign_up(bob, PASSWORD, "Bob", None, CLIENT)
    with pytest.raises(errors.UserAlreadyExists):
        await backend.flows.change_email(a.token, bob)
    await backend.flows.change_email(a.token, target)
    [message] = await messages_to(backend, target)
    await backend.accounts.sign_up(target, PASSWORD, "Squatter", None, CLIENT)  # taken before verification
    with pytest.raises(errors.UserAlreadyExists):
        await backend.flows.verify_email(message.token, CLIENT)
    assert (await backend.sessions.validate(a.token)).user.email == alice


async def test_sensitive_operations_need_a_fresh_session(backend: Backend) -> None:
    email = new_email()
    up = await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    assert up.token is not None
    backend.clock.now += timedelta(days=1, minutes=1)
    with pytest.raises(errors.SessionNotFresh):
        await backend.flows.change_email(up.token, new_email())
    with pytest.raises(errors.SessionNotFresh):
        await backend.profile.delete_user(up.token, "")
    await backend.profile.delete_user(up.token, PASSWORD)  # the password stands in for freshness
    with pytest.raises(errors.InvalidToken):
        await backend.sessions.validate(up.token)


async def test_change_password(backend: Backend) -> None:
    email = new_email()
    up = await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    other = await backend.accounts.sign_in(email, PASSWORD, CLIENT)
    assert up.token is not None
    assert other.token is not None
    with pytest.raises(errors.InvalidPassword):
        await backend.profile.change_password(up.token, "wrong password", NEW_PASSWORD, False, CLIENT)
    with pytest.raises(errors.PasswordTooShort):
        await backend.profile.change_password(up.token, PASSWORD, "short", False, CLIENT)
    kept = await backend.profile.change_password(up.token, PASSWORD, NEW_PASSWORD, False, CLIENT)
    assert kept.token is None
    await backend.sessions.validate(other.token)
    replaced = await backend.profile.change_password(up.token, NEW_PASSWORD, PASSWORD, True, CLIENT)
    assert replaced.token is not None
    for token in (up.token, other.token):
        with pytest.raises(errors.InvalidToken):
            await backend.sessions.validate(token)
    assert (await backend.sessions.validate(replaced.token)).user.email == email


async def test_update_user_refreshes_cached_sessions(backend: Backend) -> None:
    up = await backend.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT)
    assert up.token is not None
    await backend.sessions.validate(up.token)  # cached
    updated = await backend.profile.update_user(up.token, {"name": "Ada Lovelace", "image": "https://e.x/a.png"})
    assert updated.name == "Ada Lovelace"
    seen = await backend.sessions.validate(up.token)
    assert (seen.user.name, seen.user.image) == ("Ada Lovelace", "https://e.x/a.png")
    cleared = await backend.profile.update_user(up.token, {"image": None})
    assert cleared.image is None
    with pytest.raises(errors.MissingField):
        await backend.profile.update_user(up.token, {"name": " "})


async def test_delete_user_removes_everything(backend: Backend) -> None:
    email = new_email()
    up = await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    assert up.token is not None
    await backend.flows.request_password_reset(email)
    [message] = await messages_to(backend, email)
    with pytest.raises(errors.InvalidPassword):
        await backend.profile.delete_user(up.token, "wrong password")
    await backend.profile.delete_user(up.token, "")  # fresh session
    with pytest.raises(errors.InvalidToken):
        await backend.sessions.validate(up.token)
    async with backend.db.transaction() as tx:
        assert not await tx.verification_exists(VerificationTokens().identifier("reset-password", message.token))
    with pytest.raises(errors.InvalidToken):
        await backend.flows.reset_password(message.token, NEW_PASSWORD)  # its verification went too
    with pytest.raises(errors.InvalidCredentials):
        await backend.accounts.sign_in(email, PASSWORD, CLIENT)


async def test_required_verification_blocks_sign_in_and_resends(backend: Backend, hasher: object) -> None:
    email = new_email()
    strict = AccountService(
        backend.db,
        backend.accounts._hasher,
        backend.sessions,
        backend.accounts._rules,
        clock=backend.clock,
        verification=VerificationPolicy(required=True, send_on_sign_in=True, send=backend.flows.send_verification),
    )
    up = await strict.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    assert up.session is None  # no session before verification
    with pytest.raises(errors.EmailNotVerified):
        await strict.sign_in(email, PASSWORD, CLIENT)
    [message] = await messages_to(backend, email)
    await backend.flows.verify_email(message.token, CLIENT)
    assert (await strict.sign_in(email, PASSWORD, CLIENT)).token


async def test_cleanup_removes_only_expired_rows(backend: Backend) -> None:
    await remove_expired(backend.db, clock=backend.clock)  # start from no expired rows
    email = new_email()
    short = await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT, remember_me=False)
    await backend.flows.request_password_reset(email)
    await backend.delivered()
    sessions_before, verifications_before = await count(backend, "session"), await count(backend, "verification")
    backend.clock.now += timedelta(hours=2)  # the reset token (1 h) expired, the 1-day session did not
    removed = await remove_expired(backend.db, batch_size=1, clock=backend.clock)
    assert removed["verification"] >= 1
    assert await count(backend, "verification") == verifications_before - removed["verification"]
    assert await count(backend, "session") == sessions_before
    backend.clock.now += timedelta(days=1)
    removed = await remove_expired(backend.db, batch_size=2, clock=backend.clock)
    assert removed["session"] >= 1
    assert short.session is not None
    s = backend.db.schema.session
    async with backend.db.engine.connect() as conn:
        left = (await conn.execute(sa.select(s.c.id).where(s.c.id == short.session.id))).first()
    assert left is None


async def test_a_refill_racing_a_profile_change_cannot_restore_the_old_snapshot(backend: Backend) -> None:
    up = await backend.accounts.sign_up(new_email(), PASSWORD, "Old Name", None, CLIENT)
    assert up.token is not None
    stored = backend.tokens.stored(up.token)
    stale = await backend.db.find_session(stored)  # a validation read the row...
    assert stale is not None
    backend.clock.now += timedelta(seconds=1)
    await backend.profile.update_user(up.token, {"name": "New Name"})  # ...the profile changed...
    key = backend.tokens.cache_key(stored)
    await backend.cache.put(key, stale, 3600)  # ...and the validation now refills the cache with the old row.
    cached = await backend.cache.get(key)
    assert cached is not None and cached.user.name == "Old Name"
    assert not backend.coherence.trusted(cached)  # the user's newer version is known: the copy is not trusted
    assert (await backend.sessions.validate(up.token)).user.name == "New Name"
