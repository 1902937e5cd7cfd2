"""Secondary storage for sessions: Redis, in-process, or none; plus a fail-open wrapper for Redis."""

from authsidecar.cache.memory import MemorySessionCache, NullSessionCache
from authsidecar.cache.redis import RedisSessionCache
from authsidecar.cache.resilient import ResilientSessionCache

__all__ = ["MemorySessionCache", "NullSessionCache", "RedisSessionCache", "ResilientSessionCache"]
