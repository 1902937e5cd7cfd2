"""Wall clock at millisecond precision (what Better Auth stores and what JSON dates carry)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "utc_now"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Now, UTC, truncated to milliseconds so SQL rows and cached JSON agree exactly."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
