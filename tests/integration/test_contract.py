"""The storage/service contract, run on Postgres + Redis and on SQLite + in-process with the same assertions."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta

import pytest
import sqlalchemy as sa

from authsidecar import errors
from authsidecar.domain.models import User
from authsidecar.security.passwords import Argon2Parameters, PasswordHasher
from authsidecar.services.sessions import ClientInfo
from tests.integration.conftest import Backend

PASSWORD = "correct horse battery"
CLIENT = ClientInfo(ip_address="203.0.113.7", user_agent="pytest")


def new_email() -> str:
    return f"user-{secrets.token_hex(6)}@example.com"


async def count(backend: Backend, table: str, **where: str) -> int:
    tbl: sa.Table = getattr(backend.db.schema, table)
    stmt = sa.select(sa.func.count()).select_from(tbl).where(*(tbl.c[k] == v for k, v in where.items()))
    async with backend.db.engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def stored_token_column(backend: Backend, session_id: str) -> str:
    s = backend.db.schema.session
    async with backend.db.engine.connect() as conn:
        return str((await conn.execute(sa.select(s.c.token).where(s.c.id == session_id))).scalar_one())


async def until_a_statement_waits_for_a_lock(backend: Backend) -> None:
    """Return once a statement of the backend's (Postgres) database waits for a lock (fails after 10 s)."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(200):
        async with backend.db.engine.connect() as conn:
            if int((await conn.execute(query)).scalar_one()) > 0:
                return
        await asyncio.sleep(0.05)
    pytest.fail("no statement waited for a lock")


async def test_sign_up_writes_user_account_and_session(backend: Backend) -> None:
    email = new_email()
    result = await backend.accounts.sign_up("  " + email.upper() + " ", PASSWORD, "Ada", None, CLIENT)
    assert result.user.email == email
    assert result.user.email_verified is False
    assert result.session is not None and result.token
    assert await count(backend, "user", email=email) == 1
    assert await count(backend, "account", user_id=result.user.id, provider_id="credential") == 1
    assert await count(backend, "session", user_id=result.user.id) == 1
    # Only a digest of the token is at rest.
    stored = await stored_token_column(backend, result.session.id)
    assert stored != result.token
    assert stored == backend.tokens.stored(result.token)
    validated = await backend.sessions.validate(result.token)
    assert validated.user == result.user
    assert validated.session.id == result.session.id
    assert validated.session.ip_address == "203.0.113.7"


async def test_duplicate_sign_up_is_already_exists_and_writes_nothing(backend: Backend) -> None:
    email = new_email()
    await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    with pytest.raises(errors.UserAlreadyExists):
        await backend.accounts.sign_up(email.upper(), "another password", "Eve", None, CLIENT)
    assert await count(backend, "user", email=email) == 1
    assert await count(backend, "user", name="Eve") == 0


