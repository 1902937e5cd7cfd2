"""Domain records -> protobuf messages, driven by the field registry. Never copies a credential or stored token
(the messages have no such fields), nor an additional field configured with ``returned = false``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from authsidecar.cache.codec import iso
from authsidecar.domain.fields import FieldDef, ModelDef, Registry
from authsidecar.domain.models import Session, User
from authsidecar_client.v1 import resources_pb2

__all__ = ["Converter", "struct_to_dict", "timestamp"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime) -> Timestamp:
    """Exact to the microsecond."""
    delta = value - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    seconds, rest = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=rest * 1000)


def struct_to_dict(struct: Struct) -> dict[str, Any]:
    """A request's Struct as plain Python values (numbers come back as floats)."""
    values: dict[str, Any] = MessageToDict(struct)
    return values


def _json(f: FieldDef, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime):
        return iso(value)
    if f.type == "json" and not isinstance(value, dict | list | str | int | float | bool):
        return str(value)
    return value


class _MessageBuilder:
    """Builds one message type from one model: the built-in fields the message declares, additional fields in
    its ``additional_fields`` Struct."""

    def __init__(self, model: ModelDef, message: type[Message]) -> None:
        declared = {f.name for f in message.DESCRIPTOR.fields}
        self._message = message
        self._builtin = [f for f in model.builtin if f.name in declared]
        self._extra = [f for f in model.additional if f.returned]

    def build(self, item: User | Session) -> Any:
        kwargs: dict[str, Any] = {}
        for f in self._builtin:
            value = getattr(item, f.attr)
            if f.type == "date":
                kwargs[f.name] = timestamp(value)
            elif value is not None:
                kwargs[f.name] = value
        message = self._message(**kwargs)
        if self._extra:
            values = {f.name: _json(f, item.additional.get(f.name)) for f in self._extra}
            message.additional_fields.update(values)  # type: ignore[attr-defined]
        return message


class Converter:
    """The public views of users and sessions for one configuration."""

    def __init__(self, registry: Registry | None = None) -> None:
        registry = registry or Registry()
        self._user = _MessageBuilder(registry.user, resources_pb2.User)
        self._session = _MessageBuilder(registry.session, resources_pb2.Session)

    def user(self, user: User) -> resources_pb2.User:
        """The public view of a user."""
        message: resources_pb2.User = self._user.build(user)
        return message

    def session(self, session: Session) -> resources_pb2.Session:
        """The public view of a session (no token)."""
        message: resources_pb2.Session = self._session.build(session)
        return message
