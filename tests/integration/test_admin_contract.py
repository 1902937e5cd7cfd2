"""The admin service's contract (services/admin.py, behind ``authsidecar users`` / ``sessions``) on every backend and
schema variant: pages of users in a stable order (ties on createdAt broken by id), prefixes taken literally,
set-password and delete revoking sessions the session manager then refuses."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest

from authsidecar import errors
from authsidecar.domain.models import User
from authsidecar.security.ids import id_generator
from authsidecar.security.passwords import PasswordHasher
from authsidecar.services.admin import AdminService
from authsidecar.services.extra_fields import ExtraFieldRules
from authsidecar.services.rules import CredentialRules
from authsidecar.services.sessions import ClientInfo
from tests.integration.conftest import Backend

PASSWORD = "correct horse battery"


def admin_of(backend: Backend, hasher: PasswordHasher) -> AdminService:
    registry = backend.db.schema.registry
    return AdminService(
        backend.db,
        hasher,
        CredentialRules(),
        id_generator(registry.generate_id),
        ExtraFieldRules(registry.user),
        backend.clock,
    )


async def test_users_come_in_pages_oldest_first_and_prefixes_are_literal(
    backend: Backend, hasher: PasswordHasher
) -> None:
    admin = admin_of(backend, hasher)
    tag = f"p{secrets.token_hex(4)}"
    made: list[User] = []
    try:
        await _pages_and_prefixes(backend, admin, tag, made)
    finally:  # the shared databases keep their invariant: every user has a credential account (test_contract)
        for user in made:
            await admin.delete_user(user.id)


async def _pages_and_prefixes(backend: Backend, admin: AdminService, tag: str, made: list[User]) -> None:
    async def create(email: str, name: str, password: str | None = None, verified: bool = False) -> User:
        made.append(await admin.create_user(email, name, password, verified))
        return made[-1]

    # Two users share a createdAt (the clock stands still): the id orders them, so no page skips or repeats one.
    first = await create(f"{tag}_b@example.com", "B")
    second = await create(f"{tag}_a@example.com", "A", PASSWORD, verified=True)
    backend.clock.now += timedelta(seconds=1)
    third = await create(f"{tag}_c@example.com", "C")
    await create(f"{tag}xa@example.com", "not matched: '_' is no wildcard")
    await create(f"{tag}%z@example.com", "not matched either")

    tied = sorted([first, second], key=lambda u: (u.created_at, u.id))
    expected = [u.id for u in [*tied, third]]
    seen: list[str] = []
    cursor = None
    while True:
        page = await admin.list_users(limit=1, after=cursor, email_prefix=f"{tag.upper()}_")
        seen += [u.id for u in page.users]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected
    assert [u.id for u in (await admin.list_users(limit=10, email_prefix=f"{tag}_")).users] == expected
    assert len((await admin.list_users(limit=10, email_prefix=f"{tag}%")).users) == 1

    details = await admin.details(await admin.find_user(email=f"{tag}_A@EXAMPLE.COM"))
    assert (details.user.id, details.user.email_verified, details.has_password) == (second.id, True, True)
    assert not (await admin.details(first)).has_password
    with pytest.raises(errors.InvalidArgument):
        await admin.list_users(after="not-a-cursor")
    with pytest.raises(errors.UserAlreadyExists):
        await admin.create_user(f"{tag}_B@example.com", "again")


async def test_set_password_and_delete_revoke_sessions(backend: Backend, hasher: PasswordHasher) -> None:
    admin = admin_of(backend, hasher)
    email = f"admin-{secrets.token_hex(4)}@example.com"
    user = await admin.create_user(email, "Ada", PASSWORD)
    signed_in = await backend.accounts.sign_in(email, PASSWORD, ClientInfo())
    assert signed_in.token is not None
    await backend.sessions.validate(signed_in.token)

    assert await admin.set_password(user.id, "another horse battery", revoke_sessions=False) == 0
    await backend.sessions.validate(signed_in.token)
    assert await admin.set_password(user.id, "a third horse battery") == 1
    with pytest.raises(errors.InvalidToken):
        await backend.sessions.validate(signed_in.token)

    again = await backend.accounts.sign_in(email, "a third horse battery", ClientInfo())
    assert again.token is not None and again.session is not None
    assert [s.id for s in await admin.list_sessions(user.id)] == [again.session.id]
    await admin.delete_user(user.id)
    with pytest.raises(errors.InvalidToken):
        await backend.sessions.validate(again.token)
    with pytest.raises(errors.UserNotFound):
        await admin.find_user(user_id=user.id)
    with pytest.raises(errors.UserNotFound):
        await admin.set_password(user.id, "a fourth horse battery")
