"""Command line: ``authsidecar serve [--workers N] | migrate [--check | --dry-run] | generate | cleanup | users ... |
sessions ...`` (the last two: cli_admin.py; the workers' supervisor: supervisor.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from authsidecar import __version__
from authsidecar.cli_admin import OneLineParser, add_commands
from authsidecar.cli_admin import run as run_admin
from authsidecar.cli_health import add_health_command, run_health
from authsidecar.config import ConfigError, Settings, load_settings
from authsidecar.plugins.loader import plugin_registry
from authsidecar.worker import WorkerRole

__all__ = ["main"]

log = logging.getLogger("authsidecar")


def _configure_logging(settings: Settings, worker: int | None = None) -> None:
    from authsidecar.observability.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format, worker)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Database drivers log statements with their bound values (password hashes, token digests) at DEBUG; the
    # engine itself hides them (hide_parameters). No driver logs below WARNING, whatever the level.
    for driver in ("aiosqlite", "aiomysql", "asyncpg", "sqlalchemy.pool"):
        logging.getLogger(driver).setLevel(logging.WARNING)


def _event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def stop_while_starting(signum: int, frame: object) -> None:
    """SIGTERM before the server took over its signals (still starting): nothing to drain, a clean exit."""
    raise SystemExit(0)


def _serve(settings: Settings, worker: WorkerRole | None) -> int:
    from authsidecar.app import AlreadyServing, SchemaNotReady, run

    _event_loop_policy()
    if worker is not None:
        worker.follow_supervisor()
        settings = worker.settings(settings)
    elif settings.workers > 1:
        return _supervise(settings)
    try:  # run() replaces the early SIGTERM handler with the draining one
        if worker is None:
            asyncio.run(run(settings))
        else:
            asyncio.run(run(settings, started=worker.ready, supervised=True))
    except (OSError, SchemaNotReady, AlreadyServing) as exc:
        log.error("%s", exc)
        return 1
    return 0


def _supervise(settings: Settings) -> int:
    """``serve --workers N``: check once, then start and watch the workers (supervisor.py)."""
    from authsidecar.app import SchemaNotReady
    from authsidecar.supervisor import Supervisor, check_workers, preflight

    check_workers(settings)
    try:
        preflight(settings)
    except (OSError, SchemaNotReady) as exc:
        log.error("%s", exc)
        return 1
    return Supervisor(settings).run()


def _worker_role(args: argparse.Namespace) -> WorkerRole | None:
    """The hidden options the supervisor starts a worker with, or None."""
    if getattr(args, "worker_index", None) is None:
        return None
    return WorkerRole(args.worker_index, args.worker_count, args.ready_fd, args.supervisor_pid)


def _migrate(settings: Settings, check_only: bool, dry_run: bool) -> int:
    from authsidecar.assembly import build_registry, database_target
    from authsidecar.storage.explain import explain_database_error
    from authsidecar.storage.migrate import check, upgrade
    from authsidecar.storage.schema import Schema
    from authsidecar.storage.sync import SchemaProblem

    target, schema = database_target(settings), Schema(build_registry(settings))
    try:
        if check_only or dry_run:
            status = asyncio.run(check(target, schema))
            if dry_run:
                for step in status.plan.steps:
                    print(f"-- {step.description}\n{step.sql};")
                for problem in status.plan.problems:
                    print(f"-- problem (nothing would be applied): {problem}")
                return 1 if status.plan.problems else 0
            if status.in_sync:
                for note in status.plan.notes:
                    print(f"note: {note}")
                print("the database matches the configured schema")
                return 0
            print(status.describe())
            return 1
        added = asyncio.run(upgrade(target, schema))
    except SchemaProblem as exc:
        log.error("migrate changed nothing: %s", exc)
        return 1
    except Exception as exc:
        explained = explain_database_error(exc, target)
        if explained is None and not isinstance(exc, OSError | ConnectionError):
            raise
        log.error("%s", explained or f"cannot reach the database: {type(exc).__name__}")
        return 1
    log.info("database schema is up to date (%d additions)", len(added.steps))
    return 0


def _generate(settings: Settings, dialect_name: str, output_format: str, output: str | None) -> int:
    from sqlalchemy.dialects import mysql, postgresql, sqlite

    from authsidecar.assembly import build_registry
    from authsidecar.storage.drizzle import drizzle_schema
    from authsidecar.storage.schema import Schema
    from authsidecar.storage.sync import create_script

    metadata = Schema(build_registry(settings)).metadata
    if output_format == "drizzle":
        text = drizzle_schema(metadata, dialect_name)
    else:
        dialect = {"postgresql": postgresql.dialect, "sqlite": sqlite.dialect, "mysql": mysql.dialect}[dialect_name]()
        lines = [f"-- authsidecar schema for {dialect_name} (authsidecar generate)"]
        lines += [f"{step.sql};" for step in create_script(metadata, dialect)]
        text = "\n".join(lines) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text)
    return 0


def _cleanup(settings: Settings) -> int:
    from authsidecar.assembly import build_database
    from authsidecar.errors import AuthSidecarError
    from authsidecar.services.cleanup import remove_expired
    from authsidecar.storage.outbox import SqlOutbox

    async def run() -> dict[str, int]:
        database = build_database(settings)
        try:
            return await remove_expired(database, settings.cleanup_batch_size, outbox=SqlOutbox(database))
        finally:
            await database.close()

    try:
        removed = asyncio.run(run())
    except AuthSidecarError as exc:
        log.error("cleanup failed: %s", exc.message)
        return 1
    print(
        f"removed {removed['session']} expired sessions, {removed['verification']} expired verifications,"
        f" {removed['invalidation']} old invalidation log entries and {removed.get('outbox', 0)} outbox entries"
        " given up more than a week ago"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``authsidecar`` console script."""
    if (sys.argv[1:] if argv is None else argv)[:1] == ["serve"]:
        signal.signal(signal.SIGTERM, stop_while_starting)
    parser = OneLineParser(prog="authsidecar", description="gRPC authentication sidecar")
    parser.add_argument("--version", action="version", version=f"authsidecar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve gRPC until SIGTERM/SIGINT")
    serve.add_argument(
        "--workers", type=int, help="serving processes sharing the port, under a supervisor (AUTHSIDECAR_WORKERS)"
    )
    for hidden in ("--worker-index", "--worker-count", "--ready-fd", "--supervisor-pid"):  # set by the supervisor
        serve.add_argument(hidden, type=int, help=argparse.SUPPRESS)
    migrate = sub.add_parser("migrate", help="create the database schema, or add what it lacks (never drops)")
    mode = migrate.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 0 if the database matches, 1 with the differences")
    mode.add_argument("--dry-run", action="store_true", help="print the SQL migrate would run; change nothing")
    generate = sub.add_parser("generate", help="print the DDL of the configured schema")
    generate.add_argument("--dialect", choices=("postgresql", "sqlite", "mysql"), default="postgresql")
    generate.add_argument("--format", choices=("sql", "drizzle"), default="sql", help="SQL DDL or a Drizzle schema")
    generate.add_argument("--output", help="write to this file instead of standard output")
    sub.add_parser("cleanup", help="delete expired sessions and verification tokens, in batches")
    add_commands(sub)
    add_health_command(sub)
    args = parser.parse_args(argv)
    try:
        overrides = {"workers": args.workers} if args.command == "serve" and args.workers is not None else {}
        settings = load_settings(**overrides)
        plugin_registry(settings.db_schema, settings.plugins)  # every command refuses a missing or bad plugin
        worker = _worker_role(args) if args.command == "serve" else None
        _configure_logging(settings, worker.index if worker is not None else None)
        if args.command == "serve":
            return _serve(settings, worker)
        if args.command == "cleanup":
            return _cleanup(settings)
        if args.command == "generate":
            return _generate(settings, args.dialect, args.format, args.output)
        if args.command in ("users", "sessions"):
            return run_admin(settings, args)
        if args.command == "health":
            return run_health(settings, args)
        return _migrate(settings, args.check, args.dry_run)
    except ConfigError as exc:
        print(f"authsidecar: {exc}", file=sys.stderr)
        return 2
