"""The configured schema as a Drizzle ORM schema file (TypeScript), as Better Auth's CLI generates one, so a
TypeScript app sharing the database declares the same tables (``authsidecar generate --format drizzle``).

Rendered from the same SQLAlchemy tables as the DDL, for Postgres (``pg-core``), MySQL (``mysql-core``) or SQLite
(``sqlite-core``): columns with their types, NOT NULL, defaults, primary keys, foreign keys (ON DELETE CASCADE),
unique constraints and indexes with authsidecar's names. ``drizzle-kit generate`` on this file gives SQL that
``authsidecar migrate --check`` accepts.
"""

from __future__ import annotations

import json
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from authsidecar.storage.schema import IntId, UTCDateTime, UuidId, new_uuid_default

__all__ = ["drizzle_schema"]

_DIALECTS = {"mysql": mysql.dialect, "sqlite": sqlite.dialect}
_CORE = {
    "postgresql": ("pg-core", "pgTable"),
    "mysql": ("mysql-core", "mysqlTable"),
    "sqlite": ("sqlite-core", "sqliteTable"),
}


def _ident(name: str) -> str:
    """A TypeScript identifier for a table or column name."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name) if p]
    head, *rest = parts or ["t"]
    ident = head[0].lower() + head[1:] + "".join(p[:1].upper() + p[1:] for p in rest)
    return ident if not ident[0].isdigit() else "t" + ident


def _builder(column: sa.Column[Any], dialect: str, imports: set[str]) -> str:
    """The Drizzle column builder call for a column's type."""
    type_ = column.type
    variant = getattr(type_, "_variant_mapping", {}).get("postgresql" if dialect == "postgresql" else "mysql")
    if isinstance(type_, UuidId):
        if dialect == "postgresql":
            imports.add("uuid")
            return f'uuid("{column.name}")'
        variant = sa.String(255) if dialect == "mysql" else None
    if isinstance(type_, IntId):
        imports.add("int" if dialect == "mysql" else "integer")
        return f'{"int" if dialect == "mysql" else "integer"}("{column.name}")'
    if dialect == "mysql" and isinstance(variant, sa.String) and variant.length:
        imports.add("varchar")
        return f'varchar("{column.name}", {{ length: {variant.length} }})'
    if isinstance(type_, UTCDateTime):
        if dialect == "sqlite":
            imports.add("text")  # SQLAlchemy stores SQLite dates as text
            return f'text("{column.name}")'
        imports.add("timestamp" if dialect == "postgresql" else "datetime")
        if dialect == "postgresql":
            return f'timestamp("{column.name}", {{ withTimezone: true, mode: "date" }})'
        return f'datetime("{column.name}", {{ mode: "date", fsp: 6 }})'
    if isinstance(type_, sa.Boolean):
        if dialect == "sqlite":
            imports.add("integer")
            return f'integer("{column.name}", {{ mode: "boolean" }})'
        imports.add("boolean")
        return f'boolean("{column.name}")'
    if isinstance(type_, sa.BigInteger):
        imports.add("bigint" if dialect != "sqlite" else "integer")
        return f'bigint("{column.name}", {{ mode: "number" }})' if dialect != "sqlite" else f'integer("{column.name}")'
    if isinstance(type_, sa.Integer):
        imports.add("integer" if dialect != "mysql" else "int")
        return f'{"int" if dialect == "mysql" else "integer"}("{column.name}")'
    if isinstance(type_, sa.JSON) or isinstance(variant, postgresql.JSONB):
        if dialect == "sqlite":
            imports.add("text")
            return f'text("{column.name}", {{ mode: "json" }})'
        imports.add("jsonb" if dialect == "postgresql" else "json")
        return f'{"jsonb" if dialect == "postgresql" else "json"}("{column.name}")'
    imports.add("text")
    return f'text("{column.name}")'


def _default(column: sa.Column[Any], dialect: str, imports: set[str]) -> str:
    if column.identity is not None:
        return {
            "postgresql": ".generatedByDefaultAsIdentity()",
            "mysql": ".autoincrement()",
            "sqlite": "",  # an INTEGER PRIMARY KEY is the rowid: SQLite numbers it
        }[dialect]
    default = column.server_default
    if not isinstance(default, sa.DefaultClause):
        return ""
    arg = default.arg
    if isinstance(arg, sa.sql.elements.False_):
        return ".default(false)"
    if isinstance(arg, sa.sql.elements.TextClause):  # a literal number (the outbox's attempt counter)
        return f".default({arg.text})"
    if isinstance(arg, new_uuid_default):
        if dialect == "postgresql":
            return ".defaultRandom()"
        imports.add("sql")
        rendered = str(arg.compile(dialect=_DIALECTS[dialect]()))
        return f".default(sql`{rendered}`)"
    if dialect == "sqlite":
        imports.add("sql")
        return ".default(sql`CURRENT_TIMESTAMP`)"
    return ".defaultNow()"


def drizzle_schema(metadata: sa.MetaData, dialect: str) -> str:
    """The TypeScript source of a Drizzle schema for ``metadata`` (``dialect``: postgresql, mysql or sqlite)."""
    module, table_fn = _CORE[dialect]
    imports: set[str] = {table_fn}
    names = {table.name: _ident(table.name) for table in metadata.sorted_tables}
    blocks: list[str] = []
    for table in metadata.sorted_tables:
        lines = []
        single_unique = {
            next(iter(c.columns)).name: c.name
            for c in table.constraints
            if isinstance(c, sa.UniqueConstraint) and len(c.columns) == 1
        }
        for column in table.columns:
            call = _builder(column, dialect, imports)
            if column.primary_key:
                call += ".primaryKey()"
            elif not column.nullable:
                call += ".notNull()"
            call += _default(column, dialect, imports)
            if column.name in single_unique:
                call += f'.unique("{single_unique[column.name]}")'
            for fk in column.foreign_keys:
                target = fk.column
                call += (
                    f'.references(() => {names[target.table.name]}.{_ident(target.name)}, {{ onDelete: "cascade" }})'
                )
            lines.append(f"    {_ident(column.name)}: {call},")
        extras = []
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            imports.add("uniqueIndex" if index.unique else "index")
            columns = ", ".join(f"t.{_ident(c.name)}" for c in index.columns)
            extras.append(
                f"    {'uniqueIndex' if index.unique else 'index'}({json.dumps(str(index.name))}).on({columns}),"
            )
        body = "\n".join(lines)
        callback = f"(t) => [\n{chr(10).join(extras)}\n  ]" if extras else "() => []"
        blocks.append(
            f'export const {names[table.name]} = {table_fn}(\n  "{table.name}",\n  {{\n{body}\n  }},\n  {callback},\n);'
        )
    header = [
        "// Generated by `authsidecar generate --format drizzle`: the tables of the configured schema.",
        "// Do not edit by hand; change the authsidecar configuration and generate again.",
    ]
    core = sorted(i for i in imports if i != "sql")
    header.append(f'import {{ {", ".join(core)} }} from "drizzle-orm/{module}";')
    if "sql" in imports:
        header.append('import { sql } from "drizzle-orm";')
    return "\n".join(header) + "\n\n" + "\n\n".join(blocks) + "\n"
