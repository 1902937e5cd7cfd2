"""Every write that revokes a session or changes a user declares it once: the invalidation log (the durable record
every instance follows) gets an entry in the same commit, and this instance stops trusting cached copies before
the call returns. Both backends."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest

from authsidecar import errors
from authsidecar.domain.models import Invalidations, version_of
from authsidecar.services.sessions import ClientInfo
from tests.integration.conftest import Backend

PASSWORD = "correct horse battery"
NEW_PASSWORD = "tr0ub4dor & 3"
SignedIn = tuple[str, str]  # (email, token)
CLIENT = ClientInfo(ip_address="198.51.100.9", user_agent="coherence")


def new_email() -> str:
    return f"coherence-{secrets.token_hex(6)}@example.com"


async def log_since(backend: Backend, seq: int) -> list[Invalidations]:
    return [inv for _, inv in await backend.db.invalidations_after(seq, 1000)]


async def sign_out(b: Backend, s: SignedIn) -> None:
    await b.sessions.sign_out(s[1])


async def revoke_session(b: Backend, s: SignedIn) -> None:
    current = await b.sessions.validate(s[1])
    await b.sessions.revoke(s[1], current.session.id)


async def revoke_sessions(b: Backend, s: SignedIn) -> None:
    await b.sessions.revoke_all(s[1])


async def revoke_other_sessions(b: Backend, s: SignedIn) -> None:
    other = await b.accounts.sign_in(s[0], PASSWORD, CLIENT)
    assert other.token is not None
    await b.sessions.revoke_others(other.token)


async def reset_password(b: Backend, s: SignedIn) -> None:
    await b.flows.request_password_reset(s[0])
    [message] = [m for m in await b.delivered() if m.to == s[0] and m.purpose == "reset-password"]
    await b.flows.reset_password(message.token, NEW_PASSWORD)


async def change_password(b: Backend, s: SignedIn) -> None:
    other = await b.accounts.sign_in(s[0], PASSWORD, CLIENT)
    assert other.token is not None
    await b.profile.change_password(other.token, PASSWORD, NEW_PASSWORD, True, CLIENT)


async def delete_user(b: Backend, s: SignedIn) -> None:
    await b.profile.delete_user(s[1], PASSWORD)


REVOCATIONS: dict[str, Callable[[Backend, SignedIn], Awaitable[None]]] = {
    "SignOut": sign_out,
    "RevokeSession": revoke_session,
    "RevokeSessions": revoke_sessions,
    "RevokeOtherSessions": revoke_other_sessions,
    "ResetPassword": reset_password,
    "ChangePassword": change_password,
    "DeleteUser": delete_user,
}


@pytest.mark.parametrize("rpc", list(REVOCATIONS))
async def test_every_revocation_is_logged_and_untrusted_before_it_returns(backend: Backend, rpc: str) -> None:
    email = new_email()
    up = await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    assert up.token is not None
    cached = await backend.sessions.validate(up.token)
    assert backend.coherence.trusted(replace(cached, checked_at=cached.checked_at or 1e12))
    before = await backend.db.invalidation_cursor()

    await REVOCATIONS[rpc](backend, (email, up.token))

    stored = backend.tokens.stored(up.token)
    assert backend.coherence.revoked(stored)  # this instance: at once
    logged = [token for inv in await log_since(backend, before) for _, token in inv.sessions]
    assert stored in logged  # every other instance: from the log
    assert await backend.cache.get(backend.tokens.cache_key(stored)) is None


@pytest.mark.parametrize("change", ["UpdateUser", "VerifyEmail"])
async def test_every_profile_change_is_logged_with_the_new_version(backend: Backend, change: str) -> None:
    email = new_email()
    up = await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    assert up.token is not None
    before = await backend.db.invalidation_cursor()
    if change == "UpdateUser":
        user = await backend.profile.update_user(up.token, {"name": "Grace"})
    else:
        await backend.flows.send_verification_email(email)
        [message] = [m for m in await backend.delivered() if m.to == email]
        user = (await backend.flows.verify_email(message.token, CLIENT)).user
    [entry] = await log_since(backend, before)
    assert entry.users == ((user.id, version_of(user)),)
    assert entry.sessions == ()


async def test_reads_and_new_sessions_log_nothing(backend: Backend) -> None:
    email = new_email()
    before = await backend.db.invalidation_cursor()
    up = await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    assert up.token is not None
    await backend.accounts.sign_in(email, PASSWORD, CLIENT)
    await backend.sessions.validate(up.token)
    await backend.sessions.list_sessions(up.token)
    assert await backend.db.invalidation_cursor() == before


async def test_an_invalidating_write_in_autocommit_mode_is_refused_before_it_runs(backend: Backend) -> None:
    up = await backend.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT)
    assert up.token is not None

    async def delete_in_autocommit() -> None:
        async with backend.db.transaction(autocommit=True) as tx:
            await tx.delete_session_by_token(backend.tokens.stored(up.token))

    with pytest.raises(RuntimeError, match="needs transaction"):
        await delete_in_autocommit()
    assert (await backend.sessions.validate(up.token)).user.email == up.user.email  # nothing was deleted


async def test_a_failed_transaction_logs_nothing(backend: Backend) -> None:
    up = await backend.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT)
    assert up.token is not None
    before = await backend.db.invalidation_cursor()

    async def delete_then_fail() -> None:
        async with backend.db.transaction() as tx:
            await tx.delete_session_by_token(backend.tokens.stored(up.token))
            raise LookupError("the rest of the write failed")

    with pytest.raises(LookupError, match="the rest"):
        await delete_then_fail()
    assert await backend.db.invalidation_cursor() == before
    assert not backend.coherence.revoked(backend.tokens.stored(up.token))
    await backend.sessions.validate(up.token)  # rolled back: still valid


@pytest.mark.parametrize("change", ["ResetPassword", "ChangePassword"])
async def test_a_sign_in_racing_a_password_change_gets_no_session(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """Sign-in checks the password outside any transaction; a reset or password change that commits between that
    check and the session insert must win (or its revocation would miss the new session)."""
    email = new_email()
    up = await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    assert up.token is not None
    hasher = backend.accounts._hasher
    real_verify = hasher.verify

    async def verify_then_change(encoded: str, password: str) -> bool:
        ok = await real_verify(encoded, password)
        monkeypatch.setattr(hasher, "verify", real_verify)
        if change == "ResetPassword":
            await reset_password(backend, (email, up.token))
        else:
            await backend.profile.change_password(up.token, PASSWORD, NEW_PASSWORD, True, CLIENT)
        return ok

    monkeypatch.setattr(hasher, "verify", verify_then_change)
    with pytest.raises(errors.InvalidCredentials):
        await backend.accounts.sign_in(email, PASSWORD, CLIENT)
    assert (await backend.accounts.sign_in(email, NEW_PASSWORD, CLIENT)).token


async def test_snapshots_are_stamped_in_the_databases_time_whatever_this_machines_clock_says(
    backend: Backend,
) -> None:
    """The coherence reads the database's clock even when this machine's runs 10 minutes ahead, and every
    snapshot (written at sign-up, read from SQL) is stamped with that estimate, never with this machine's clock."""
    before = time.time()
    database_now = await backend.db.database_time()
    assert abs(database_now - (before + time.time()) / 2) < 2.0  # one machine: the two clocks agree
    clock = backend.coherence.clock
    clock._local = lambda: time.time() + 600  # type: ignore[method-assign]
    assert await clock.measure(backend.db.database_time) == 0.0  # as the coherence does; the database never stepped
    assert clock.offset == pytest.approx(-600, abs=2.0) and abs(clock() - time.time()) < 2.0
    clock.offset += 1000  # now a stamp taken from anything but this clock would show
    up = await backend.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT)
    assert up.token
    stored = backend.tokens.stored(up.token)
    cached = await backend.cache.get(backend.tokens.cache_key(stored))
    assert cached is not None and cached.checked_at == pytest.approx(clock(), abs=2.0)
    found = await backend.db.find_session(stored)
    assert found is not None and found.checked_at == pytest.approx(clock(), abs=2.0)
