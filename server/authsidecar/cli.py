"""Command line: ``authsidecar serve | migrate | cleanup``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from authsidecar import __version__
from authsidecar.config import ConfigError, Settings, load_settings

__all__ = ["main"]

log = logging.getLogger("authsidecar")


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _serve(settings: Settings) -> int:
    from authsidecar.app import AlreadyServing, SchemaNotReady, run

    _event_loop_policy()
    try:
        asyncio.run(run(settings))
    except (OSError, SchemaNotReady, AlreadyServing) as exc:
        log.error("%s", exc)
        return 1
    return 0


def _migrate(settings: Settings) -> int:
    from authsidecar.app import database_target
    from authsidecar.storage.migrate import upgrade
    from authsidecar.storage.schema import Schema

    try:
        asyncio.run(upgrade(database_target(settings), Schema()))
    except (OSError, ConnectionError) as exc:
        log.error("cannot reach the database: %s", type(exc).__name__)
        return 1
    log.info("database schema is up to date")
    return 0


def _cleanup(settings: Settings) -> int:
    from authsidecar.app import build_database
    from authsidecar.errors import AuthSidecarError
    from authsidecar.services.cleanup import remove_expired

    async def run() -> dict[str, int]:
        database = build_database(settings)
        try:
            return await remove_expired(database, settings.cleanup_batch_size)
        finally:
            await database.close()

    try:
        removed = asyncio.run(run())
    except AuthSidecarError as exc:
        log.error("cleanup failed: %s", exc.message)
        return 1
    print(f"removed {removed['session']} expired sessions and {removed['verification']} expired verifications")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``authsidecar`` console script."""
    parser = argparse.ArgumentParser(prog="authsidecar", description="gRPC authentication sidecar")
    parser.add_argument("--version", action="version", version=f"authsidecar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve gRPC until SIGTERM/SIGINT")
    sub.add_parser("migrate", help="create or upgrade the database schema")
    sub.add_parser("cleanup", help="delete expired sessions and verification tokens, in batches")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        _configure_logging(settings)
        if args.command == "serve":
            return _serve(settings)
        if args.command == "cleanup":
            return _cleanup(settings)
        return _migrate(settings)
    except ConfigError as exc:
        print(f"authsidecar: {exc}", file=sys.stderr)
        return 2
