"""The configured schema through the services: additional fields (types, defaults, input, returned), renamed tables
and columns, uuid ids. Runs on the customised backends (the whole contract suite runs there too)."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from authsidecar import errors
from authsidecar.services.sessions import ClientInfo
from tests.integration.conftest import Backend

PASSWORD = "correct horse battery"
CLIENT = ClientInfo(ip_address="203.0.113.9", user_agent="schema")


@pytest.fixture
def custom(custom_backend: Backend) -> Backend:
    return custom_backend


def new_email() -> str:
    return f"schema-{secrets.token_hex(6)}@example.com"


async def test_sign_up_applies_defaults_and_keeps_given_values(custom: Backend) -> None:
    given = {
        "lang": "fr",
        "age": 42.0,  # what a protobuf Struct carries
        "tags": ["a", "b"],
        "prefs": {"theme": "dark", "n": [1, 2]},
        "birthday": "1990-01-02T03:04:05.678Z",
    }
    up = await custom.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT, additional=given)
    extra = up.user.additional
    assert extra["role"] == "member" and extra["vip"] is False  # defaults, applied by the server
    assert extra["lang"] == "fr" and extra["age"] == 42 and isinstance(extra["age"], int)
    assert extra["tags"] == ["a", "b"] and extra["prefs"] == {"theme": "dark", "n": [1, 2]}
    assert extra["birthday"] == datetime(1990, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert extra["secretNote"] is None
    assert up.session is not None and up.session.additional["device"] == "unknown"
    uuid.UUID(up.user.id)  # generate_id = "uuid"
    uuid.UUID(up.session.id)

    assert up.token is not None
    cached = await custom.sessions.validate(up.token)  # from the cache (written through at sign-up)
    assert cached.user.additional == extra and cached.session.additional["device"] == "unknown"
    from_sql = await custom.db.find_session(custom.tokens.stored(up.token))
    assert from_sql is not None and from_sql.user.additional == extra


@pytest.mark.parametrize(
    ("given", "error", "field"),
    [
        ({"role": "admin"}, errors.FieldNotAllowed, "additional_fields.role"),  # input = false
        ({"nope": 1}, errors.FieldNotAllowed, "additional_fields.nope"),  # unknown
        ({"age": "forty"}, errors.InvalidArgument, "additional_fields.age"),
        ({"age": 4.5}, errors.InvalidArgument, "additional_fields.age"),
        ({"vip": "yes"}, errors.InvalidArgument, "additional_fields.vip"),
        ({"tags": ["a", 1]}, errors.InvalidArgument, "additional_fields.tags"),
        ({"birthday": "yesterday"}, errors.InvalidArgument, "additional_fields.birthday"),
        ({"birthday": "1990-01-02T03:04:05"}, errors.InvalidArgument, "additional_fields.birthday"),  # no zone
    ],
)
async def test_sign_up_refuses_bad_fields_and_writes_nothing(
    custom: Backend, given: dict[str, object], error: type[errors.InvalidArgument], field: str
) -> None:
    email = new_email()
    with pytest.raises(error) as info:
        await custom.accounts.sign_up(email, PASSWORD, "Ada", None, CLIENT, additional=given)
    assert type(info.value) is error
    assert [v.field for v in info.value.violations] == [field]
    users = custom.db.schema.user
    async with custom.db.engine.connect() as conn:
        found = (await conn.execute(sa.select(users.c.id).where(users.c.email == email))).first()
    assert found is None


async def test_update_user_sets_and_clears_additional_fields(custom: Backend) -> None:
    up = await custom.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT, additional={"age": 30})
    assert up.token is not None
    await custom.sessions.validate(up.token)
    custom.clock.now += timedelta(seconds=1)
    updated = await custom.profile.update_user(up.token, {"name": "Grace"}, {"age": 31, "tags": None})
    assert updated.name == "Grace" and updated.additional["age"] == 31 and updated.additional["tags"] is None
    assert updated.additional["role"] == "member"  # untouched
    assert (await custom.sessions.validate(up.token)).user.additional["age"] == 31
    with pytest.raises(errors.FieldNotAllowed):
        await custom.profile.update_user(up.token, {}, {"role": "admin"})


async def test_a_taken_unique_value_is_already_exists_naming_the_field(custom: Backend) -> None:
    handle = f"ada-{secrets.token_hex(4)}"
    first = await custom.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT, additional={"handle": handle})
    with pytest.raises(errors.AlreadyExists) as info:  # not "a user with this email already exists"
        await custom.accounts.sign_up(new_email(), PASSWORD, "Eve", None, CLIENT, additional={"handle": handle})
    assert type(info.value) is errors.AlreadyExists and "additional_fields.handle" in info.value.message
    second = await custom.accounts.sign_up(new_email(), PASSWORD, "Eve", None, CLIENT)
    assert second.token is not None and first.user.additional["handle"] == handle
    with pytest.raises(errors.AlreadyExists) as info:
        await custom.profile.update_user(second.token, {}, {"handle": handle})
    assert "additional_fields.handle" in info.value.message and "_key" not in info.value.message
    with pytest.raises(errors.UserAlreadyExists):
        await custom.accounts.sign_up(first.user.email, PASSWORD, "Ada", None, CLIENT)  # the email one still is


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({"age": 2**31}, "must be of type number"),
        ({"age": 1e30}, "must be of type number"),
        ({"birthday": "0001-01-01T00:00:00+01:00"}, "must be of type date"),
        ({"lang": "a\x00b"}, "NUL"),
        ({"prefs": {"k": "a\x00b"}}, "NUL"),
        ({"lang": "x" * 10_001}, "at most 10000 characters"),
        ({"handle": "h" * 256}, "at most 255 characters"),  # unique: a key column
        ({"tags": ["t" * 300]}, "at most 255 characters (as JSON)"),  # indexed
    ],
)
async def test_values_that_would_not_fit_their_column_are_invalid_argument(
    custom: Backend, given: dict[str, object], problem: str
) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        await custom.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT, additional=given)
    assert problem in info.value.violations[0].description


async def test_null_for_a_required_field_is_missing_at_update_and_the_default_at_sign_up(custom: Backend) -> None:
    up = await custom.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT, additional={"lang": None})
    assert up.user.additional["lang"] == "en" and up.token is not None
    with pytest.raises(errors.MissingField):
        await custom.profile.update_user(up.token, {}, {"lang": None})


async def test_physical_names_follow_the_configuration(custom: Backend) -> None:
    schema = custom.db.schema
    assert (schema.user.name, schema.session.name, schema.account.name, schema.verification.name) == (
        "members",
        "user_sessions",
        "accounts",
        "verifications",
    )
    assert schema.user.c.email.name == "email_address" and schema.user.c.name.name == "full_name"
    assert schema.user.c.secretNote.name == "secret_note"
    assert schema.session.c.user_id.name == "user_id" and schema.session.c.ip_address.name == "ip"
    up = await custom.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT)
    async with custom.db.engine.connect() as conn:
        row = (
            await conn.execute(sa.text("SELECT full_name, role FROM members WHERE id = :id"), {"id": up.user.id})
        ).one()
    assert tuple(row) == ("Ada", "member")


async def test_ids_follow_the_configured_strategy(backend: Backend) -> None:
    """Every backend of the suite: app-made random ids, uuids, or ids the database assigns (serial, uuid default)."""
    up = await backend.accounts.sign_up(new_email(), PASSWORD, "Ada", None, CLIENT)
    assert up.session is not None and up.token is not None
    ids = (up.user.id, up.session.id)
    if backend.name.endswith("/serial-ids"):
        assert all(i.isdigit() for i in ids)
    elif backend.name.endswith(("/database-ids", "/custom-schema")):
        for i in ids:
            uuid.UUID(i)
    else:
        assert all(len(i) == 32 and i.isalnum() for i in ids)
    validated = await backend.sessions.validate(up.token)
    assert (validated.user.id, validated.session.id) == ids
    assert validated.session.user_id == up.user.id
    users = backend.db.schema.user
    async with backend.db.engine.connect() as conn:
        stored = (await conn.execute(sa.select(users.c.id).where(users.c.email == up.user.email))).scalar_one()
    assert str(stored) == up.user.id
    with pytest.raises(errors.SessionNotFound):
        await backend.sessions.revoke(up.token, "not-an-id")  # a malformed id from a client matches nothing
