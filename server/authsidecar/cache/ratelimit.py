"""Rate limit counters in the secondary storage: GCRA (the generic cell rate algorithm), in Redis or in-process.

A limit of ``count`` per ``period`` lets ``count`` calls through at once, then one every ``period / count``: a
sliding window without buckets. Each key holds one number, the theoretical arrival time (TAT) of the next call;
a call at ``now`` is allowed when ``TAT - period < now`` (with TAT at least ``now``), and then moves TAT one
interval further. A refused call changes nothing, so refusals never extend the wait. Keys expire when their TAT
has passed (nothing is left to remember). In Redis the check and the update are one script, so the limit holds
across instances; the script takes its time from Redis (TIME), so instances' clocks do not matter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from authsidecar.errors import BackendUnavailable

__all__ = ["Limit", "MemoryRateLimiter", "RateLimiter", "RedisRateLimiter"]


@dataclass(frozen=True, slots=True)
class Limit:
    """``count`` calls per ``period`` seconds."""

    count: int
    period: float

    @property
    def interval(self) -> float:
        """Seconds between calls once the burst is spent."""
        return self.period / self.count

    @classmethod
    def parse(cls, text: str) -> Limit:
        """``"3/10s"``, ``"5/15m"``, ``"100/1h"``, ``"10/60"`` (seconds)."""
        count, slash, period = text.replace(" ", "").partition("/")
        units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
        scale = units.get(period[-1:], 1) if period else 1
        number = period[:-1] if period[-1:] in units else period
        try:
            limit = cls(int(count), float(number) * scale)
        except ValueError:
            raise ValueError(f'expected "<count>/<period>" such as "3/10s", got {text!r}') from None
        if not slash or limit.count < 1 or not 0 < limit.period <= 30 * 86_400:
            raise ValueError(f'expected "<count>/<period>" such as "3/10s", got {text!r}')
        return limit


class RateLimiter:
    """A set of GCRA counters; ``hit`` returns 0 when the call may go on, else the seconds to wait."""

    async def hit(self, key: str, limit: Limit) -> float:
        """Count one call against ``key``; 0.0 when allowed, else how long until one would be."""
        raise NotImplementedError

    async def peek(self, key: str, limit: Limit) -> float:
        """What ``hit`` would answer, without counting."""
        raise NotImplementedError

    async def reset(self, key: str) -> None:
        """Forget a key (a success clears its failures)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections."""


# KEYS: the counter. ARGV: interval (us), period (us), "1" to count (else only look).
# Returns the microseconds to wait (0: allowed).
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local allow_at = tat + interval - period
if now < allow_at then return allow_at - now end
if ARGV[3] == '1' then
  local new_tat = tat + interval
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
end
return 0
"""

_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class RedisRateLimiter(RateLimiter):
    """Counters shared by every instance. Redis failures are BackendUnavailable (the caller decides)."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._gcra = client.register_script(_GCRA)

    async def _run(self, key: str, limit: Limit, count: bool) -> float:
        interval_us = int(limit.interval * 1_000_000)
        try:
            wait_us = await self._gcra(
                keys=[self._prefix + key], args=[interval_us, int(limit.period * 1_000_000), "1" if count else "0"]
            )
        except _ERRORS as exc:
            raise BackendUnavailable("Redis is unavailable") from exc
        return int(wait_us) / 1_000_000

    async def hit(self, key: str, limit: Limit) -> float:
        """Count one call (one script, atomic across instances)."""
        return await self._run(key, limit, True)

    async def peek(self, key: str, limit: Limit) -> float:
        """Look without counting."""
        return await self._run(key, limit, False)

    async def reset(self, key: str) -> None:
        """Delete the counter."""
        try:
            await self._redis.delete(self._prefix + key)
        except _ERRORS as exc:
            raise BackendUnavailable("Redis is unavailable") from exc

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


class MemoryRateLimiter(RateLimiter):
    """Counters of this process (the embedded default: one serving process). Bounded: expired keys are dropped
    as they are met and in sweeps, and beyond ``max_keys`` the oldest are forgotten (fail open for them)."""

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._tat: dict[str, float] = {}
        self._max = max_keys
        self._clock = clock
        self._swept_at = 0.0

    def _check(self, key: str, limit: Limit, count: bool) -> float:
        now = self._clock()
        tat = max(self._tat.get(key, now), now)
        allow_at = tat + limit.interval - limit.period
        if now < allow_at:
            return allow_at - now
        if count:
            self._tat.pop(key, None)
            self._tat[key] = tat + limit.interval  # re-inserted: dict order is last-use order
            self._sweep(now)
        return 0.0

    def _sweep(self, now: float) -> None:
        if len(self._tat) > self._max:
            for key in list(self._tat)[: len(self._tat) - self._max]:
                del self._tat[key]
        if now - self._swept_at >= 60:
            self._swept_at = now
            self._tat = {k: v for k, v in self._tat.items() if v > now}

    async def hit(self, key: str, limit: Limit) -> float:
        """Count one call."""
        return self._check(key, limit, True)

    async def peek(self, key: str, limit: Limit) -> float:
        """Look without counting."""
        return self._check(key, limit, False)

    async def reset(self, key: str) -> None:
        """Forget the key."""
        self._tat.pop(key, None)
