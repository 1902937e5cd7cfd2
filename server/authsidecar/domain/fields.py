"""The field registry: every field of every model, built-in or configured, is defined once here.

A ``FieldDef`` drives the column (storage/schema.py), row mapping (storage/rows.py), inserts and updates
(storage/unit_of_work/), the cached document (cache/codec.py) and the API (transport/grpc/convert.py). Built-in
fields follow Better Auth 1.7; additional fields come from the ``[schema.<model>.additional_fields]``
configuration.

Names: ``name`` is the logical name, snake_case for built-in fields (``email_verified``: configuration keys,
proto fields, Python attributes) and as configured for additional fields; ``key`` is Better Auth's name
(``emailVerified``), used as the default column name and as the key in cached documents; ``column`` is the
physical column, after ``fields = {...}`` renames.

To add a built-in field: its ``FieldDef`` below, its attribute on the domain record (domain/models.py), and its
proto field (proto/authsidecar/v1/resources.proto).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

__all__ = [
    "BUILTIN_MODELS",
    "FIELD_TYPES",
    "FieldDef",
    "FieldType",
    "ModelDef",
    "Registry",
]

FieldType = Literal["string", "number", "boolean", "date", "json", "string[]", "number[]"]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
DbDefault = Literal["now", "false"]


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One field of a model."""

    name: str
    type: FieldType
    key: str = ""
    column: str = ""
    attr: str = ""  # the domain record's attribute, when it differs from ``name``
    required: bool = True
    unique: bool = False
    index: bool = False
    primary_key: bool = False
    references: tuple[str, str] | None = None  # (model, field), ON DELETE CASCADE
    db_default: DbDefault | None = None
    default: Any = None  # additional fields: applied by the server when a value is absent
    input: bool = True  # additional fields: clients may set it at sign-up / update
    returned: bool = True  # additional fields: sent to clients
    builtin: bool = True
    bigint: bool = False
    plugin: str = ""  # the plugin that added it (its own state: hooks may not set it)

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", _camel(self.name) if self.builtin else self.name)
        if not self.column:
            object.__setattr__(self, "column", self.key)
        if not self.attr:
            object.__setattr__(self, "attr", self.name)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@dataclass(frozen=True, slots=True)
class ModelDef:
    """A model (table): its physical name, fields in column order, and secondary indexes (field names)."""

    name: str
    table: str
    fields: tuple[FieldDef, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    _by_name: dict[str, FieldDef] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({f.name: f for f in self.fields})

    def __getitem__(self, name: str) -> FieldDef:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[FieldDef]:
        return iter(self.fields)

    @property
    def builtin(self) -> tuple[FieldDef, ...]:
        """The fields Better Auth defines."""
        return tuple(f for f in self.fields if f.builtin)

    @property
    def additional(self) -> tuple[FieldDef, ...]:
        """The configured extra fields."""
        return tuple(f for f in self.fields if not f.builtin)

    def renamed(self, table: str, columns: Mapping[str, str], extra: tuple[FieldDef, ...] = ()) -> ModelDef:
        """The same model with another table name, renamed columns and additional fields."""
        fields = tuple(replace(f, column=columns.get(f.name, f.column)) for f in (*self.fields, *extra))
        indexes = self.indexes + tuple((f.name,) for f in extra if f.index and not f.unique)
        return ModelDef(self.name, table, fields, indexes)


def _f(name: str, type_: FieldType, **kwargs: Any) -> FieldDef:
    return FieldDef(name, type_, **kwargs)


_ID = _f("id", "string", primary_key=True)
_CREATED = _f("created_at", "date", db_default="now")
_UPDATED = _f("updated_at", "date", db_default="now")


def _user_id() -> FieldDef:
    return _f("user_id", "string", references=("user", "id"))


BUILTIN_MODELS: dict[str, ModelDef] = {
    "user": ModelDef(
        "user",
        "user",
        (
            _ID,
            _f("name", "string"),
            _f("email", "string", unique=True),
            _f("email_verified", "boolean", db_default="false"),
            _f("image", "string", required=False),
            _CREATED,
            _UPDATED,
        ),
        (("created_at",),),
    ),
    "session": ModelDef(
        "session",
        "session",
        (
            _ID,
            _f("expires_at", "date"),
            _f("token", "string", unique=True, attr="stored_token"),
            _CREATED,
            _UPDATED,
            _f("ip_address", "string", required=False),
            _f("user_agent", "string", required=False),
            _user_id(),
        ),
        (("user_id",), ("expires_at",)),
    ),
    "account": ModelDef(
        "account",
        "account",
        (
            _ID,
            _f("account_id", "string"),
            _f("provider_id", "string"),
            _user_id(),
            _f("access_token", "string", required=False),
            _f("refresh_token", "string", required=False),
            _f("id_token", "string", required=False),
            _f("access_token_expires_at", "date", required=False),
            _f("refresh_token_expires_at", "date", required=False),
            _f("scope", "string", required=False),
            _f("password", "string", required=False),
            _CREATED,
            _UPDATED,
        ),
        (("user_id",), ("provider_id", "account_id")),
    ),
    "verification": ModelDef(
        "verification",
        "verification",
        (
            _ID,
            _f("identifier", "string"),
            _f("value", "string"),
            _f("expires_at", "date"),
            _CREATED,
            _UPDATED,
        ),
        (("identifier",), ("expires_at",)),
    ),
}


@dataclass(frozen=True, slots=True)
class Registry:
    """The four models as configured, and the tables of enabled plugins (``plugin_models``)."""

    user: ModelDef = BUILTIN_MODELS["user"]
    session: ModelDef = BUILTIN_MODELS["session"]
    account: ModelDef = BUILTIN_MODELS["account"]
    verification: ModelDef = BUILTIN_MODELS["verification"]
    generate_id: str = "random"
    plugin_models: tuple[ModelDef, ...] = ()

    @property
    def uuid_ids(self) -> bool:
        """Ids are UUIDs (native ``uuid`` columns on Postgres, as Better Auth creates them)."""
        return self.generate_id in ("uuid", "uuid7", "false")

    def models(self) -> tuple[ModelDef, ...]:
        """In creation order (referenced tables first): the core models, then the plugins'."""
        return (self.user, self.session, self.account, self.verification, *self.plugin_models)

    def model(self, name: str) -> ModelDef:
        """A model by logical name (core or plugin)."""
        if name in BUILTIN_MODELS:
            model: ModelDef = getattr(self, name)
            return model
        for model in self.plugin_models:
            if model.name == name:
                return model
        raise KeyError(name)