async def test_concurrent_sign_ups_of_one_email_make_exactly_one_user(backend: Backend) -> None:
    email = new_email()
    attempts = 8
    results = await asyncio.gather(
        *(backend.accounts.sign_up(email, PASSWORD, f"racer {i}", None, CLIENT) for i in range(attempts)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(exc, errors.UserAlreadyExists) for exc in losers), losers
    user_id = winners[0].user.id
    assert await count(backend, "user", email=email) == 1
    assert await count(backend, "account", user_id=user_id) == 1
    assert await count(backend, "session", user_id=user_id) == 1
    total_accounts = await count(backend, "account", provider_id="credential")
    total_users = await count(backend, "user")
    assert total_accounts == total_users  # no orphan account anywhere


async def test_sign_in_unknown_email_and_wrong_password_are_the_same_error(backend: Backend) -> None:
    email = new_email()
    await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    with pytest.raises(errors.InvalidCredentials) as wrong:
        await backend.accounts.sign_in(email, "wrong password!", CLIENT)
    with pytest.raises(errors.InvalidCredentials) as unknown:
        await backend.accounts.sign_in(new_email(), PASSWORD, CLIENT)
    assert wrong.value.reason == unknown.value.reason == "INVALID_EMAIL_OR_PASSWORD"
    assert wrong.value.message == unknown.value.message


async def test_sign_in_creates_a_new_session(backend: Backend) -> None:
    email = new_email()
    up = await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    signed_in = await backend.accounts.sign_in(email.upper(), PASSWORD, ClientInfo(user_agent="second"))
    assert signed_in.token and signed_in.token != up.token
    assert signed_in.user.id == up.user.id
    assert (await backend.sessions.validate(signed_in.token)).session.user_agent == "second"
    assert len(await backend.sessions.list_sessions(signed_in.token)) == 2


async def test_sign_in_rehashes_when_parameters_changed(backend: Backend, hasher: PasswordHasher) -> None:
    email = new_email()
    up = await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    async with backend.db.transaction() as tx:
        before = await tx.get_credential_account(up.user.id)
    assert before is not None and before.password is not None and "t=1" in before.password
    stronger = PasswordHasher(Argon2Parameters(time_cost=2, memory_kib=8192, parallelism=1), 1, 8)
    try:
        await backend.make_accounts(stronger).sign_in(email, PASSWORD, CLIENT)
        async with backend.db.transaction() as tx:
            after = await tx.get_credential_account(up.user.id)
        assert after is not None and after.password is not None
        assert "t=2" in after.password
        assert not stronger.needs_rehash(after.password)
        # The old parameters still verify the new hash, so nothing is locked out.
        await backend.make_accounts(hasher).sign_in(email, PASSWORD, CLIENT)
    finally:
        stronger.close()


async def test_a_session_is_inserted_only_while_the_credential_hash_is_unchanged(backend: Backend) -> None:
    up = await backend.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT)
    async with backend.db.transaction() as tx:
        account = await tx.get_credential_account(up.user.id)
    assert account is not None and account.password is not None
    now = backend.clock()
    async with backend.db.transaction() as tx:
        await tx.update_account_password(account, "$argon2id$v=19$changed", now)
    stale, _ = backend.sessions.new_session(up.user.id, CLIENT, True, now)
    async with backend.db.transaction(autocommit=True) as tx:
        assert await tx.insert_session_if_credential(account.id, account.password, stale) is None
    assert await count(backend, "session", user_id=up.user.id) == 1  # the sign-up's only
    fresh, _ = backend.sessions.new_session(up.user.id, CLIENT, True, now)
    async with backend.db.transaction(autocommit=True) as tx:
        stored = await tx.insert_session_if_credential(account.id, "$argon2id$v=19$changed", fresh)
    assert stored is not None and stored.id  # the database's own id where it makes them
    assert stored.id == fresh.id or not fresh.id
    assert await count(backend, "session", user_id=up.user.id) == 2
    assert await stored_token_column(backend, stored.id) == fresh.stored_token


async def test_a_password_change_after_the_check_waits_and_then_revokes_the_new_session(backend: Backend) -> None:
    """The session insert holds the credential row until its transaction ends: a password change that comes
    while it is open waits for it, then its revocation sees (and removes) the new session."""
    up = await backend.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT)
    async with backend.db.transaction() as tx:
        account = await tx.get_credential_account(up.user.id)
    assert account is not None and account.password is not None
    now = backend.clock()
    session, _ = backend.sessions.new_session(up.user.id, CLIENT, True, now)
    inserted = asyncio.Event()
    release = asyncio.Event()

    async def sign_in_write() -> None:
        async with backend.db.transaction() as tx:
            assert await tx.insert_session_if_credential(account.id, account.password or "", session) is not None
            inserted.set()
            await release.wait()

    async def change_password() -> list[str]:
        async with backend.db.transaction() as tx:
            await tx.update_account_password(account, "$argon2id$v=19$changed", now)
            return [s.id for s in await tx.delete_user_sessions(up.user.id)]

    writer = asyncio.create_task(sign_in_write())
    await asyncio.wait_for(inserted.wait(), 10)
    change = asyncio.create_task(change_password())
    if backend.db.engine.dialect.name == "postgresql":
        await until_a_statement_waits_for_a_lock(backend)  # the password change, on the credential row
    else:  # nothing shows the wait (SQLite serialises writes whole, inside its busy handler; MariaDB 10.11 lists
        # it neither in INNODB_TRX nor in INNODB_LOCK_WAITS): time for the change to run ahead if it did not wait
        await asyncio.sleep(0.5)
    assert not change.done(), "the password change did not wait for the session insert's lock"
    release.set()
    await writer
    revoked = await asyncio.wait_for(change, 10)
    assert len(revoked) == 2  # the sign-up's session and the one inserted meanwhile
    assert await count(backend, "session", user_id=up.user.id) == 0


