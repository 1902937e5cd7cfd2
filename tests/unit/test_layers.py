"""The import structure of server/authsidecar: no circle between its units, and no arrow back up the layers.

A unit is a sub-package of ``authsidecar`` (``storage``, ``cache``, ``hooks``, ...) or one of its top-level
modules (``config``, ``errors``, ``app``, ...); ``authsidecar`` is the package itself (its ``__init__``:
``__version__``). ``authsidecar.migrations`` (the Alembic environment, a link to the top-level ``migrations/``
folder) belongs to ``storage``: ``storage.migrate`` runs it with the schema, its revisions build that schema.
Every import of ``authsidecar.*`` is an arrow, wherever it is written: at module level, inside a function (a lazy
import still needs the other unit), under ``if TYPE_CHECKING:`` (a type still names the other unit).

The layers, lowest first. A unit may import units of its own layer or of a lower one, never of a higher one; and
no circle may run between units of one layer:

1. foundation: ``authsidecar``, ``errors`` (the error model), ``domain`` (records, field registry, ports) and
   ``config_error`` (``ConfigError``, the one-line refusal of a bad setting, raised by every part that checks one).
2. primitives: ``security`` (ids, hashing, tokens, cookies), ``observability`` (logs, metrics, traces),
   ``cache`` (the secondary storage: memory, Redis, rate-limit counters).
3. schema and adapters: ``schema_config`` (table, column and additional-field names), ``storage`` (SQL),
   ``delivery`` (messages: log, SMTP, signed webhooks).
4. ``hooks``: before/after hooks on database changes (Python or webhook), the outbox dispatcher.
5. ``services``: the use cases (accounts, sessions, verification, limits).
6. ``transport``: gRPC servicers, Envoy ext_authz, forward-auth HTTP.
7. ``plugins``: the plugin interface, entry-point loading, the bundled plugins (their servicers use transport).
8. ``config``: the settings, read once. It validates names against the vocabulary of the parts below it (RPC
   names, rate-limited RPCs, hook event patterns), and no part below reads it: the composition root hands each
   part plain values (or a narrow protocol the settings satisfy).
9. composition: ``assembly`` (builds each part from the settings, loads the plugins), ``worker``, ``cli_health``.
10. ``root``: the composition root of a serving process (joins the parts ``assembly`` builds).
11. application: ``app`` (starts and stops a serving process), ``cli_admin``.
12. ``supervisor`` (serve --workers: runs the app in worker processes).
13. entry points: ``cli``, ``__main__``.

Run it as a script (``python tests/unit/test_layers.py``) to print the units and arrows.
"""

from __future__ import annotations

import ast
import os
from collections import defaultdict
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "server" / "authsidecar"
PACKAGE = "authsidecar"

LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("foundation", frozenset({PACKAGE, "errors", "domain", "config_error"})),
    ("primitives", frozenset({"security", "observability", "cache"})),
    ("schema and adapters", frozenset({"schema_config", "storage", "delivery"})),
    ("hooks", frozenset({"hooks"})),
    ("services", frozenset({"services"})),
    ("transport", frozenset({"transport"})),
    ("plugins", frozenset({"plugins"})),
    ("config", frozenset({"config"})),
    ("composition", frozenset({"assembly", "worker", "cli_health"})),
    ("composition root", frozenset({"root"})),
    ("application", frozenset({"app", "cli_admin"})),
    ("supervisor", frozenset({"supervisor"})),
    ("entry points", frozenset({"cli", "__main__"})),
)

# Sub-packages counted as part of another unit (see the module docstring).
PART_OF = {"migrations": "storage"}


@dataclass(frozen=True, slots=True)
class Arrow:
    """One import of another unit: ``source`` imports ``target`` at ``where`` (path:line)."""

    source: str
    target: str
    module: str
    where: str


