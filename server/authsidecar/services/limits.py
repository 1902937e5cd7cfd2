"""Abuse limits: per-RPC rate limits, brute-force protection of sign-in, and one message per address and interval.

Keys are the end user's IP as the calling service reports it (``client.ip_address``; the gRPC peer is the calling
service, not the user, so without a reported IP the per-IP limits do not apply) and an identifier (the email, or
the user id for signed-in calls), hashed so counters hold no address. Counters live in the secondary storage (Redis
shared by every instance, else in-process: cache/ratelimit.py); when Redis fails, this instance's own counters take
over until it is back, so limits degrade to per-instance instead of vanishing.

Brute force: wrong passwords for one account are refused per (account, IP) once ``failures_per_ip`` is spent, and
slowed down (a delay before the password is checked, never a refusal) across all IPs once ``failures_per_account``
is spent, so an attacker cannot lock the owner out by failing on purpose: the owner, from another IP, still signs
in, only a little later.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from authsidecar.cache.ratelimit import Check, Limit, MemoryRateLimiter, RateLimiter
from authsidecar.errors import BackendUnavailable, RateLimited

__all__ = ["DEFAULT_RULES", "OUTSTANDING_LINKS", "Limits", "LoginGuard", "MailThrottle", "RpcRule", "client_key"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RpcRule:
    """Limits of one RPC: per client IP and per identifier (either may be None: not limited)."""

    ip: Limit | None = None
    identifier: Limit | None = None


_STRICT = Limit(3, 10)  # Better Auth's default for sign-in, sign-up, change-password, change-email
_MAIL = Limit(3, 60)  # Better Auth's default for the mail-sending endpoints

# Every RPC that hashes a password, sends mail or consumes a token; ValidateSession and the read-only or
# session-only RPCs are not limited by default.
DEFAULT_RULES: Mapping[str, RpcRule] = {
    "SignUp": RpcRule(ip=_STRICT, identifier=_STRICT),
    # No per-email limit on sign-in: anyone could spend it and lock the owner out. The brute-force guard
    # protects the account instead (per account and IP, and a slowdown across IPs).
    "SignIn": RpcRule(ip=_STRICT),
    "ChangePassword": RpcRule(ip=_STRICT, identifier=_STRICT),
    "ChangeEmail": RpcRule(ip=_STRICT, identifier=_MAIL),
    "DeleteUser": RpcRule(ip=_STRICT, identifier=_STRICT),
    "SendVerificationEmail": RpcRule(ip=_MAIL, identifier=_MAIL),
    "RequestPasswordReset": RpcRule(ip=_MAIL, identifier=_MAIL),
    "ResetPassword": RpcRule(ip=_STRICT, identifier=Limit(10, 60)),
    "VerifyEmail": RpcRule(ip=Limit(10, 60), identifier=Limit(10, 60)),
}


# Links that stop working when the password or the address changes (verification purposes).
OUTSTANDING_LINKS = ("reset-password", "change-email", "approve-email-change")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def client_key(ip: str) -> str:
    """One key per client address, whatever its spelling: IPv4-mapped IPv6 is its IPv4 address, and an IPv6
    client counts by its /64 (one end user gets a whole /64 to pick addresses from)."""
    try:
        address = ipaddress.ip_address(ip.strip().split("%", 1)[0])  # without an IPv6 scope
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class _Fallback:
    """Redis counters, with this process's own counters while Redis fails."""

    def __init__(self, shared: RateLimiter, retry_after: float, clock: Callable[[], float]) -> None:
        self._shared = shared
        self._local = MemoryRateLimiter()
        self._retry_after = retry_after
        self._clock = clock
        self._down_until = 0.0

    async def call(self, op: Callable[[RateLimiter], Awaitable[float]]) -> float:
        """``op`` on the shared counters, or on this process's own while they fail."""
        if self._clock() >= self._down_until:
            try:
                return await op(self._shared)
            except BackendUnavailable:
                if self._down_until == 0.0 or self._clock() >= self._down_until + 60:
                    log.warning("rate limit counters: Redis unavailable, counting in this process meanwhile")
                self._down_until = self._clock() + self._retry_after
        return await op(self._local)


