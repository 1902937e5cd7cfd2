"""Rate limit counters in the secondary storage: GCRA (the generic cell rate algorithm), in Redis or in-process.

A limit of ``count`` per ``period`` lets ``count`` calls through at once, then one every ``period / count``: a
sliding window without buckets. Each key holds one number, the theoretical arrival time (TAT) of the next call;
a call at ``now`` is allowed when ``TAT - period < now`` (with TAT at least ``now``), and then moves TAT one
interval further. A refused call changes nothing, so refusals never extend the wait. Keys expire when their TAT
has passed (nothing is left to remember). In Redis the check and the update are one script, so the limit holds
across instances; the script takes its time from Redis (TIME), so instances' clocks do not matter.

Redis keys are ``P{ratelimit}<key>``: one Redis Cluster hash tag for every counter, so a check over several keys
(an RPC's per-IP and per-identifier limits) is one script in one slot. That puts every counter on one Cluster
node; only RPCs that hash a password or send mail are limited, so their rate is bounded by hashing cost, far
below what one node serves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from authsidecar.cache.resp import HotGetter, PipelinedGetClient, run_script
from authsidecar.cache.topology import UNAVAILABLE_ERRORS, RedisClient
from authsidecar.errors import BackendUnavailable

__all__ = ["Check", "Limit", "MemoryRateLimiter", "RateLimiter", "RedisRateLimiter"]


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


Check = tuple[str, Limit]


class RateLimiter:
    """A set of GCRA counters. ``hit`` counts one call against several keys at once, all or nothing."""

    async def hit(self, checks: Sequence[Check], count: bool = True) -> float:
        """0.0 when every key allows the call (then, if ``count``, each counts it); else the longest wait, in
        seconds, and nothing is counted."""
        raise NotImplementedError

    async def reset(self, key: str) -> None:
        """Forget a key (a success clears its failures)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections."""


# KEYS: the counters. ARGV: "1" to count (else only look), then per key its interval and period (us).
# Returns the microseconds to wait (0: allowed, and counted on every key).
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait, tats = 0, {}
for i, key in ipairs(KEYS) do
  local interval, period = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', key) or '0') or 0
  if tat < now then tat = now end
  local allow_at = tat + interval - period
  if now < allow_at and allow_at - now > wait then wait = allow_at - now end
  tats[i] = tat + interval
end
if wait > 0 or ARGV[1] ~= '1' then return wait end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%d', tats[i]), 'PX', math.ceil((tats[i] - now) / 1000))
end
return 0
"""

_ERRORS = UNAVAILABLE_ERRORS


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


class RedisRateLimiter(RateLimiter):
    """Counters shared by every instance. Redis failures are BackendUnavailable (the caller decides)."""

    def __init__(self, client: RedisClient, prefix: str, pipelined: HotGetter | None = None) -> None:
        self._redis = client
        self._pipelined = pipelined  # one server or Sentinel: the script goes over one pipelined connection
        self._prefix = prefix + "{ratelimit}"
        self._gcra = client.register_script(_GCRA)

    async def hit(self, checks: Sequence[Check], count: bool = True) -> float:
        """One script: atomic across instances, Redis's clock."""
        if not checks:
            return 0.0
        args: list[int | str] = ["1" if count else "0"]
        for _, limit in checks:
            args += [_us(limit.interval), _us(limit.period)]
        try:
            wait_us = await run_script(self._pipelined, self._gcra, [self._prefix + key for key, _ in checks], args)
        except _ERRORS as exc:
            raise BackendUnavailable("Redis is unavailable") from exc
        return int(wait_us) / 1_000_000

    async def reset(self, key: str) -> None:
        """Delete the counter."""
        try:
            if isinstance(self._pipelined, PipelinedGetClient):
                await self._pipelined.call(b"DEL", self._prefix + key)
            else:
                await self._redis.delete(self._prefix + key)
        except _ERRORS as exc:
            raise BackendUnavailable("Redis is unavailable") from exc

    async def close(self) -> None:
        """Close the connection pool (and the pipelined connection)."""
        if self._pipelined is not None:
            await self._pipelined.close()
        await self._redis.aclose()


class MemoryRateLimiter(RateLimiter):
    """Counters of this process (the embedded default: one serving process). Bounded: beyond ``max_keys`` the
    least recently counted keys are forgotten, and keys whose time has passed are swept every minute."""

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._tat: dict[str, float] = {}
        self._max = max_keys
        self._clock = clock
        self._swept_at = 0.0

    async def hit(self, checks: Sequence[Check], count: bool = True) -> float:
        """Count one call against every key, or none."""
        now = self._clock()
        wait, tats = 0.0, []
        for key, limit in checks:
            tat = max(self._tat.get(key, now), now)
            wait = max(wait, tat + limit.interval - limit.period - now)
            tats.append(tat + limit.interval)
        if wait > 0 or not count:
            return max(wait, 0.0)
        for (key, _), tat in zip(checks, tats, strict=True):
            self._tat.pop(key, None)
            self._tat[key] = tat  # re-inserted: dict order is last-use order
        self._sweep(now)
        return 0.0

    def _sweep(self, now: float) -> None:
        if len(self._tat) > self._max:
            for key in list(self._tat)[: len(self._tat) - self._max]:
                del self._tat[key]
        if now - self._swept_at >= 60:
            self._swept_at = now
            self._tat = {k: v for k, v in self._tat.items() if v > now}

    async def reset(self, key: str) -> None:
        """Forget the key."""
        self._tat.pop(key, None)
