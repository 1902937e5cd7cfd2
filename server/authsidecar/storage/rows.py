"""Rows (keyed by logical field name) <-> domain records, driven by the field registry."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from authsidecar.domain.fields import ModelDef
from authsidecar.domain.models import Extra

__all__ = ["record", "values"]

R = TypeVar("R")
_ATTRS: dict[type[Any], frozenset[str]] = {}


def _attrs(cls: type[Any]) -> frozenset[str]:
    names = _ATTRS.get(cls)
    if names is None:
        names = _ATTRS[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


def record(cls: type[R], model: ModelDef, row: Mapping[Any, Any]) -> R:
    """Build a domain record from a row: built-in fields the record has, plus additional fields (when the record
    carries them) under ``additional``."""
    attrs = _attrs(cls)
    kwargs = {f.attr: _read(f.type, row[f.name]) for f in model.builtin if f.attr in attrs}
    if "additional" in attrs and model.additional:
        kwargs["additional"] = Extra({f.name: _read(f.type, row[f.name]) for f in model.additional})
    return cls(**kwargs)


def _read(type_: str, value: Any) -> Any:
    return bool(value) if type_ == "boolean" and value is not None else value


def values(model: ModelDef, item: Any) -> dict[str, Any]:
    """Insert values of a domain record: every built-in field it has and every additional field it carries."""
    attrs = _attrs(type(item))
    out = {f.name: getattr(item, f.attr) for f in model.builtin if f.attr in attrs}
    extra: Mapping[str, Any] = getattr(item, "additional", {})
    out.update({f.name: extra[f.name] for f in model.additional if f.name in extra})
    return out
