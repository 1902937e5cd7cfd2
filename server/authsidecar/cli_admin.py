"""``authsidecar users ...`` and ``authsidecar sessions ...``: administration from the command line.

This module parses arguments and prints; the rules are services/admin.py's (and the admin plugin's bans). It is
wired as the server is (``assembly.build_core``): the same store with hooks and the outbox, the same cache and coherence,
so a revocation made here is logged in its transaction, dropped from Redis at once and followed by every server
within ``AUTHSIDECAR_INVALIDATION_BOUND``. Hooks see ``rpc`` = ``"cli users delete"`` and so on.

Output: one human-readable line per item, or JSON with ``--json``; never a password, hash or token. Errors: one
line on stderr. Exit codes: 0 done; 1 the operation failed (not found, refused by a rule, database unreachable);
2 usage or configuration (bad arguments or settings, an unmigrated database, the admin plugin off).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import shlex
import sys
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from authsidecar.config import ConfigError, Settings
from authsidecar.errors import AuthSidecarError

if TYPE_CHECKING:
    from authsidecar.domain.fields import Registry
    from authsidecar.domain.models import Session, User
    from authsidecar.hooks.payloads import Payloads
    from authsidecar.plugins.admin.bans import Bans
    from authsidecar.services.admin import AdminService

__all__ = ["OneLineParser", "add_commands", "run"]

log = logging.getLogger("authsidecar")

PASSWORD_HELP = "the password (visible in the process list and shell history: prefer --password-stdin)"  # noqa: S105 - help text
STDIN_HELP = "read the password from standard input (a final newline is dropped)"


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), not the whole usage text."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: <message>`` and exit 2."""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class UsageError(Exception):
    """A usage or configuration problem found after parsing (exit 2)."""


# -- arguments ---------------------------------------------------------------------------------------------------


