"""Rules for additional fields coming from clients: known names only, ``input = false`` refused, types and sizes
checked, defaults applied, required ones present. Violations name ``additional_fields.<name>``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from authsidecar.domain.fields import FieldDef, ModelDef
from authsidecar.domain.models import NO_EXTRA, Extra
from authsidecar.errors import AlreadyExists, FieldNotAllowed, FieldViolation, InvalidArgument, MissingField
from authsidecar.schema_config import accepts, as_date

__all__ = ["MAX_INDEXED_TEXT", "MAX_TEXT", "ExtraFieldRules"]

PREFIX = "additional_fields."
MAX_TEXT = 10_000  # characters of a string value, or of a json / array value as JSON
MAX_INDEXED_TEXT = 255  # when the column is unique or indexed (MySQL's VARCHAR key, well under Postgres' btree limit)


def _value(f: FieldDef, raw: Any) -> Any:
    """The stored form of a value already checked by ``accepts``: integral numbers as int, dates as datetime."""
    if raw is None:
        return None
    if f.type == "number":
        return int(raw)
    if f.type == "number[]":
        return [int(v) for v in raw]
    if f.type == "date":
        return as_date(raw)
    return raw


def _size_problem(f: FieldDef, value: Any) -> str | None:
    """Why a value of the right type still cannot be stored, or None."""
    if f.type in ("number", "boolean", "date"):
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    if "\x00" in text or "\\u0000" in text:
        return "must not contain NUL characters"
    limit = MAX_INDEXED_TEXT if (f.unique or f.index) else MAX_TEXT
    if len(text) > limit:
        return f"must be at most {limit} characters" + (" (as JSON)" if f.type != "string" else "")
    return None


class ExtraFieldRules:
    """Checks client-supplied additional fields of one model."""

    def __init__(self, model: ModelDef) -> None:
        self._model = model
        self._fields = {f.name: f for f in model.additional}

    @classmethod
    def none(cls) -> ExtraFieldRules:
        """Rules for a model without additional fields (every given one is refused)."""
        return cls(ModelDef("user", "user", ()))

    def _checked(self, given: Mapping[str, Any], creating: bool) -> dict[str, Any]:
        not_allowed: list[FieldViolation] = []
        missing: list[FieldViolation] = []
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
                if f.required and not creating:  # at creation, null is the same as absent: the default applies
                    missing.append(FieldViolation(PREFIX + name, "is required"))
                elif not creating:
                    out[name] = None
            elif not accepts(f.type, raw, f.bigint):
                invalid.append(FieldViolation(PREFIX + name, f"must be of type {f.type} (within its range)"))
            elif (problem := _size_problem(f, raw)) is not None:
                invalid.append(FieldViolation(PREFIX + name, problem))
            else:
                out[name] = _value(f, raw)
        if not_allowed:
            raise FieldNotAllowed(not_allowed + missing + invalid)
        if invalid:
            raise InvalidArgument(missing + invalid)
        if missing:
            raise MissingField(missing)
        return out

    def for_create(self, given: Mapping[str, Any]) -> Extra:
        """Every additional field of a new record: given values, else defaults; raises on missing required ones."""
        if not self._fields:
            if given:
                self._checked(given, creating=True)  # raises FieldNotAllowed
            return NO_EXTRA
        values = self._checked(given, creating=True)
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
        return self._checked(given, creating=False)

    def conflicting(self, constraint: str | None) -> str | None:
        """The unique additional field a violated constraint belongs to (``<table>_<column>_key``, or SQLite's
        ``<table>.<column>``), or None when it is not one of them."""
        if not constraint:
            return None
        lowered = constraint.lower()
        for f in self._model.additional:
            column = f.column.lower()
            if f.unique and lowered.endswith((f"_{column}_key", f".{column}")):
                return f.name
        return None

    def taken(self, constraint: str | None) -> AlreadyExists | None:
        """ALREADY_EXISTS naming the unique additional field behind a conflict, or None."""
        name = self.conflicting(constraint)
        if name is None:
            return None
        return AlreadyExists(f"{PREFIX}{name}: this value is already taken")
