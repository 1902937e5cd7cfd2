"""The ``[schema]`` section of the configuration (Better Auth's database options, in snake_case) and the field
registry it produces.

```toml
[schema]
use_plural = false            # user -> users, session -> sessions, ... (an explicit model_name wins)
generate_id = "random"        # "random" | "uuid" | "uuid7" | "serial" | false | "pkg.module:function"
[schema.user]
model_name = "members"
fields = { email = "email_address", name = "full_name" }
[schema.user.additional_fields.role]
type = "string"               # string | number | boolean | date | json | string[] | number[]
required = false
default_value = "member"
input = false
returned = true
unique = false
index = false
```
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from authsidecar.domain.fields import BUILTIN_MODELS, FieldDef, FieldType, ModelDef, Registry

__all__ = ["AdditionalField", "ModelSchema", "SchemaSettings", "accepts", "as_date"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_RESERVED = {"additional_fields", "token", "password"}  # request / response fields the API already uses


class AdditionalField(BaseModel):
    """Better Auth's FieldAttributes for an additional field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: FieldType
    required: bool = True
    default_value: Any = None
    input: bool = True
    returned: bool = True
    unique: bool = False
    index: bool = False
    field_name: str | None = Field(None, description="the column name (default: the field's name)")
    bigint: bool = False

    @model_validator(mode="after")
    def _check(self) -> AdditionalField:
        if self.default_value is not None and not accepts(self.type, self.default_value, self.bigint):
            raise ValueError(f"default_value does not match type {self.type}")
        if self.required and not self.input and self.default_value is None:
            raise ValueError("a required field with input = false needs a default_value (nobody could set it)")
        if self.field_name is not None and not _NAME.match(self.field_name):
            raise ValueError("field_name must be a plain identifier")
        return self


INT32 = 2**31 - 1
INT64 = 2**63 - 1


def accepts(type_: FieldType, value: Any, bigint: bool = False) -> bool:
    """Whether ``value`` (as parsed from TOML or JSON) is of the field type and fits its column: numbers are
    integers within 32 bits (64 with ``bigint``; array items 64), dates carry a zone and stay within the years
    1-9999 in UTC, and json holds only JSON values."""
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "number":
        return _integer(value, INT64 if bigint else INT32)
    if type_ == "boolean":
        return isinstance(value, bool)
    if type_ == "date":
        return as_date(value) is not None
    if type_ == "string[]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if type_ == "number[]":
        return isinstance(value, list) and all(_integer(v, INT64) for v in value)
    return _is_json(value)


def _integer(value: Any, bound: int) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not value.is_integer():
        return False
    return -bound - 1 <= value <= bound


def as_date(value: Any) -> datetime | None:
    """The aware UTC datetime of a date value, or None when it has no zone or leaves the representable range."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return None


def _is_json(value: Any, depth: int = 0) -> bool:
    if depth > 32:
        return False
    if value is None or isinstance(value, str | bool | int | float):
        return not isinstance(value, float) or (value == value and abs(value) != float("inf"))
    if isinstance(value, list):
        return all(_is_json(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v, depth + 1) for k, v in value.items())
    return False


class ModelSchema(BaseModel):
    """Renames and extra fields of one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    additional_fields: dict[str, AdditionalField] = Field(default_factory=dict)

    @field_validator("model_name")
    @classmethod
    def _check_table(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError("must be a plain identifier (letters, digits, underscores; at most 63)")
        return value

    @field_validator("fields")
    @classmethod
    def _check_columns(cls, value: dict[str, str]) -> dict[str, str]:
        for logical, column in value.items():
            if not _NAME.match(column):
                raise ValueError(f"{logical} = {column!r}: a column name must be a plain identifier")
        return value

    @field_validator("additional_fields")
    @classmethod
    def _check_names(cls, value: dict[str, AdditionalField]) -> dict[str, AdditionalField]:
        for name in value:
            if not _NAME.match(name) or name in _RESERVED:
                raise ValueError(f"{name!r} cannot be a field name")
        return value


class SchemaSettings(BaseModel):
    """The whole ``[schema]`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_plural: bool = False
    generate_id: str | bool = "random"
    user: ModelSchema = Field(default_factory=ModelSchema)
    session: ModelSchema = Field(default_factory=ModelSchema)
    account: ModelSchema = Field(default_factory=ModelSchema)
    verification: ModelSchema = Field(default_factory=ModelSchema)

    @field_validator("generate_id")
    @classmethod
    def _check_generate_id(cls, value: str | bool) -> str | bool:
        if value is True:
            return "random"
        if value is False:
            return "false"
        if value in ("random", "uuid", "uuid7", "serial"):
            return value
        module, sep, function = value.partition(":")
        if not sep or not module or not function.isidentifier():
            raise ValueError('expected "random", "uuid", "uuid7", "serial", false or "package.module:function"')
        from authsidecar.security.ids import id_generator  # imports it: every command refuses one that is missing

        id_generator(value)
        return value

    @model_validator(mode="after")
    def _check_models(self) -> SchemaSettings:
        tables: dict[str, str] = {}
        for name, builtin in BUILTIN_MODELS.items():
            config: ModelSchema = getattr(self, name)
            for logical in config.fields:
                if logical not in builtin:
                    raise ValueError(f"{name}.fields.{logical}: {name} has no field {logical!r}")
            if config.additional_fields and name not in ("user", "session"):
                raise ValueError(f"{name}.additional_fields: only user and session take additional fields")
            taken = {n.lower() for f in builtin for n in (f.name, f.key)}  # logical names and cached-document keys
            for extra, spec in config.additional_fields.items():
                if extra.lower() in taken:
                    raise ValueError(f"{name}.additional_fields.{extra}: {extra!r} is a built-in field")
                if name == "session" and spec.required and spec.default_value is None:
                    raise ValueError(
                        f"session.additional_fields.{extra}: clients cannot set session fields; give it a"
                        " default_value or make it required = false"
                    )
            table = self.table_name(name)
            if table in tables:
                raise ValueError(f"{name}.model_name: {table!r} is already the table of {tables[table]}")
            tables[table] = name
            model = self.model(name)
            columns: dict[str, str] = {}
            for f in model:
                if f.column.lower() in columns:
                    raise ValueError(f"{name}: column {f.column!r} is used by {columns[f.column.lower()]} and {f.name}")
                columns[f.column.lower()] = f.name
        return self

    def table_name(self, model: str) -> str:
        """The physical table of a model."""
        config: ModelSchema = getattr(self, model)
        if config.model_name:
            return config.model_name
        return model + "s" if self.use_plural else model

    def model(self, name: str) -> ModelDef:
        """One model as configured."""
        config: ModelSchema = getattr(self, name)
        extra = tuple(
            FieldDef(
                field_name,
                spec.type,
                column=spec.field_name or "",
                required=spec.required,
                unique=spec.unique,
                index=spec.index,
                default=spec.default_value,
                input=spec.input,
                returned=spec.returned,
                builtin=False,
                bigint=spec.bigint,
            )
            for field_name, spec in config.additional_fields.items()
        )
        return BUILTIN_MODELS[name].renamed(self.table_name(name), config.fields, extra)

    def registry(self) -> Registry:
        """The field registry for this configuration."""
        return Registry(
            user=self.model("user"),
            session=self.model("session"),
            account=self.model("account"),
            verification=self.model("verification"),
            generate_id=str(self.generate_id),
        )
