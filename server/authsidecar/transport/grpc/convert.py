"""Domain records -> protobuf messages. Never copies a credential or stored token."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from authsidecar.domain.models import Session, User
from authsidecar_client.v1 import resources_pb2

__all__ = ["session_to_proto", "timestamp", "user_to_proto"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime) -> Timestamp:
    """Exact to the microsecond."""
    delta = value - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    seconds, rest = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=rest * 1000)


def user_to_proto(user: User) -> resources_pb2.User:
    """The public view of a user."""
    return resources_pb2.User(
        id=user.id,
        name=user.name,
        email=user.email,
        email_verified=user.email_verified,
        image=user.image or "",
        created_at=timestamp(user.created_at),
        updated_at=timestamp(user.updated_at),
    )


def session_to_proto(session: Session) -> resources_pb2.Session:
    """The public view of a session (no token)."""
    return resources_pb2.Session(
        id=session.id,
        user_id=session.user_id,
        expires_at=timestamp(session.expires_at),
        created_at=timestamp(session.created_at),
        updated_at=timestamp(session.updated_at),
        ip_address=session.ip_address or "",
        user_agent=session.user_agent or "",
    )