async def test_validate_unknown_token_is_invalid_token(backend: Backend) -> None:
    with pytest.raises(errors.InvalidToken):
        await backend.sessions.validate(secrets.token_urlsafe(32))


async def test_cache_miss_is_served_from_sql_and_refills_the_cache(backend: Backend) -> None:
    up = await backend.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT)
    assert up.token and up.session
    key = backend.tokens.cache_key(backend.tokens.stored(up.token))
    assert await backend.cache.get(key) is not None  # written through at sign-up
    await backend.cache.evict_user(up.user.id)
    assert await backend.cache.get(key) is None
    validated = await backend.sessions.validate(up.token)
    assert validated.session.id == up.session.id
    cached = await backend.cache.get(key)
    assert cached is not None and cached.session.id == up.session.id


async def test_sign_out_removes_the_session_everywhere(backend: Backend) -> None:
    up = await backend.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT)
    assert up.token and up.session
    await backend.sessions.sign_out(up.token)
    key = backend.tokens.cache_key(backend.tokens.stored(up.token))
    assert await backend.cache.get(key) is None
    assert await count(backend, "session", id=up.session.id) == 0
    with pytest.raises(errors.InvalidToken):
        await backend.sessions.validate(up.token)
    await backend.sessions.sign_out(up.token)  # idempotent


async def test_revocation_cannot_be_undone_by_a_racing_refill(backend: Backend) -> None:
    up = await backend.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT)
    assert up.token
    stored = backend.tokens.stored(up.token)
    stale = await backend.db.find_session(stored)  # a validation read the row...
    assert stale is not None
    await backend.sessions.sign_out(up.token)  # ...then the session was revoked...
    key = backend.tokens.cache_key(stored)
    await backend.cache.put(key, stale, 3600)  # ...and the validation now tries to refill the cache.
    assert await backend.cache.get(key) is None
    with pytest.raises(errors.InvalidToken):
        await backend.sessions.validate(up.token)


async def test_revoke_one_others_and_all(backend: Backend) -> None:
    email = new_email()
    first = await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT)
    others = []
    for _ in range(3):
        backend.clock.now += timedelta(seconds=1)
        others.append(await backend.accounts.sign_in(email, PASSWORD, CLIENT))
    assert first.token and first.session and all(o.token and o.session for o in others)
    listed = await backend.sessions.list_sessions(first.token)
    assert [s.id for s in listed] == [o.session.id for o in reversed(others)] + [first.session.id]  # type: ignore[union-attr]

    await backend.sessions.revoke(first.token, others[0].session.id)  # type: ignore[union-attr]
    with pytest.raises(errors.InvalidToken):
        await backend.sessions.validate(others[0].token)  # type: ignore[arg-type]
    with pytest.raises(errors.SessionNotFound):
        await backend.sessions.revoke(first.token, others[0].session.id)  # type: ignore[union-attr]

    assert await backend.sessions.revoke_others(first.token) == 2
    for other in others[1:]:
        with pytest.raises(errors.InvalidToken):
            await backend.sessions.validate(other.token)  # type: ignore[arg-type]
    assert (await backend.sessions.validate(first.token)).session.id == first.session.id

    assert await backend.sessions.revoke_all(first.token) == 1
    with pytest.raises(errors.InvalidToken):
        await backend.sessions.validate(first.token)