@dataclass
class Limits:
    """Per-RPC limits; ``enabled`` False turns every check into a no-op."""

    limiter: RateLimiter
    rules: Mapping[str, RpcRule] = field(default_factory=lambda: dict(DEFAULT_RULES))
    enabled: bool = True
    retry_after: float = 1.0
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._counters = _Fallback(self.limiter, self.retry_after, self.clock)

    @classmethod
    def off(cls) -> Limits:
        """No limits (services built without any, as in unit tests)."""
        return cls(MemoryRateLimiter(), enabled=False)

    async def hit(self, checks: list[Check], count: bool = True) -> float:
        """Count one call against every key, or none (see RateLimiter.hit)."""
        return await self._counters.call(lambda c: c.hit(checks, count))

    async def reset(self, key: str) -> None:
        """Forget a counter."""
        await self._counters.call(lambda c: _reset(c, key))

    async def check(self, rpc: str, ip: str | None, identifier: str | None) -> None:
        """Count one call of ``rpc``; raises RateLimited (with the wait) when a limit is spent, in which case
        nothing is counted (refused calls never extend the wait)."""
        rule = self.rules.get(rpc)
        if not self.enabled or rule is None:
            return
        checks: list[Check] = []
        if rule.ip is not None and ip:
            checks.append((f"rl:{rpc}:ip:{_digest(client_key(ip))}", rule.ip))
        if rule.identifier is not None and identifier:
            checks.append((f"rl:{rpc}:id:{_digest(identifier)}", rule.identifier))
        wait = await self.hit(checks)
        if wait > 0:
            raise RateLimited(wait)

    async def close(self) -> None:
        """Release the counters' connections."""
        await self.limiter.close()


@dataclass
class LoginGuard:
    """Brute-force protection of one account's password."""

    limits: Limits
    failures_per_ip: Limit = field(default_factory=lambda: Limit(5, 15 * 60))
    failures_per_account: Limit = field(default_factory=lambda: Limit(20, 3600))
    slowdown: float = 1.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def _keys(self, email: str, ip: str | None) -> tuple[str | None, str]:
        account = _digest(email)
        pair = f"bf:{account}:{_digest(client_key(ip))}" if ip else None
        return pair, f"bf:{account}"

    async def before(self, email: str, ip: str | None) -> None:
        """``slow_down`` then ``charge``, for a caller with nothing between them."""
        await self.slow_down(email)
        await self.charge(email, ip)

    async def slow_down(self, email: str) -> None:
        """Wait ``slowdown`` seconds when the account as a whole has had too many failures lately (a peek: counts
        nothing). Before a hashing slot is taken, so a slowed attempt holds none."""
        if not self.limits.enabled:
            return
        _, account = self._keys(email, None)
        if await self.limits.hit([(account, self.failures_per_account)], count=False) > 0:
            await self.sleep(self.slowdown)

    async def charge(self, email: str, ip: str | None) -> None:
        """Count one password check of this IP on this account, refused (RateLimited) once its budget is spent
        (counted here, atomically, so concurrent attempts cannot overshoot; a right password clears it). Called
        only when the password is about to be checked: a call refused by a rate limit or by hashing admission
        costs the owner nothing here."""
        if not self.limits.enabled:
            return
        pair, _ = self._keys(email, ip)
        if pair is None:
            return
        wait = await self.limits.hit([(pair, self.failures_per_ip)])
        if wait > 0:
            raise RateLimited(wait, "too many failed sign-ins for this account from this address")

    async def failed(self, email: str, ip: str | None) -> None:
        """A wrong password: counted against the account as a whole (the pair counted the attempt already)."""
        if not self.limits.enabled:
            return
        _, account = self._keys(email, ip)
        await self.limits.hit([(account, self.failures_per_account)])

    async def succeeded(self, email: str, ip: str | None) -> None:
        """The right password: this IP's attempts on the account are forgiven."""
        if not self.limits.enabled:
            return
        pair, _ = self._keys(email, ip)
        if pair is not None:
            await self.limits.reset(pair)


async def _reset(counters: RateLimiter, key: str) -> float:
    await counters.reset(key)
    return 0.0


@dataclass
class MailThrottle:
    """At most one message per address and purpose per ``interval`` seconds (0: no throttle)."""

    limits: Limits
    interval: float = 60.0

    async def wait(self, purpose: str, address: str) -> float:
        """0.0 when a message may go now (and it is counted), else the seconds until one may."""
        if self.interval <= 0 or not self.limits.enabled:
            return 0.0
        key = f"mail:{purpose}:{_digest(address)}"
        return await self.limits.hit([(key, Limit(1, self.interval))])
