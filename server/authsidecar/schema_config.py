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
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from authsidecar.domain.fields import BUILTIN_MODELS, FieldDef, FieldType, ModelDef, Registry

__all__ = ["AdditionalField", "ModelSchema", "SchemaSettings"]

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
        if self.default_value is not None and not accepts(self.type, self.default_value):
            raise ValueError(f"default_value does not match type {self.type}")
        if self.required and not self.input and self.default_value is None:
            raise ValueError("a required field with input = false needs a default_value (nobody could set it)")
        if self.field_name is not None and not _NAME.match(self.field_name):
            raise ValueError("field_name must be a plain identifier")
        return self


def accepts(type_: FieldType, value: Any) -> bool:
    """Whether ``value`` (as parsed from TOML or JSON) is of the field type."""
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()
    if type_ == "boolean":
        return isinstance(value, bool)
    if type_ == "date":
        return isinstance(value, datetime) or (isinstance(value, str) and _parses_as_date(value))
    if type_ == "string[]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if type_ == "number[]":
        return isinstance(value, list) and all(accepts("number", v) for v in value)
    return True  # json: anything JSON can hold


def _parses_as_date(value: str) -> bool:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.tzinfo is not None


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
            for extra, spec in config.additional_fields.items():
                if extra in builtin:
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
        models = {name: self.model(name) for name in BUILTIN_MODELS}
        return Registry(**models, generate_id=str(self.generate_id))
