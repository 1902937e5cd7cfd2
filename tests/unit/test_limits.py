"""Pure logic of the abuse limits: GCRA counters, rule parsing, the fair hashing order, strict emails, the
absolute session lifetime."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from authsidecar.cache.ratelimit import Limit, MemoryRateLimiter
from authsidecar.domain.models import Session
from authsidecar.errors import InvalidEmail, RateLimited, TooManyRequests
from authsidecar.security.passwords import Argon2Parameters, PasswordHasher
from authsidecar.services.limits import Limits, LoginGuard, RpcRule, client_key
from authsidecar.services.rules import normalize_email
from authsidecar.services.sessions import SessionPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limit_parsing() -> None:
    assert Limit.parse("3/10s") == Limit(3, 10)
    assert Limit.parse("5/15m") == Limit(5, 900)
    assert Limit.parse("100/1h") == Limit(100, 3600)
    assert Limit.parse("10/60") == Limit(10, 60)
    for bad in ("3", "0/10s", "3/0s", "x/1m", "3/10y", "3/100d"):
        with pytest.raises(ValueError, match="count"):
            Limit.parse(bad)


async def test_gcra_burst_then_steady_rate_and_refusals_do_not_count() -> None:
    clock = Clock()
    counters = MemoryRateLimiter(clock=clock)
    limit = Limit(3, 9)  # 3 at once, then one every 3 s
    assert [await counters.hit([("k", limit)]) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await counters.hit([("k", limit)]) == pytest.approx(3.0)
    clock.now += 1
    assert await counters.hit([("k", limit)]) == pytest.approx(2.0)  # the refusal above did not push it
    clock.now += 2
    assert await counters.hit([("k", limit)]) == 0.0
    assert await counters.hit([("k", limit)]) == pytest.approx(3.0)


async def test_all_or_nothing_across_keys() -> None:
    counters = MemoryRateLimiter(clock=Clock())
    tight, loose = Limit(1, 60), Limit(100, 60)
    assert await counters.hit([("ip", loose), ("id", tight)]) == 0.0
    assert await counters.hit([("ip", loose), ("id", tight)]) > 0
    for _ in range(99):  # the refused call above did not count on "ip"
        assert await counters.hit([("ip", loose)]) == 0.0
    assert await counters.hit([("ip", loose)]) > 0


async def test_limits_per_ip_and_identifier() -> None:
    limits = Limits(MemoryRateLimiter(clock=Clock()), {"SignIn": RpcRule(ip=Limit(2, 60), identifier=Limit(3, 60))})
    await limits.check("SignIn", "192.0.2.1", "a@example.com")
    await limits.check("SignIn", "192.0.2.1", "b@example.com")
    with pytest.raises(RateLimited) as info:
        await limits.check("SignIn", "192.0.2.1", "c@example.com")
    assert info.value.retry_after == pytest.approx(30)
    await limits.check("SignIn", None, "a@example.com")  # no IP: only the identifier counts
    await limits.check("SignIn", "192.0.2.9", "a@example.com")  # a's third
    with pytest.raises(RateLimited):
        await limits.check("SignIn", "192.0.2.10", "a@example.com")  # a's fourth, whatever the IP
    await limits.check("ValidateSession", "192.0.2.1", None)  # no rule: never limited
    await Limits.off().check("SignIn", "192.0.2.1", "a@example.com")


async def test_login_guard_refuses_the_pair_and_slows_the_account() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    limits = Limits(MemoryRateLimiter(clock=Clock()))
    guard = LoginGuard(limits, Limit(2, 600), Limit(3, 3600), slowdown=0.7, sleep=sleep)
    for _ in range(2):
        await guard.before("a@example.com", "192.0.2.1")
        await guard.failed("a@example.com", "192.0.2.1")
    with pytest.raises(RateLimited):
        await guard.before("a@example.com", "192.0.2.1")
    await guard.before("a@example.com", "192.0.2.2")  # the owner elsewhere: not refused, not yet slowed
    assert slept == []
    await guard.failed("a@example.com", "192.0.2.2")
    await guard.before("a@example.com", "192.0.2.3")  # three failures on the account: slowed, not refused
    assert slept == [0.7]
    await guard.succeeded("a@example.com", "192.0.2.1")
    await guard.before("a@example.com", "192.0.2.1")  # a success forgives that pair


async def test_hashing_is_served_round_robin_by_client() -> None:
    """One worker, a client with four hashes waiting and another with one: the other's runs second."""
    hasher = PasswordHasher(Argon2Parameters(time_cost=1, memory_kib=8192), workers=1, max_pending=16)
    order: list[str] = []

    async def one(client: str) -> None:
        with hasher.admitted(client):
            await hasher.hash("password")
            order.append(client)

    try:
        flood = [asyncio.create_task(one("198.51.100.1")) for _ in range(4)]
        await asyncio.sleep(0)
        legit = asyncio.create_task(one("203.0.113.5"))
        await asyncio.gather(*flood, legit)
        assert order.index("203.0.113.5") <= 2  # after the running hash and one turn, not the whole queue
    finally:
        hasher.close()