def _modules() -> dict[str, Path]:
    """Every module under ROOT by dotted name (following the link to migrations/)."""
    found: dict[str, Path] = {}
    for folder, dirs, files in os.walk(ROOT, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = Path(folder) / name
            parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def unit_of(module: str) -> str:
    """The unit of a dotted module name under ``authsidecar``."""
    parts = module.split(".")
    if len(parts) == 1:
        return PACKAGE
    return PART_OF.get(parts[1], parts[1])


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The ``authsidecar`` modules an import statement names (``from authsidecar import x``: the submodule x when
    there is one, else the package itself)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = package[: len(package) - node.level + 1]
        origin = ".".join([*base, node.module] if node.module else base)
    else:
        origin = node.module or ""
    if origin != PACKAGE and not origin.startswith(PACKAGE + "."):
        return []
    names = [f"{origin}.{alias.name}" for alias in node.names]
    return [name if name in known else origin for name in names]


def arrows_in(source: str, module: str, where: str, known: set[str], is_package: bool = False) -> list[Arrow]:
    """The arrows of one module's text: every import statement of the tree, not only the module-level ones."""
    unit = unit_of(module)
    found = []
    for node in ast.walk(ast.parse(source, filename=where)):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        for name in _imported(node, module, is_package, known):
            if name != PACKAGE and not name.startswith(PACKAGE + "."):
                continue
            target = unit_of(name)
            if target != unit:
                found.append(Arrow(unit, target, name, f"{where}:{node.lineno}"))
    return found


def arrows() -> list[Arrow]:
    """Every import of one unit by another, wherever it is written in the module."""
    modules = _modules()
    known = set(modules)
    found = []
    for module, path in modules.items():
        text = path.read_text(encoding="utf-8")
        found += arrows_in(text, module, str(path.relative_to(ROOT.parent)), known, path.name == "__init__.py")
    return found


def units() -> set[str]:
    """Every unit that has a module."""
    return {unit_of(module) for module in _modules()}


def graph(found: list[Arrow]) -> dict[str, set[str]]:
    """The arrows between units."""
    edges: dict[str, set[str]] = defaultdict(set)
    for arrow in found:
        edges[arrow.source].add(arrow.target)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of units (its first unit repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(unit: str) -> list[str] | None:
        state[unit] = 1
        path.append(unit)
        for other in sorted(edges.get(unit, ())):
            if state.get(other) == 1:
                return [*path[path.index(other) :], other]
            if other not in state:
                cycle = visit(other)
                if cycle is not None:
                    return cycle
        path.pop()
        state[unit] = 2
        return None

    for unit in sorted(edges):
        if unit not in state:
            cycle = visit(unit)
            if cycle is not None:
                return cycle
    return None


def layer_of() -> dict[str, int]:
    """Each listed unit's layer number (0: lowest)."""
    return {unit: index for index, (_, members) in enumerate(LAYERS) for unit in members}


def _summary(found: list[Arrow]) -> str:
    edges = graph(found)
    count = sum(len(targets) for targets in edges.values())
    return f"{len(units())} units, {count} arrows between them ({len(found)} import statements)"


def test_the_layer_list_names_every_unit_once() -> None:
    listed = [unit for _, members in LAYERS for unit in members]
    assert len(listed) == len(set(listed)), "a unit is listed in two layers"
    unlisted = sorted(units() - set(listed))
    assert not unlisted, f"units in no layer (add them to LAYERS where they belong): {unlisted}"
    gone = sorted(set(listed) - units())
    assert not gone, f"LAYERS lists units that no longer exist: {gone}"


def test_no_import_circle_between_units() -> None:
    found = arrows()
    print(_summary(found))
    cycle = find_cycle(graph(found))
    if cycle is not None:
        steps = []
        for source, target in pairwise(cycle):
            where = next(a.where for a in found if a.source == source and a.target == target)
            steps.append(f"  {source} -> {target}  ({where})")
        print("import circle: " + " -> ".join(cycle))
        print("\n".join(steps))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_no_arrow_runs_back_up_the_layers() -> None:
    found = arrows()
    print(_summary(found))
    layers = layer_of()
    names = [name for name, _ in LAYERS]
    back = [
        f"{a.source} ({names[layers[a.source]]}) -> {a.target} ({names[layers[a.target]]}): {a.module} at {a.where}"
        for a in found
        if a.source in layers and a.target in layers and layers[a.target] > layers[a.source]
    ]
    assert not back, "imports of a higher layer:\n" + "\n".join(back)


SAMPLE = """
from typing import TYPE_CHECKING

from authsidecar import __version__, errors
from authsidecar.cache.memo import BoundedMemo
from .tables import DAY

if TYPE_CHECKING:
    from authsidecar.plugins.base import Plugin


def later() -> None:
    import authsidecar.transport.grpc.callers
    from authsidecar import migrations
"""


def test_every_import_is_an_arrow_lazy_and_type_checking_ones_too() -> None:
    known = {"authsidecar.errors", "authsidecar.migrations", "authsidecar.config.tables"}
    found = arrows_in(SAMPLE, "authsidecar.config.settings", "sample.py", known)
    assert [(a.target, a.module) for a in found] == [
        (PACKAGE, PACKAGE),  # __version__: the package itself
        ("errors", "authsidecar.errors"),
        ("cache", "authsidecar.cache.memo"),
        ("plugins", "authsidecar.plugins.base"),  # under TYPE_CHECKING
        ("transport", "authsidecar.transport.grpc.callers"),  # inside a function
        ("storage", "authsidecar.migrations"),  # migrations belong to storage
    ]  # the relative import stays inside config: no arrow
    assert {a.source for a in found} == {"config"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert len(units()) > 20 and len(arrows()) > 100  # the walk found the package
    assert "authsidecar.migrations.env" in _modules()  # and followed the link to migrations/


if __name__ == "__main__":
    every = arrows()
    print(_summary(every))
    position = layer_of()
    for name, targets in sorted(graph(every).items(), key=lambda item: (position.get(item[0], -1), item[0])):
        print(f"{name:>14} -> {', '.join(sorted(targets, key=lambda t: (position.get(t, -1), t)))}")
    print("circle:", find_cycle(graph(every)))
