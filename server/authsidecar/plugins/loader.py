"""Finding enabled plugins (entry points), building them from their ``[plugins.<name>]`` options, and adding
their schema to the field registry. Called by the composition root (assembly.py, the command line) with the
settings' plugin tables; it never reads the settings themselves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from authsidecar.config_error import ConfigError
from authsidecar.domain.fields import BUILTIN_MODELS, ModelDef, Registry
from authsidecar.plugins.base import Plugin, PluginSchema

if TYPE_CHECKING:
    from authsidecar.schema_config import SchemaSettings

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginTable",
    "available_plugins",
    "enabled_plugins",
    "extend_registry",
    "load_plugin",
    "plugin_registry",
]

ENTRY_POINT_GROUP = "authsidecar.plugins"


class PluginTable(Protocol):
    """One ``[plugins.<name>]`` table (the settings' ``PluginSettings`` is one)."""

    @property
    def enabled(self) -> bool:
        """Whether the plugin is on."""

    @property
    def plugin_schema(self) -> Mapping[str, Any]:
        """``[plugins.<name>.schema.<model>]``: renames of the plugin's tables and columns."""

    def options(self) -> dict[str, Any]:
        """The plugin's own options."""


def available_plugins() -> list[str]:
    """Names of the installed plugins."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_plugin(name: str, options: dict[str, Any]) -> Plugin:
    """Import and build the plugin ``name``; raises ValueError when it is not installed or rejects its options."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        installed = ", ".join(available_plugins()) or "none"
        raise ValueError(f"no plugin named {name!r} is installed (installed: {installed})")
    factory = found[0].load()
    try:
        plugin: Plugin = factory(options)
    except TypeError as exc:
        raise ValueError(f"{exc}") from None
    return plugin


def enabled_plugins(tables: Mapping[str, PluginTable]) -> list[tuple[str, Plugin]]:
    """The enabled plugins, built with their options, in configuration order; raises ConfigError."""
    plugins = []
    for name, table in tables.items():
        if not table.enabled:
            continue
        try:
            plugins.append((name, load_plugin(name, table.options())))
        except ValueError as exc:
            raise ConfigError(f"invalid configuration: plugins.{name}: {exc}") from None
    return plugins


def plugin_registry(schema: SchemaSettings, tables: Mapping[str, PluginTable]) -> Registry:
    """The field registry of the configured schema (``[schema]``) with the enabled plugins' fields and tables;
    raises ConfigError for a plugin that is missing or misconfigured."""
    registry = schema.registry()
    for name, plugin in enabled_plugins(tables):
        try:
            registry = extend_registry(registry, name, plugin.schema(), tables[name].plugin_schema, schema.use_plural)
        except ValueError as exc:
            raise ConfigError(f"invalid configuration: plugins.{name}: {exc}") from None
    return registry


RESERVED_PREFIX = "authsidecar_"  # authsidecar's own tables (invalidation log, outbox)


def _distinct_columns(model: ModelDef, where: str) -> ModelDef:
    """Raise ValueError when two fields of ``model`` share a column (a rename onto another field's column)."""
    seen: dict[str, str] = {}
    for f in model:
        other = seen.setdefault(f.column.lower(), f.name)
        if other != f.name:
            raise ValueError(f"{where}.fields: column {f.column!r} is used by {other} and {f.name}")
    return model


def _renamed(model: ModelDef, config: Any, use_plural: bool, where: str) -> ModelDef:
    """A plugin model with the configured table and column names."""
    fields = dict(getattr(config, "fields", {}) or {})
    for logical in fields:
        if logical not in model:
            raise ValueError(f"{where}.fields.{logical}: {model.name} has no field {logical!r}")
    table = getattr(config, "model_name", None) or (model.table + "s" if use_plural else model.table)
    return model.renamed(table, fields)


def extend_registry(
    registry: Registry, name: str, schema: PluginSchema, renames: Mapping[str, Any], use_plural: bool
) -> Registry:
    """The registry with a plugin's fields and tables, renamed as ``renames`` (``[plugins.<name>.schema]``) says."""
    where = f"plugins.{name}.schema"
    own = {model.name: model for model in schema.models}
    for model_name in renames:
        if model_name not in own and model_name not in schema.fields:
            raise ValueError(f"{where}.{model_name}: the plugin has no model {model_name!r} and adds no field to it")
    changes: dict[str, Any] = {}
    for core, added in schema.fields.items():
        if core not in BUILTIN_MODELS:
            raise ValueError(f"plugin {name} adds fields to {core!r}, which is not a core model")
        current = registry.model(core)
        taken = {f.name.lower() for f in current} | {f.column.lower() for f in current}
        for f in added:
            if f.name.lower() in taken:
                raise ValueError(f"plugin {name}: {core}.{f.name} clashes with a field already there")
        config = renames.get(core)
        columns = dict(getattr(config, "fields", {}) or {}) if config is not None else {}
        unknown = [logical for logical in columns if logical not in {f.name for f in added}]
        if unknown:
            raise ValueError(f"{where}.{core}.fields.{unknown[0]}: the plugin adds no field {unknown[0]!r} to {core}")
        if config is not None and getattr(config, "model_name", None):
            raise ValueError(f"{where}.{core}.model_name: rename core tables in [schema.{core}]")
        renamed = tuple(replace(f, column=columns.get(f.name, f.column), plugin=name) for f in added)
        changes[core] = _distinct_columns(
            ModelDef(current.name, current.table, (*current.fields, *renamed), current.indexes), f"{where}.{core}"
        )
    models = tuple(
        _renamed(model, renames.get(model.name), use_plural, f"{where}.{model.name}") for model in schema.models
    )
    tables = {m.table.lower() for m in registry.models()}
    for model in models:
        _distinct_columns(model, f"{where}.{model.name}")
        if model.table.lower() in tables or model.table.lower().startswith(RESERVED_PREFIX):
            raise ValueError(f"{where}.{model.name}.model_name: table {model.table!r} is already used")
        tables.add(model.table.lower())
    return replace(registry, **changes, plugin_models=(*registry.plugin_models, *models))