async def test_one_client_cannot_take_every_admission() -> None:
    hasher = PasswordHasher(Argon2Parameters(time_cost=1, memory_kib=8192), 1, max_pending=8, max_pending_per_client=2)
    release = asyncio.Event()

    async def hold(client: str) -> None:
        with hasher.admitted(client):
            await release.wait()

    try:
        holders = [asyncio.create_task(hold("198.51.100.1")) for _ in range(2)]
        holders += [asyncio.create_task(hold("")) for _ in range(3)]  # no reported IP: only the global bound
        await asyncio.sleep(0)
        with pytest.raises(TooManyRequests), hasher.admitted("198.51.100.1"):
            pass
        other = asyncio.create_task(hold("203.0.113.5"))
        await asyncio.sleep(0)
        assert hasher.pending == 6
        release.set()
        await asyncio.gather(*holders, other)
        assert hasher.pending == 0
    finally:
        hasher.close()


@pytest.mark.parametrize(
    "raw",
    [
        "x<attacker@evil.example>.corp.example",
        "Name <a@b.example>",
        '"quoted"@b.example',
        "a(comment)@b.example",
        "a..b@c.example",
        "a b@c.example",
        "a@b",
        "a@[192.0.2.1]",
        "a@192.0.2.1",
        "a,b@c.example",
        "a@-b.example",
        "a\x1b[31m@b.example",
    ],
)
def test_email_is_a_strict_addr_spec(raw: str) -> None:
    with pytest.raises(InvalidEmail):
        normalize_email(raw)


def test_email_normal_forms() -> None:
    assert normalize_email(" Ada.Lovelace+x@Example.COM ") == "ada.lovelace+x@example.com"
    assert normalize_email("u@xn--bcher-kva.example") == normalize_email("u@BÜCHER.example") == "u@bücher.example"
    assert normalize_email("e\u0301@example.com") == "\u00e9@example.com"  # NFC


def test_absolute_lifetime_caps_refresh() -> None:
    policy = SessionPolicy(max_lifetime=timedelta(days=10))
    created = datetime(2026, 1, 1, tzinfo=UTC)
    session = Session("s", "u", "t", created + timedelta(days=7), created, created, None, None)
    assert policy.capped(created, created + timedelta(days=7)) == created + timedelta(days=7)
    day8 = created + timedelta(days=8)
    assert policy.needs_refresh(session, day8) and policy.refreshed(session, day8) == created + timedelta(days=10)
    at_cap = Session("s", "u", "t", created + timedelta(days=10), created, day8, None, None)
    assert not policy.needs_refresh(at_cap, created + timedelta(days=9, hours=23))  # nothing left to extend
    assert SessionPolicy().refreshed(session, day8) == day8 + timedelta(days=7)


def test_client_keys_ignore_the_spelling_of_an_address() -> None:
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("2001:db8:0:0:1::1") == client_key("2001:0DB8::ffff") == "2001:db8::/64"
    assert client_key("2001:db8:0:1::1") != client_key("2001:db8::1")