async def test_cannot_revoke_another_users_session(backend: Backend) -> None:
    alice = await backend.accounts.sign_up(new_email(), PASSWORD, "Alice", None, CLIENT)
    bob = await backend.accounts.sign_up(new_email(), PASSWORD, "Bob", None, CLIENT)
    assert alice.token and bob.session and bob.token
    with pytest.raises(errors.SessionNotFound):
        await backend.sessions.revoke(alice.token, bob.session.id)
    assert (await backend.sessions.validate(bob.token)).user.id == bob.user.id


async def test_expired_session_is_rejected_even_from_the_cache(backend: Backend) -> None:
    up = await backend.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT, remember_me=False)
    assert up.token and up.session
    assert up.session.expires_at - up.session.created_at == timedelta(days=1)
    key = backend.tokens.cache_key(backend.tokens.stored(up.token))
    assert await backend.cache.get(key) is not None
    await backend.sessions.validate(up.token)  # a hit: its deadlines are remembered for this cached object
    backend.clock.now += timedelta(days=1, seconds=1)
    with pytest.raises(errors.SessionExpired):
        await backend.sessions.validate(up.token)
    assert await backend.cache.get(key) is None


async def test_sliding_refresh_follows_update_age(backend: Backend) -> None:
    up = await backend.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT)
    assert up.token and up.session
    backend.clock.now += timedelta(hours=23)
    assert (await backend.sessions.validate(up.token)).session.expires_at == up.session.expires_at
    backend.clock.now += timedelta(hours=2)  # 25 h: past update_age
    refreshed = await backend.sessions.validate(up.token)
    assert refreshed.session.expires_at == backend.clock.now + timedelta(days=7)
    assert refreshed.session.updated_at == backend.clock.now
    fresh_from_sql = await backend.db.find_session(backend.tokens.stored(up.token))
    assert fresh_from_sql is not None and fresh_from_sql.session.expires_at == refreshed.session.expires_at
    cached = await backend.cache.get(backend.tokens.cache_key(backend.tokens.stored(up.token)))
    assert cached is not None and cached.session.expires_at == refreshed.session.expires_at


async def test_remember_me_false_is_never_refreshed(backend: Backend) -> None:
    up = await backend.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT, remember_me=False)
    assert up.token and up.session
    backend.clock.now += timedelta(hours=23, minutes=59)
    assert (await backend.sessions.validate(up.token)).session.expires_at == up.session.expires_at


async def test_list_sessions_omits_expired_ones(backend: Backend) -> None:
    email = new_email()
    short = await backend.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT, remember_me=False)
    long = await backend.accounts.sign_in(email, PASSWORD, CLIENT)
    assert short.session and long.token and long.session
    backend.clock.now += timedelta(days=1, minutes=1)
    assert [s.id for s in await backend.sessions.list_sessions(long.token)] == [long.session.id]


async def test_deleting_a_user_cascades(backend: Backend) -> None:
    up = await backend.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT)
    u = backend.db.schema.user
    async with backend.db.engine.begin() as conn:
        await conn.execute(sa.delete(u).where(u.c.id == up.user.id))
    assert await count(backend, "account", user_id=up.user.id) == 0
    assert await count(backend, "session", user_id=up.user.id) == 0


async def test_sign_up_without_auto_sign_in_creates_no_session(backend: Backend, hasher: PasswordHasher) -> None:
    accounts = backend.make_accounts(hasher)
    accounts._auto_sign_in = False
    up = await accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT)
    assert up.session is None and up.token is None
    assert await count(backend, "session", user_id=up.user.id) == 0


async def test_user_without_a_password_cannot_sign_in_with_one(backend: Backend) -> None:
    email = new_email()
    now = backend.clock.now
    async with backend.db.transaction() as tx:  # e.g. a user who only ever signed in with a social provider
        await tx.insert_user(User(backend.sessions.ids("user"), "Social", email, True, None, now, now))
    with pytest.raises(errors.InvalidCredentials):
        await backend.accounts.sign_in(email, PASSWORD, CLIENT)
