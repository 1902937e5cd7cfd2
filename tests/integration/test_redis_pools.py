"""Redis pools are bounded: callers beyond ``max_connections`` wait for a connection instead of opening more."""

from __future__ import annotations

import asyncio
import secrets

import redis

from authsidecar.cache.topology import connect_redis
from tests.conftest import REDIS_URL


def _connections_named(observer: redis.Redis, name: str) -> set[int]:
    """The ids of the connections Redis has open under this client name."""
    return {int(c["id"]) for c in observer.client_list() if c.get("name") == name}


async def test_a_pool_opens_at_most_max_connections() -> None:
    name = f"pool-test-{secrets.token_hex(4)}"
    client = connect_redis(f"{REDIS_URL}?client_name={name}", 2.0, max_connections=2)
    observer = redis.Redis.from_url(REDIS_URL)
    key = f"pool-test:{secrets.token_hex(4)}"
    try:
        # Six calls that each hold a connection for 0.2 s: two at a time, in three waves.
        calls = asyncio.gather(*(client.blpop([key], timeout=0.2) for _ in range(6)))
        seen: set[int] = set()
        most = 0
        while not calls.done():  # what Redis sees while they run
            connections = await asyncio.to_thread(_connections_named, observer, name)
            seen |= connections
            most = max(most, len(connections))
        assert await calls == [None] * 6
        # Two connections at once, never more, and the same two all along: the later waves waited for them.
        assert most == 2 and len(seen) == 2, (most, seen)
    finally:
        observer.close()
        await client.aclose()
