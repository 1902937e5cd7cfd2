"""The hot path's GET on a Redis Cluster: routed by slot to one pipelined connection per primary.

redis-py's cluster client spends much more CPU per GET than the pipelined client of resp.py (the benchmark's
topology rows: ~286 against ~230 us of server CPU per cache hit, the whole call included). Here the key's slot is
looked up in redis-py's own slot map (no I/O) and the GET goes over that primary's PipelinedGetClient. redis-py
stays in charge of the topology: when a node answers with a redirection (MOVED/ASK), refuses (not a primary any
more) or cannot be reached, that GET is sent once more through redis-py, which follows the redirection or
reconnects and refreshes its slot map; the next GET is routed by the new map.
"""

from __future__ import annotations

import asyncio

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from authsidecar.cache.resp import PipelinedGetClient

__all__ = ["SlotRoutedGetClient"]


class SlotRoutedGetClient:
    """GET by slot over a pipelined connection per primary; redis-py's client for everything unusual."""

    def __init__(self, cluster: RedisCluster, node_url: str, timeout: float) -> None:
        """``node_url``: a redis:// or rediss:// URL with the credentials and TLS options of the nodes (its host is
        ignored: each node's comes from the slot map)."""
        self._cluster = cluster
        self._node_url = node_url
        self._timeout = timeout
        self._nodes: dict[tuple[str, int], PipelinedGetClient] = {}

    async def get(self, key: str) -> bytes | None:
        """The value of ``key`` or None; raises redis-py's errors, or TimeoutError."""
        node = self._primary_of(key)
        if node is not None:
            try:
                return await node.get(key)
            except (ResponseError, RedisConnectionError):
                pass  # moved, failed over or gone: redis-py follows it and refreshes its map
        value = await self._cluster.get(key)
        assert value is None or isinstance(value, bytes)
        return value

    async def get_many(self, *keys: str) -> list[bytes | None]:
        """The values of several keys (each routed by its own slot)."""
        return list(await asyncio.gather(*(self.get(key) for key in keys)))

    def _primary_of(self, key: str) -> PipelinedGetClient | None:
        """The pipelined client of the primary serving the key's slot; None before redis-py has loaded the map."""
        try:
            node = self._cluster.get_node_from_key(key)
        except Exception:  # the map is not loaded yet, or the slot is not covered: redis-py decides
            return None
        if node is None:
            return None
        address = (node.host, int(node.port))
        client = self._nodes.get(address)
        if client is None:
            client = self._nodes[address] = PipelinedGetClient(
                self._node_url, self._timeout, locate=lambda: _at(address)
            )
        return client

    def connected_to(self) -> set[int]:
        """The ports of the nodes this client has an open connection to (for tests and diagnostics)."""
        return {port for (_, port), client in self._nodes.items() if client.connected}

    async def close(self) -> None:
        """Close every node's connection."""
        for client in self._nodes.values():
            await client.close()
        self._nodes.clear()


async def _at(address: tuple[str, int]) -> tuple[str, int]:
    return address
