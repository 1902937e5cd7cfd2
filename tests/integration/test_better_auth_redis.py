"""Better Auth's Redis layout as cache/better_auth.py keeps it, on the real Redis: what a Better Auth app reads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from authsidecar.cache.better_auth import BetterAuthRedis
from authsidecar.cache.resp import PipelinedGetClient
from authsidecar.domain.fields import Registry
from authsidecar.domain.models import Session, SessionWithUser, User, Verification
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.redis

NOW = datetime.now(UTC).replace(microsecond=0)


def _entry(token: str, user: User, expires_in: timedelta, created: datetime = NOW) -> SessionWithUser:
    session = Session(f"id-{token}", user.id, token, created + expires_in, created, created, None, "agent")
    return SessionWithUser(session, user)


@pytest.fixture
async def store(redis_prefix: str) -> AsyncIterator[tuple[BetterAuthRedis, Redis]]:
    client = Redis.from_url(REDIS_URL)
    ba = BetterAuthRedis(Redis.from_url(REDIS_URL), redis_prefix, Registry(), 86_400)
    yield ba, client
    await ba.close()
    await client.aclose()


USER = User("u1", "Ada", "ada@example.com", False, None, NOW, NOW)


async def test_documents_and_list_in_better_auths_shape(
    store: tuple[BetterAuthRedis, Redis], redis_prefix: str
) -> None:
    ba, raw = store
    await ba.store(_entry("tokenB", USER, timedelta(days=7)), NOW)
    await ba.store(_entry("tokenA", USER, timedelta(days=1)), NOW)
    doc = json.loads(await raw.get(redis_prefix + "tokenA"))
    assert doc["session"]["token"] == "tokenA" and doc["session"]["userId"] == "u1"
    assert doc["user"]["emailVerified"] is False and "checkedAt" not in doc
    assert 86_000 < await raw.ttl(redis_prefix + "tokenA") <= 86_400
    listed = json.loads(await raw.get(f"{redis_prefix}active-sessions-u1"))
    assert [item["token"] for item in listed] == ["tokenA", "tokenB"]  # ascending expiry, as Better Auth keeps it
    assert listed[0]["expiresAt"] == int((NOW + timedelta(days=1)).timestamp() * 1000)
    assert (await ba.get("tokenA")) is not None

    await ba.delete("u1", ["tokenA"], NOW)
    assert await ba.get("tokenA") is None
    listed = json.loads(await raw.get(f"{redis_prefix}active-sessions-u1"))
    assert [item["token"] for item in listed] == ["tokenB"]


async def test_refresh_only_while_present_keeping_foreign_keys(
    store: tuple[BetterAuthRedis, Redis], redis_prefix: str
) -> None:
    ba, raw = store
    entry = _entry("tokenR", USER, timedelta(days=1))
    later = NOW + timedelta(hours=1)
    extended = replace(entry.session, expires_at=later + timedelta(days=7), updated_at=later)
    assert not await ba.refresh(extended, later)
    await ba.store(entry, NOW)
    # What a Better Auth plugin may have put there: unknown keys, an empty list, a number beyond 2^53.
    doc = json.loads(await raw.get(redis_prefix + "tokenR"))
    doc["session"]["activeOrganizationId"] = "org/1"
    doc["user"] |= {"roles": [], "big": 1796556022311123999, "name": "Ada, née Byron"}
    await raw.set(redis_prefix + "tokenR", json.dumps(doc, separators=(",", ":"), ensure_ascii=False), keepttl=True)
    assert await ba.refresh(extended, later)
    await ba.rewrite_user(replace(USER, name="Ada Lovelace"))
    after = json.loads(await raw.get(redis_prefix + "tokenR"))
    assert after["session"]["activeOrganizationId"] == "org/1"
    assert after["session"]["expiresAt"].startswith((NOW + timedelta(days=7, hours=1)).strftime("%Y-%m-%dT%H:%M"))
    assert after["user"]["roles"] == [] and after["user"]["big"] == 1796556022311123999
    assert after["user"]["name"] == "Ada Lovelace"
    assert await raw.ttl(redis_prefix + "tokenR") > 7 * 86_400 - 10
    listed = json.loads(await raw.get(f"{redis_prefix}active-sessions-u1"))
    assert {"token": "tokenR", "expiresAt": int(extended.expires_at.timestamp() * 1000)} in listed
    await ba.delete("u1", ["tokenR"], NOW)
    assert not await ba.refresh(extended, later)  # revoked meanwhile: not brought back
    assert await ba.get("tokenR") is None


async def test_revoking_all_marks_the_user(store: tuple[BetterAuthRedis, Redis], redis_prefix: str) -> None:
    ba, raw = store
    old = _entry("tokenOld", USER, timedelta(days=7), NOW - timedelta(minutes=5))
    await raw.set(
        redis_prefix + "tokenLost", (await _doc(ba, old, raw, redis_prefix)).replace(b"tokenOld", b"tokenLost")
    )
    await ba.delete("u1", [], NOW, revoke_all_before=NOW)
    assert int(await raw.get(f"{redis_prefix}revoked-sessions-before-u1")) == int(NOW.timestamp() * 1000)
    assert await ba.get("tokenOld") is None
    assert await ba.get("tokenLost") is None  # never referenced in the list, still refused
    await ba.store(_entry("tokenNew", USER, timedelta(days=7), NOW + timedelta(seconds=1)), NOW)
    assert await ba.get("tokenNew") is not None
    await ba.delete("u1", [], NOW, revoke_all_before=NOW - timedelta(hours=1))  # an older mark never lowers it
    assert int(await raw.get(f"{redis_prefix}revoked-sessions-before-u1")) == int(NOW.timestamp() * 1000)


async def _doc(ba: BetterAuthRedis, entry: SessionWithUser, raw: Redis, prefix: str) -> bytes:
    await ba.store(entry, NOW)
    value: bytes = await raw.get(prefix + entry.session.stored_token)
    return value


async def test_user_rewrite_keeps_ttl(store: tuple[BetterAuthRedis, Redis], redis_prefix: str) -> None:
    ba, raw = store
    await ba.store(_entry("tokenU", USER, timedelta(hours=2)), NOW)
    before = await raw.ttl(redis_prefix + "tokenU")
    renamed = User("u1", "Grace", "ada@example.com", True, None, NOW, NOW + timedelta(seconds=1))
    await ba.rewrite_user(renamed)
    entry = await ba.get("tokenU")
    assert entry is not None and entry.user.name == "Grace" and entry.user.email_verified
    assert before - 2 <= await raw.ttl(redis_prefix + "tokenU") <= before


async def test_verification_values_are_taken_once(store: tuple[BetterAuthRedis, Redis]) -> None:
    ba, _ = store
    value = Verification("v1", "reset-password:abc", "u1", NOW + timedelta(hours=1), NOW, NOW)
    await ba.put_verification(value, NOW)
    assert await ba.has_verification("reset-password:abc")
    assert await ba.take_verification("reset-password:abc", NOW) == "u1"
    assert await ba.take_verification("reset-password:abc", NOW) is None
    await ba.put_verification(value, NOW)
    assert await ba.take_verification("reset-password:abc", NOW + timedelta(hours=2)) is None  # expired


async def test_pipelined_pair_of_gets(redis_prefix: str) -> None:
    """The hot path's two GETs in one round trip; a dead server fails both with one error, nothing left over."""
    client = Redis.from_url(REDIS_URL)
    getter = PipelinedGetClient(REDIS_URL, 0.5)
    try:
        await client.set(redis_prefix + "a", b"1")
        assert await getter.get_many(redis_prefix + "a", redis_prefix + "missing") == [b"1", None]
    finally:
        await getter.close()
        await client.aclose()
    dead = PipelinedGetClient("redis://127.0.0.1:1/0", 0.5)
    with pytest.raises(RedisConnectionError):
        await dead.get_many("a", "b")
