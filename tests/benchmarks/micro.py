"""In-process costs of the checks a cache hit pays since the revocation work, measured in the benchmark's own run:
the coherence rules (services/coherence.py) and, on a memo miss, the document MAC (cache/integrity.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from authsidecar.cache.codec import encode_session
from authsidecar.cache.integrity import DocumentSigner, derive_key
from authsidecar.cache.memory import NullSessionCache
from authsidecar.domain.models import Invalidations, Session, SessionWithUser, User
from authsidecar.security.tokens import HashedTokenPolicy
from authsidecar.services.coherence import CacheCoherence

__all__ = ["coherence_costs"]


def _per_call(fn: Callable[[], object], calls: int = 200_000) -> float:
    """Best of 5 runs, seconds per call."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def _entry() -> SessionWithUser:
    now = datetime.now(UTC)
    user = User("u" * 32, "Ada", "ada@example.com", True, None, now - timedelta(days=3), now - timedelta(days=1))
    session = Session("s" * 32, user.id, "a" * 64, now + timedelta(days=7), now, now, "203.0.113.7", "bench")
    return SessionWithUser(session, user, time.time())


def coherence_costs() -> dict[str, float]:
    """Seconds per call: a dict lookup (the baseline), ``trusted()`` with 10,000 remembered revocations and
    1,000 changed users, and a MAC verification of a real-size document."""
    coherence = CacheCoherence(NullSessionCache(), HashedTokenPolicy())
    coherence.note(
        Invalidations(tuple(("x", f"{i:064x}") for i in range(10_000)), tuple((f"user{i}", i) for i in range(1000)), 1)
    )

    class _NoLog:
        async def invalidation_cursor(self) -> int:
            return 0

        async def database_time(self) -> float:
            return time.time()

        async def invalidations_after(self, seq: int, limit: int) -> list[tuple[int, Invalidations]]:
            return []

        async def invalidations_since(self, since: datetime, upto: int) -> list[tuple[int, Invalidations]]:
            return []

        async def listen_for_invalidations(self, wake: Callable[[], None]) -> None:
            return None

    asyncio.run(coherence.catch_up(_NoLog()))
    entry = _entry()
    assert coherence.trusted(entry)
    lookup: dict[str, SessionWithUser] = {entry.session.stored_token: entry}
    signer = DocumentSigner(derive_key("b" * 32, "cache-documents"))
    name = "authsidecar:{session:" + "a" * 64 + "}"
    value = signer.sign(name, encode_session(replace(entry, checked_at=time.time())))
    return {
        "dict lookup (baseline)": _per_call(lambda: lookup.get(entry.session.stored_token)),
        "coherence trusted()": _per_call(lambda: coherence.trusted(entry)),
        "document MAC verify (memo miss only)": _per_call(lambda: signer.verify(name, value), 50_000),
    }
