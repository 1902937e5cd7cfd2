"""Redis pools are bounded: callers beyond ``max_connections`` wait for a connection instead of opening more."""

from __future__ import annotations

import asyncio
import secrets

import redis

from authsidecar.cache.topology import connect_redis
from tests.conftest import REDIS_URL


def _clients_named(name: str) -> int:
    observer = redis.Redis.from_url(REDIS_URL)
    try:
        return sum(1 for c in observer.client_list() if c.get("name") == name)
    finally:
        observer.close()


async def test_a_pool_opens_at_most_max_connections() -> None:
    name = f"pool-test-{secrets.token_hex(4)}"
    client = connect_redis(f"{REDIS_URL}?client_name={name}", 2.0, max_connections=2)
    key = f"pool-test:{secrets.token_hex(4)}"
    try:
        # Six calls that each hold a connection for 0.2 s: two at a time, in three waves.
        calls = asyncio.gather(*(client.blpop([key], timeout=0.2) for _ in range(6)))
        await asyncio.sleep(0.1)
        during = await asyncio.to_thread(_clients_named, name)
        started = asyncio.get_running_loop().time()
        assert await calls == [None] * 6
        assert asyncio.get_running_loop().time() - started > 0.2  # the later waves waited
        assert during == 2
    finally:
        await client.aclose()
