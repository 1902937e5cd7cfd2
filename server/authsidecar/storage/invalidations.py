"""The invalidation log's payload: one JSON document per committed write, ``{"s": [[userId, storedToken],
...], "u": [[userId, version], ...]}``. Pure functions, shared by the writer and the readers; and the Postgres
channel every entry is announced on."""

from __future__ import annotations

import json

from authsidecar.domain.models import Invalidations

__all__ = ["NOTIFY_CHANNEL", "decode_payload", "encode_payload"]

# Postgres: every invalidation log entry is also announced on this channel (delivered at commit), so instances
# that LISTEN learn it within milliseconds instead of at their next poll.
NOTIFY_CHANNEL = "authsidecar_invalidation"


def encode_payload(invalidations: Invalidations) -> str:
    """Compact JSON for the ``payload`` column."""
    doc = {"s": [list(pair) for pair in invalidations.sessions], "u": [list(pair) for pair in invalidations.users]}
    return json.dumps(doc, separators=(",", ":"))


def decode_payload(raw: str, seq: int) -> Invalidations:
    """Parse the payload of log entry ``seq``; raises ValueError on a malformed one."""
    try:
        doc = json.loads(raw)
        sessions = tuple((str(user_id), str(token)) for user_id, token in doc.get("s", ()))
        users = tuple((str(user_id), str(version)) for user_id, version in doc.get("u", ()))
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError("malformed invalidation payload") from exc
    return Invalidations(sessions, users, seq)