def _target(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--id", dest="user_id", metavar="ID", help="the user's id")
    group.add_argument("--email", help="the user's email address")


def _password_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--password", help=PASSWORD_HELP)
    group.add_argument("--password-stdin", action="store_true", help=STDIN_HELP)


def add_commands(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    """The ``users`` and ``sessions`` commands."""
    users = sub.add_parser("users", help="create, find, change and delete users").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = users.add_parser("create", help="create a user (without a password: they set one by password reset)")
    create.add_argument("--email", required=True)
    create.add_argument("--name", required=True)
    _password_options(create)
    create.add_argument("--verified", action="store_true", help="mark the email address verified")
    create.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an additional field (VALUE as JSON, else as a string); repeatable",
    )
    create.add_argument("--json", action="store_true", help="print the user as JSON")
    listing = users.add_parser("list", help="list users, oldest first")
    listing.add_argument("--limit", type=int, default=50, help="users per page (1-1000, default 50)")
    listing.add_argument("--after", metavar="CURSOR", help="the next page: the cursor the previous one printed")
    listing.add_argument("--email-prefix", default="", metavar="X", help="only addresses starting with X")
    listing.add_argument("--json", action="store_true", help='print {"users": [...], "next": cursor or null}')
    show = users.add_parser("show", help="show one user")
    _target(show)
    show.add_argument("--json", action="store_true", help="print the user as JSON")
    password = users.add_parser("set-password", help="set a user's password; revokes their sessions, like a reset")
    _target(password)
    _password_options(password)
    password.add_argument("--keep-sessions", action="store_true", help="do not revoke the user's sessions")
    verify = users.add_parser("verify-email", help="mark a user's email address verified")
    _target(verify)
    disable = users.add_parser(
        "disable", help="ban a user and revoke their sessions (needs [plugins.admin], then migrate)"
    )
    _target(disable)
    disable.add_argument("--reason", help="why (kept in user.banReason)")
    disable.add_argument("--until", metavar="ISO8601", help="when the ban ends (default: until enable)")
    enable = users.add_parser("enable", help="lift a user's ban")
    _target(enable)
    delete = users.add_parser("delete", help="delete a user with their sessions, accounts and tokens")
    _target(delete)
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    sessions = sub.add_parser("sessions", help="list and revoke a user's sessions").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    session_list = sessions.add_parser("list", help="a user's unexpired sessions, newest first")
    _session_owner(session_list)
    session_list.add_argument("--json", action="store_true", help='print {"sessions": [...]}')
    revoke = sessions.add_parser("revoke", help="revoke one session of a user, or all of them")
    _session_owner(revoke)
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--session-id", metavar="ID", help="the session to revoke")
    which.add_argument("--all", action="store_true", help="every session of the user")


def _session_owner(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--user-id", metavar="ID", help="the user's id")
    group.add_argument("--email", help="the user's email address")


def _read_password(args: argparse.Namespace, required: bool) -> str | None:
    """From --password, --password-stdin, or (required, at a terminal) a prompt; None when not given."""
    if args.password is not None:
        return str(args.password)
    if args.password_stdin:
        return sys.stdin.read().removesuffix("\n").removesuffix("\r")
    if not required:
        return None
    if not sys.stdin.isatty():
        raise UsageError("give the new password with --password-stdin (or --password)")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Again: ") != first:
        raise UsageError("the two passwords differ; nothing changed")
    return first


def _fields(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--field {pair!r}: expected NAME=VALUE")
        try:
            out[name] = json.loads(raw)
        except ValueError:
            out[name] = raw
    return out


def _until(text: str | None) -> datetime | None:
    """ISO 8601; a date means its midnight UTC, a time without a zone is UTC."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            value = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            raise UsageError(f"--until {text!r}: expected an ISO 8601 date or time (2030-01-31T12:00:00Z)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -- output ------------------------------------------------------------------------------------------------------


def _safe(text: object) -> str:
    """Text from the database as one harmless line (a name written by someone else may hold terminal escapes)."""
    out = []
    for char in str(text):
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)


def _when(value: datetime | None) -> str:
    from authsidecar.cache.codec import iso

    return iso(value) if value is not None else "-"


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


@dataclass
class _Tools:
    admin: AdminService
    bans: Bans | None
    payloads: Payloads
    registry: Registry

    def user_json(self, user: User) -> dict[str, Any]:
        """The user as hooks see it (Better Auth's names, no secret), without fields never returned to clients."""
        hidden = {f.key for f in self.registry.user.additional if not f.returned}
        return {k: v for k, v in self.payloads.user(user).items() if k not in hidden}

    def ban_state(self, user: User) -> str | None:
        """The admin plugin's view of the user (None when it is off)."""
        from authsidecar.plugins.admin.bans import BAN_EXPIRES, BAN_REASON, BANNED, is_banned

        if self.bans is None:
            return None
        extra = user.additional
        if not extra.get(BANNED):
            return "no"
        reason = f"; reason: {_safe(extra[BAN_REASON])}" if extra.get(BAN_REASON) else ""
        until = extra.get(BAN_EXPIRES)
        if not is_banned(user, datetime.now(UTC)):
            return f"no (the ban expired at {_when(until)}{reason})"
        return f"yes (until {_when(until) if until else 'enabled again'}{reason})"


def _user_line(user: User, tools: _Tools) -> str:
    banned = tools.ban_state(user)
    return "  ".join(
        [
            _safe(user.id),
            _safe(user.email),
            repr(_safe(user.name)),
            "verified" if user.email_verified else "unverified",
            f"created {_when(user.created_at)}",
            *(["banned"] if banned is not None and banned.startswith("yes") else []),
        ]
    )


def _session_line(session: Session) -> str:
    return "  ".join(
        [
            _safe(session.id),
            f"created {_when(session.created_at)}",
            f"expires {_when(session.expires_at)}",
            f"ip {_safe(session.ip_address or '-')}",
            f"agent {_safe(session.user_agent or '-')!r}",
        ]
    )


# -- commands ----------------------------------------------------------------------------------------------------


@asynccontextmanager
async def _tools(settings: Settings) -> AsyncIterator[_Tools]:
    """The admin service, wired as the server wires its services; the database checked as ``serve`` checks it."""
    from authsidecar.assembly import build_core, build_database, build_hasher, build_session_policy
    from authsidecar.delivery.senders import http_client
    from authsidecar.hooks.payloads import Payloads
    from authsidecar.hooks.setup import build_hooks
    from authsidecar.plugins.admin.bans import Bans, has_ban_fields
    from authsidecar.services.admin import AdminService
    from authsidecar.services.extra_fields import ExtraFieldRules
    from authsidecar.services.rules import CredentialRules
    from authsidecar.storage.migrate import schema_status

    database = build_database(settings)
    http = http_client()
    hooks = build_hooks(settings, http)
    core = build_core(settings, database, hooks, build_session_policy(settings))
    hasher = build_hasher(settings)
    try:
        problem = await schema_status(database.engine, database.schema)
        if problem is not None:
            raise UsageError(problem)
        await database.ensure_invalidation_counter()
        registry = database.schema.registry
        rules = CredentialRules(settings.password_min_length, settings.password_max_length)
        admin = AdminService(core.store, hasher, rules, core.ids, ExtraFieldRules(registry.user))
        bans = Bans(core.store) if has_ban_fields(registry.user) else None
        yield _Tools(admin, bans, Payloads(registry), registry)
    finally:
        await core.cache.close()
        if core.better_auth_store is not None:
            await core.better_auth_store.flush()
        if core.shared is not None:
            await core.shared.close()
        if hooks.stream is not None:
            await hooks.stream.close()
        await http.aclose()
        await database.close()
        hasher.close()


async def _user(tools: _Tools, args: argparse.Namespace) -> User:
    return await tools.admin.find_user(user_id=args.user_id, email=args.email)


async def _users(tools: _Tools, args: argparse.Namespace) -> int:
    from authsidecar.transport.grpc.fields import MAX_NAME, FieldChecker

    admin = tools.admin
    if args.action == "create":
        check = FieldChecker()  # the shape checks of SignUp
        name = check.text("name", args.name, MAX_NAME, plain=True)
        check.done()
        password = await asyncio.to_thread(_read_password, args, False)
        user = await admin.create_user(args.email, name, password, args.verified, _fields(args.field))
        if args.json:
            _print_json(tools.user_json(user))
        else:
            verified = ", email verified" if user.email_verified else ""
            print(f"created user {_safe(user.id)} <{_safe(user.email)}>{verified}{'' if password else ', no password'}")
        return 0
    if args.action == "list":
        page = await admin.list_users(args.limit, args.after, args.email_prefix)
        if args.json:
            _print_json({"users": [tools.user_json(u) for u in page.users], "next": page.next_cursor})
            return 0
        for u in page.users:
            print(_user_line(u, tools))
        if page.next_cursor is not None:  # the command that prints the next page
            again = ["authsidecar", "users", "list", "--limit", str(args.limit)]
            again += ["--email-prefix", args.email_prefix] if args.email_prefix else []
            print(f"more: {shlex.join([*again, '--after', page.next_cursor])}")
        return 0
    # The new password is asked for before anything is looked up: a usage problem is found before any work.
    password = await asyncio.to_thread(_read_password, args, True) if args.action == "set-password" else None
    user = await _user(tools, args)
    if args.action == "show":
        details = await admin.details(user)
        if args.json:
            _print_json(
                {
                    **tools.user_json(user),
                    "hasPassword": details.has_password,
                    "activeSessions": details.active_sessions,
                }
            )
            return 0
        print(f"id: {_safe(user.id)}\nemail: {_safe(user.email)}\nname: {_safe(user.name)}")
        print(f"email verified: {'yes' if user.email_verified else 'no'}\nimage: {_safe(user.image or '-')}")
        print(f"created: {_when(user.created_at)}\nupdated: {_when(user.updated_at)}")
        print(f"password: {'set' if details.has_password else 'none'}\nactive sessions: {details.active_sessions}")
        banned = tools.ban_state(user)
        if banned is not None:
            print(f"banned: {banned}")
        shown = tools.user_json(user)
        for f in tools.registry.user.additional:
            if f.key in shown and f.plugin != "admin":
                print(f"{_safe(f.key)}: {_safe(json.dumps(shown[f.key], default=str))}")
        return 0
    if args.action == "set-password":
        assert password is not None
        revoked = await admin.set_password(user.id, password, revoke_sessions=not args.keep_sessions)
        kept = "; sessions kept" if args.keep_sessions else f"; {revoked} session(s) revoked"
        print(f"password set for {_safe(user.email)}{kept}")
        return 0
    if args.action == "verify-email":
        changed = await admin.verify_email(user)
        print(f"{_safe(user.email)} {'is now verified' if changed else 'was already verified'}")
        return 0
    if args.action in ("disable", "enable"):
        if tools.bans is None:
            raise UsageError(
                f"users {args.action} needs the admin plugin: add [plugins.admin] to the AUTHSIDECAR_CONFIG file,"
                " then run `authsidecar migrate`"
            )
        if args.action == "enable":
            await tools.bans.unban(user.id)
            print(f"{_safe(user.email)} may sign in again")
            return 0
        check = FieldChecker()
        reason = check.text("reason", args.reason or "", 1000, required=False, plain=True)
        check.done()
        until = _until(args.until)
        _, revoked = await tools.bans.ban(user.id, reason or None, until)
        print(f"{_safe(user.email)} is banned{f' until {_when(until)}' if until else ''}; {revoked} session(s) revoked")
        return 0
    assert args.action == "delete"
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("users delete asks for confirmation: add --yes (standard input is not a terminal)")
        question = f"delete {_safe(user.email)} ({_safe(user.id)}), their sessions and accounts? [y/N] "
        answer = await asyncio.to_thread(input, question)
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)
            return 1
    await admin.delete_user(user.id)
    print(f"deleted user {_safe(user.id)} <{_safe(user.email)}>")
    return 0


async def _sessions(tools: _Tools, args: argparse.Namespace) -> int:
    admin = tools.admin
    user_id = args.user_id if args.user_id is not None else (await admin.find_user(email=args.email)).id
    if args.action == "list":
        found = await admin.list_sessions(user_id)
        if args.json:
            _print_json({"sessions": [tools.payloads.session(s) for s in found]})
        else:
            for session in found:
                print(_session_line(session))
        return 0
    if args.session_id is not None:
        await admin.revoke_session(user_id, args.session_id)
        print(f"revoked session {_safe(args.session_id)}")
        return 0
    count = await admin.revoke_sessions(user_id)
    print(f"revoked {count} session(s)")
    return 0


async def _main(settings: Settings, args: argparse.Namespace) -> int:
    from authsidecar.hooks.context import begin_call

    begin_call(f"cli {args.command} {args.action}", None, None)  # what hooks see as the call
    async with _tools(settings) as tools:
        if args.command == "users":
            return await _users(tools, args)
        return await _sessions(tools, args)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run a ``users`` or ``sessions`` command; errors are one line on stderr."""
    from authsidecar.assembly import database_target
    from authsidecar.storage.explain import explain_database_error

    try:
        return asyncio.run(_main(settings, args))
    except (UsageError, ConfigError) as exc:
        print(f"authsidecar: {exc}", file=sys.stderr)
        return 2
    except AuthSidecarError as exc:
        print(f"authsidecar: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        explained = explain_database_error(exc, database_target(settings))
        if explained is not None:
            print(f"authsidecar: {explained}", file=sys.stderr)
            return 1 if explained.transient else 2
        log.debug("unexpected error", exc_info=True)
        print(
            f"authsidecar: unexpected error ({type(exc).__name__}); AUTHSIDECAR_LOG_LEVEL=DEBUG shows the details",
            file=sys.stderr,
        )
        return 1
