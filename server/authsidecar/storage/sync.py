"""Additive schema synchronisation: compare the configured schema with a live database and plan what to add.

The plan creates missing tables, columns, indexes and unique indexes, and adds missing column defaults; it never
drops, renames or rewrites anything. Differences it cannot resolve safely (a column of another type, a required
column missing from a table that has rows, an index name taken by other columns) are *problems*: nothing is
applied and each names the column and the SQL to run by hand. Columns and tables the configuration does not
know are left alone (they belong to the application).

This is what ``migrate`` applies, what ``migrate --check`` and ``serve`` verify, and what makes a database created
by Better Auth, by Drizzle or by hand adoptable: it only adds what is missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

from authsidecar.storage.schema import SEEDED

__all__ = ["Plan", "SchemaProblem", "Step", "apply", "create_script", "plan", "sync_tables"]


class SchemaProblem(RuntimeError):
    """The database differs from the schema in a way that cannot be fixed by adding things."""


@dataclass(frozen=True, slots=True)
class Step:
    """One statement to run, with a line for people."""

    description: str
    sql: str


@dataclass
class Plan:
    """What a database lacks (``steps``), what cannot be fixed automatically (``problems``), and remarks that do
    not stop anything (``notes``)."""

    steps: list[Step] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        """Nothing to add and nothing wrong."""
        return not self.steps and not self.problems

    def describe(self) -> str:
        """Every difference, one per line."""
        lines = [f"missing: {step.description}" for step in self.steps]
        lines += [f"problem: {problem}" for problem in self.problems]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _compile(element: Any, dialect: Dialect) -> str:
    return str(element.compile(dialect=dialect)).strip()


def _family(type_: sa.types.TypeEngine[Any]) -> str:
    """A coarse type family, so that TEXT and VARCHAR, TIMESTAMP and DATETIME, JSON and JSONB compare equal."""
    for family, classes in (
        ("boolean", (sa.Boolean,)),
        ("integer", (sa.Integer,)),
        ("datetime", (sa.DateTime,)),
        ("json", (sa.JSON,)),
        ("uuid", (sa.Uuid,)),
        ("string", (sa.String,)),
    ):
        if isinstance(type_, classes):
            return family
    impl = getattr(type_, "impl", None)
    if isinstance(impl, sa.types.TypeEngine):
        return _family(impl)
    return type(type_).__name__.lower()


def _default_sql(column: sa.Column[Any], dialect: Dialect) -> str | None:
    default = column.server_default
    if not isinstance(default, sa.DefaultClause):
        return None
    arg = default.arg
    return arg if isinstance(arg, str) else _compile(arg, dialect)


# (wanted, reflected family, reflected type) that are the same type: MySQL reports BOOLEAN as TINYINT, MariaDB
# reports JSON as LONGTEXT.
_SAME = {("boolean", "integer", "TINYINT"), ("json", "string", "LONGTEXT")}


def _seed(table: sa.Table, dialect: Dialect) -> list[Step]:
    """The row a table needs (the counters of the invalidation log and the outbox, the outbox's lease)."""
    row = SEEDED.get(table.name)
    if row is None:
        return []
    insert = sa.insert(table).values(**row)
    sql = str(insert.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    return [Step(f"the row of {table.name}", sql)]


def _create_table(table: sa.Table, dialect: Dialect) -> list[Step]:
    steps = [Step(f"table {table.name}", _compile(CreateTable(table), dialect))]
    steps += [
        Step(f"index {index.name} on {table.name}", _compile(CreateIndex(index), dialect)) for index in table.indexes
    ]
    return steps


def _add_column(table: sa.Table, column: sa.Column[Any], dialect: Dialect) -> Step:
    preparer = dialect.identifier_preparer
    sql = f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {_compile(CreateColumn(column), dialect)}"
    return Step(f"column {table.name}.{column.name}", sql)


def _unique_index(table: sa.Table, constraint: sa.UniqueConstraint, dialect: Dialect) -> Step:
    preparer = dialect.identifier_preparer
    columns = ", ".join(preparer.quote(c.name) for c in constraint.columns)
    name = preparer.quote(str(constraint.name))
    sql = f"CREATE UNIQUE INDEX {name} ON {preparer.format_table(table)} ({columns})"
    return Step(f"unique index {constraint.name} on {table.name}", sql)


def _table_plan(conn: Connection, inspector: sa.Inspector, table: sa.Table, out: Plan) -> None:
    dialect = conn.dialect
    existing = {c["name"]: c for c in inspector.get_columns(table.name)}
    has_rows: bool | None = None
    for column in table.columns:
        found = existing.get(column.name)
        if found is None:
            default_name = column.info.get("default_name")
            if default_name and default_name != column.name and default_name in existing:
                quoted = dialect.identifier_preparer
                out.problems.append(
                    f"{table.name}.{column.name} is configured but the table has {default_name}: authsidecar never"
                    f" renames a column; rename it by hand: ALTER TABLE {quoted.format_table(table)} RENAME COLUMN"
                    f" {quoted.quote(default_name)} TO {quoted.format_column(column)}"
                )
                continue
            if column.nullable or column.server_default is not None:
                out.steps.append(_add_column(table, column, dialect))
                continue
            if has_rows is None:
                has_rows = conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first() is not None
            if not has_rows:
                out.steps.append(_add_column(table, column, dialect))
            else:
                out.problems.append(
                    f"{table.name}.{column.name} is required but missing from a table that has rows; add it with a "
                    f"value for the existing rows, e.g. {_add_column(table, column, dialect).sql} DEFAULT ... "
                    "(or make the field optional, or give it a default_value)"
                )
            continue
        want, have = _family(column.type.dialect_impl(dialect)), _family(found["type"])
        if want != have and (want, have, type(found["type"]).__name__) not in _SAME:
            out.problems.append(
                f"{table.name}.{column.name} is {found['type']} in the database but the schema needs {want}; "
                "authsidecar never changes a column's type: convert it by hand (ALTER TABLE ... ALTER COLUMN ...) "
                "or rename the field in the configuration"
            )
            continue
        if not column.nullable and found["nullable"] and not column.primary_key:
            out.notes.append(f"{table.name}.{column.name} accepts NULL in the database; the schema requires a value")
        default = _default_sql(column, dialect)
        if default is not None and found.get("default") is None:
            if column.primary_key and dialect.name == "sqlite":  # the database must make ids, and cannot here
                out.problems.append(
                    f"{table.name}.{column.name} has no default but generate_id asks the database to make ids;"
                    " SQLite cannot add one to an existing column: recreate the table, or choose generate_id"
                    " before the first migrate"
                )
            elif dialect.name == "sqlite":
                out.notes.append(f"{table.name}.{column.name} has no default (SQLite cannot add one to a column)")
            else:
                quoted = dialect.identifier_preparer
                expression = f"({default})" if dialect.name == "mysql" else default  # MySQL: expressions in ()
                sql = (
                    f"ALTER TABLE {quoted.format_table(table)} ALTER COLUMN {quoted.format_column(column)} "
                    f"SET DEFAULT {expression}"
                )
                out.steps.append(Step(f"default {default} for {table.name}.{column.name}", sql))
    known = {c.name for c in table.columns}
    for name, found in existing.items():
        if (
            name not in known
            and not found["nullable"]
            and found.get("default") is None
            and not found.get("autoincrement")
        ):
            out.problems.append(
                f"{table.name}.{name} is NOT NULL without a default and the configuration does not know it, so every"
                f" insert would fail: give it a default or allow NULL (ALTER TABLE ... ALTER COLUMN {name} DROP NOT"
                " NULL), or configure it as an additional field"
            )
    indexes = inspector.get_indexes(table.name)
    covered = {tuple(i["column_names"]) for i in indexes}
    covered_unique = {tuple(i["column_names"]) for i in indexes if i.get("unique")}
    covered_unique |= {tuple(u["column_names"]) for u in inspector.get_unique_constraints(table.name)}
    pk = tuple(inspector.get_pk_constraint(table.name).get("constrained_columns") or ())
    covered |= covered_unique | {pk}
    names = {i["name"]: tuple(i["column_names"]) for i in indexes if i.get("name")}
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        columns = tuple(c.name for c in index.columns)
        if columns in covered:
            continue
        if index.name in names:
            out.problems.append(f"index {index.name} exists on {names[str(index.name)]}, expected on {columns}")
            continue
        out.steps.append(Step(f"index {index.name} on {table.name}", _compile(CreateIndex(index), dialect)))
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            columns = tuple(c.name for c in constraint.columns)
            if columns not in covered_unique:
                out.steps.append(_unique_index(table, constraint, dialect))


def _renamed_from(inspector: sa.Inspector, table: sa.Table, present: set[str]) -> str | None:
    """The table a configured (renamed) one most likely was: Better Auth's name, or its plural, when such a table
    exists with every built-in column."""
    default: str | None = table.info.get("default_name")
    if not default:
        return None
    wanted = {c.info.get("default_name") for c in table.columns if c.info.get("builtin")}
    for candidate in (default, default + "s"):
        if candidate != table.name and candidate in present:
            columns = {c["name"] for c in inspector.get_columns(candidate)}
            if wanted <= columns:
                return candidate
    return None


def plan(conn: Connection, metadata: sa.MetaData, tables: Iterable[str] | None = None) -> Plan:
    """What ``conn``'s database lacks of ``metadata`` (optionally only of the named tables)."""
    inspector = sa.inspect(conn)
    present = set(inspector.get_table_names())
    wanted = set(tables) if tables is not None else None
    out = Plan()
    for table in metadata.sorted_tables:
        if wanted is not None and table.name not in wanted:
            continue
        if table.name not in present:
            renamed = _renamed_from(inspector, table, present)
            if renamed is not None:
                quoted = conn.dialect.identifier_preparer
                out.problems.append(
                    f"table {table.name} is configured but the database has {renamed} with the same columns:"
                    " authsidecar never renames a table (a new empty one would hide your users); rename it by hand:"
                    f" ALTER TABLE {quoted.quote(renamed)} RENAME TO {quoted.format_table(table)}"
                )
                continue
            out.steps += _create_table(table, conn.dialect)
            out.steps += _seed(table, conn.dialect)
            continue
        _table_plan(conn, inspector, table, out)
    return out


def apply(conn: Connection, steps: Iterable[Step]) -> None:
    """Run the steps in order on ``conn`` (inside the caller's transaction)."""
    for step in steps:
        conn.exec_driver_sql(step.sql)


def create_script(metadata: sa.MetaData, dialect: Dialect) -> list[Step]:
    """Every statement that creates ``metadata`` from nothing, for ``dialect`` (no database needed)."""
    return [
        step for table in metadata.sorted_tables for step in (*_create_table(table, dialect), *_seed(table, dialect))
    ]


def sync_tables(conn: Connection, metadata: sa.MetaData, tables: Iterable[str] | None = None) -> Plan:
    """Plan and apply in one go; raises SchemaProblem (applying nothing) when the plan has problems."""
    found = plan(conn, metadata, tables)
    if found.problems:
        raise SchemaProblem("; ".join(found.problems))
    apply(conn, found.steps)
    return found
