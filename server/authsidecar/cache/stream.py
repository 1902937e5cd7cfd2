"""After events published to a Redis Stream, for consumers that pull (XREAD, or XREADGROUP with a consumer group).

Each stream entry has the fields ``id`` (the event id: deliveries are at least once, deduplicate on it), ``type``
(``user.create``, ...) and ``event`` (the event's JSON, as the webhooks get it). The stream is capped near
``max_length`` entries (XADD MAXLEN ~): consumers that fall further behind lose the oldest. One key: in a Redis Cluster the stream lives
on the node of its slot.
"""

from __future__ import annotations

import json
from typing import Any

from authsidecar.cache.topology import RedisClient

__all__ = ["RedisEventStream"]


class RedisEventStream:
    """XADD to one stream key."""

    def __init__(self, client: RedisClient, key: str, max_length: int) -> None:
        self.key = key
        self._client = client
        self._max_length = max_length

    async def publish(self, event: dict[str, Any]) -> None:
        """Append one event; raises on a Redis error (the outbox retries)."""
        fields: dict[Any, Any] = {
            "id": str(event.get("id", "")),
            "type": str(event.get("type", "")),
            "event": json.dumps(event, separators=(",", ":"), default=str),
        }
        await self._client.xadd(self.key, fields, maxlen=self._max_length, approximate=True)

    async def close(self) -> None:
        """Release the connections."""
        await self._client.aclose()
