"""Rules for additional fields coming from clients: known names only, ``input = false`` refused, types checked,
defaults applied, required ones present. Violations name ``additional_fields.<name>``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from authsidecar.domain.fields import FieldDef, ModelDef
from authsidecar.domain.models import NO_EXTRA, Extra
from authsidecar.errors import FieldNotAllowed, FieldViolation, InvalidArgument, MissingField
from authsidecar.schema_config import accepts

__all__ = ["ExtraFieldRules"]

PREFIX = "additional_fields."


def _value(f: FieldDef, raw: Any) -> Any:
    """The stored form of a value already checked by ``accepts``: integral numbers as int, dates as datetime."""
    if raw is None:
        return None
    if f.type == "number":
        return int(raw)
    if f.type == "number[]":
        return [int(v) for v in raw]
    if f.type == "date" and isinstance(raw, str):
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return raw


class ExtraFieldRules:
    """Checks client-supplied additional fields of one model."""

    def __init__(self, model: ModelDef) -> None:
        self._model = model
        self._fields = {f.name: f for f in model.additional}

    @classmethod
    def none(cls) -> ExtraFieldRules:
        """Rules for a model without additional fields (every given one is refused)."""
        return cls(ModelDef("user", "user", ()))

    def _checked(self, given: Mapping[str, Any]) -> dict[str, Any]:
        not_allowed: list[FieldViolation] = []
        invalid: list[FieldViolation] = []
        out: dict[str, Any] = {}
        for name, raw in given.items():
            f = self._fields.get(name)
            if f is None:
                not_allowed.append(
                    FieldViolation(PREFIX + name, f"{self._model.name} has no additional field {name!r}")
                )
            elif not f.input:
                not_allowed.append(FieldViolation(PREFIX + name, "is set by the server, not by clients"))
            elif raw is None:
                if f.required and f.default is None:
                    invalid.append(FieldViolation(PREFIX + name, "is required"))
                out[name] = None
            elif not accepts(f.type, raw):
                invalid.append(FieldViolation(PREFIX + name, f"must be of type {f.type}"))
            else:
                out[name] = _value(f, raw)
        if not_allowed:
            raise FieldNotAllowed(not_allowed + invalid)
        if invalid:
            raise InvalidArgument(invalid)
        return out

    def for_create(self, given: Mapping[str, Any]) -> Extra:
        """Every additional field of a new record: given values, else defaults; raises on missing required ones."""
        if not self._fields:
            if given:
                self._checked(given)  # raises FieldNotAllowed
            return NO_EXTRA
        values = self._checked(given)
        missing: list[FieldViolation] = []
        for name, f in self._fields.items():
            if values.get(name) is None:
                values[name] = _value(f, f.default)
                if values[name] is None and f.required:
                    missing.append(FieldViolation(PREFIX + name, "is required"))
        if missing:
            raise MissingField(missing)
        return Extra(values)

    def for_update(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The changes to apply (only the given fields); null clears an optional field."""
        return self._checked(given)
