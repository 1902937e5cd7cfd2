"""Database hooks and events through the real server: Python hooks and webhooks, before and after, on every model
and event the flows produce; the transactional outbox (a receiver that is down then up, a server killed between
commit and delivery); the Redis event stream read by a real Redis client."""

from __future__ import annotations

import hmac
import json
import math
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2

from authsidecar.delivery.senders import webhook_signature
from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import resources_pb2
from authsidecar_client.v1 import session_service_pb2 as session_pb
from tests.better_auth.harness import token_in_log
from tests.conftest import REDIS_URL
from tests.e2e.conftest import (
    Server,
    Stubs,
    clean_env,
    error_details,
    free_port,
    start_server,
    stubs_for,
    wait_for,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
PASSWORD = "correct horse battery"
HOOK_SECRET = "hook-secret-for-the-tests-0123456789"
SECRET_KEYS = {"token", "password", "accessToken", "refreshToken", "idToken", "identifier", "value"}
HOLD = math.inf  # a Receiver answer's delay: no answer until ``Receiver.release`` is set

HOOK_MODULE = '''
"""Hooks of the end-to-end tests: record every call; reject or rewrite some sign-ups."""
import json
import os

from authsidecar.hooks import HookAbort

LOG = os.environ["HOOK_TEST_LOG"]


def _record(data, context):
    line = {
        "when": context.when, "model": context.model, "event": context.event, "rpc": context.rpc,
        "ip": context.ip_address, "actor": (context.user or {}).get("id"), "event_id": context.event_id,
        "data": data,
    }
    with open(LOG, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\\n")


async def before(data, context):
    _record(data, context)
    if (context.model, context.event) == ("user", "create"):
        if data.get("name") == "Blocked":
            raise HookAbort("blocked names are not allowed", "INVALID_ARGUMENT")
        if data.get("name") == "Shout":
            return {"name": "SHOUT"}
    if (context.model, context.event) == ("user", "update") and data.get("name") == "Escalate":
        return {"email": "attacker@example.com", "emailVerified": True}  # not a field a hook may set
    return None


def after(data, context):  # a sync hook: runs in a worker thread
    _record(data, context)
'''

ALL_EVENTS = {
    ("user", "create"),
    ("user", "update"),
    ("user", "delete"),
    ("session", "create"),
    ("session", "update"),
    ("session", "delete"),
    ("account", "create"),
    ("account", "update"),
    ("account", "delete"),
    ("verification", "create"),
    ("verification", "delete"),
}


def _email(tag: str = "hooks") -> str:
    return f"{tag}-{secrets.token_hex(5)}@example.com"


def _client(ip: str = "203.0.113.7") -> resources_pb2.ClientContext:
    return resources_pb2.ClientContext(ip_address=ip, user_agent="hooks-test")


def _no_secrets(value: Any) -> None:
    """No payload anywhere carries a token, a password (hash) or a verification identifier or value."""
    if isinstance(value, dict):
        leaked = SECRET_KEYS & set(value)
        assert not leaked, f"secret fields {leaked} in {value}"
        for item in value.values():
            _no_secrets(item)
    elif isinstance(value, list):
        for item in value:
            _no_secrets(item)


def _write_config(folder: Path, text: str) -> Path:
    path = folder / f"hooks-{secrets.token_hex(4)}.toml"
    path.write_text(text)
    return path


def _serve(folder: Path, env: dict[str, str]) -> Server:
    server = start_server(folder, env)
    server.wait_for(SERVING)
    return server


# ------------------------------------------------------------------------------------------------ Python hooks


def _hooks_server(
    folder: Path, backend: str, db_url: str, redis_prefix: str, receiver: Receiver
) -> tuple[Server, Path]:
    """Python hooks and webhooks, before and after, on every event."""
    (folder / "hookmod.py").write_text(HOOK_MODULE)  # the server runs in ``folder``: importable from there
    log = folder / "hook-calls.jsonl"
    log.write_text("")
    config = _write_config(
        folder,
        '[[hooks]]\nevents = ["*"]\nwhen = "before"\ncall = "hookmod:before"\n\n'
        '[[hooks]]\nevents = ["*"]\nwhen = "after"\ncall = "hookmod:after"\n\n'
        f'[[hooks]]\nevents = ["*"]\nwhen = "before"\nurl = "{receiver.url}"\n\n'
        f'[[hooks]]\nevents = ["*"]\nwhen = "after"\nurl = "{receiver.url}"\n',
    )
    env = {
        "AUTHSIDECAR_CONFIG": str(config),
        "HOOK_TEST_LOG": str(log),
        "AUTHSIDECAR_SESSION_UPDATE_AGE": "0",
        "AUTHSIDECAR_WEBHOOK_SECRET": HOOK_SECRET,
    }
    if backend == "postgres+redis":
        env |= {"DATABASE_URL": db_url, "REDIS_URL": REDIS_URL, "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix}
    elif backend == "mariadb":
        env |= {"DATABASE_URL": db_url}
    else:
        subprocess.run([sys.executable, "-m", "authsidecar", "migrate"], cwd=folder, env=clean_env(), check=True)
        env |= {"AUTHSIDECAR_SQLITE_PATH": str(folder / "authsidecar.db")}
    return _serve(folder, env), log


def _calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def hook_receiver() -> Iterator[Receiver]:
    r = Receiver(free_port())
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="module", params=["postgres+redis", "sqlite+memory", "mariadb"])
def python_hooks(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    redis_prefix: str,
    hook_receiver: Receiver,
) -> Iterator[tuple[Server, Path]]:
    url = request.getfixturevalue("mariadb_url" if request.param == "mariadb" else "pg_url")
    folder = tmp_path_factory.mktemp("pyhooks")
    server, log = _hooks_server(folder, request.param, url, redis_prefix, hook_receiver)
    yield server, log
    assert server.stop() == 0, server.log()


@pytest.fixture
async def py_stubs(python_hooks: tuple[Server, Path]) -> AsyncIterator[Stubs]:
    stubs = stubs_for(python_hooks[0].address)
    yield stubs
    await stubs.channel.close()


async def test_hooks_of_both_kinds_see_every_model_and_event_with_context_and_no_secrets(
    python_hooks: tuple[Server, Path], py_stubs: Stubs, hook_receiver: Receiver
) -> None:
    server, log = python_hooks
    email = _email()
    up = await py_stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Ann", client=_client()))
    user_id = up.user.id
    await py_stubs.auth.UpdateUser(auth_pb.UpdateUserRequest(token=up.token, name="Ann B"))
    await py_stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=up.token))  # refreshes
    second = await py_stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD, client=_client()))
    changed = await py_stubs.auth.ChangePassword(
        auth_pb.ChangePasswordRequest(
            token=second.token, current_password=PASSWORD, new_password=PASSWORD + "2", revoke_other_sessions=True
        )
    )
    assert changed.token
    await py_stubs.auth.RequestPasswordReset(auth_pb.RequestPasswordResetRequest(email=email, client=_client()))
    await wait_for(lambda: f"reset-password message for {email}" in server.log(), what="the reset link")
    reset = token_in_log(server.log(), "reset-password", email)
    await py_stubs.auth.ResetPassword(auth_pb.ResetPasswordRequest(token=reset, new_password=PASSWORD + "3"))
    last = await py_stubs.auth.SignIn(auth_pb.SignInRequest(email=email, password=PASSWORD + "3", client=_client()))
    await py_stubs.auth.DeleteUser(auth_pb.DeleteUserRequest(token=last.token, password=PASSWORD + "3"))

    def mine(call: dict[str, Any]) -> bool:
        data = call["data"]
        return user_id in (data.get("id"), data.get("userId")) or data.get("email") == email

    await wait_for(
        lambda: {(c["model"], c["event"]) for c in _calls(log) if c["when"] == "after" and mine(c)} >= ALL_EVENTS,
        what="an after call of every model and event",
    )
    calls = [c for c in _calls(log) if mine(c)]
    for when in ("before", "after"):
        seen = {(c["model"], c["event"]) for c in calls if c["when"] == when}
        assert seen >= ALL_EVENTS, f"{when}: missing {ALL_EVENTS - seen}"
    _no_secrets(calls)
    # The webhooks saw the same, signed.
    await wait_for(
        lambda: (
            {(e["model"], e["event"]) for e in hook_receiver.received if e["when"] == "after" and mine(e)} >= ALL_EVENTS
        ),
        what="an after webhook of every model and event",
    )
    hooked = [e for e in hook_receiver.received if mine(e)]
    assert {(e["model"], e["event"]) for e in hooked if e["when"] == "before"} >= ALL_EVENTS
    assert hook_receiver.bad_signatures == 0
    _no_secrets(hooked)
    after = [c for c in calls if c["when"] == "after"]
    assert len({c["event_id"] for c in after}) == len({json.dumps(c, sort_keys=True) for c in after})
    assert all(c["event_id"] for c in after) and not any(c["event_id"] for c in calls if c["when"] == "before")
    # The context: the RPC, the client's address, and the acting user when the call carried a session token.
    by_event = {(c["when"], c["model"], c["event"]): c for c in calls}
    assert by_event["before", "user", "create"]["rpc"] == "SignUp"
    assert by_event["before", "user", "create"]["ip"] == "203.0.113.7"
    assert by_event["after", "user", "update"]["rpc"] == "UpdateUser"
    assert by_event["after", "user", "update"]["actor"] == user_id
    assert by_event["after", "verification", "delete"]["rpc"] == "ResetPassword"
    # After events of one user arrive in commit order: created first, deleted last.
    user_events = [c["event"] for c in after if c["model"] == "user"]
    assert user_events[0] == "create" and user_events[-1] == "delete", user_events
    assert next(c["data"]["name"] for c in after if c["model"] == "user" and c["event"] == "update") == "Ann B"


async def test_a_python_before_hook_rejects_with_its_status_or_rewrites_the_data(
    python_hooks: tuple[Server, Path], py_stubs: Stubs
) -> None:
    blocked = _email("blocked")
    with pytest.raises(grpc.aio.AioRpcError) as rejected:
        await py_stubs.auth.SignUp(auth_pb.SignUpRequest(email=blocked, password=PASSWORD, name="Blocked"))
    details = error_details(rejected.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "HOOK_REJECTED")
    assert details.message == "blocked names are not allowed"
    with pytest.raises(grpc.aio.AioRpcError) as absent:  # nothing was written: no user, no account
        await py_stubs.auth.SignIn(auth_pb.SignInRequest(email=blocked, password=PASSWORD))
    assert error_details(absent.value).reason == "INVALID_EMAIL_OR_PASSWORD"
    loud = await py_stubs.auth.SignUp(auth_pb.SignUpRequest(email=_email(), password=PASSWORD, name="Shout"))
    assert loud.user.name == "SHOUT"
    validated = await py_stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=loud.token))
    assert validated.user.name == "SHOUT"  # stored and cached as the hook left it
    with pytest.raises(grpc.aio.AioRpcError) as misbehaved:  # a hook's answer beyond what it may set: refused
        await py_stubs.auth.UpdateUser(auth_pb.UpdateUserRequest(token=loud.token, name="Escalate"))
    details = error_details(misbehaved.value)
    assert (details.code, details.metadata.keys()) == (grpc.StatusCode.INTERNAL, {"request_id"})
    assert "attacker" not in details.message
    unchanged = await py_stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=loud.token))
    assert (unchanged.user.name, unchanged.user.email) == ("SHOUT", loud.user.email)


# ------------------------------------------------------------------------------------------------ webhooks


@dataclass
class Receiver:
    """A webhook receiver in this process: records signed requests; ``answer`` decides each reply: its status, its
    body, and its delay: 0 (at once), HOLD (not before ``release`` is set) or negative (the body trickles, one byte
    every -delay seconds)."""

    port: int
    answer: Callable[[dict[str, Any]], tuple[int, dict[str, Any] | None, float]] = lambda body: (200, None, 0.0)
    received: list[dict[str, Any]] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)  # ids of the events whose whole answer was written
    release: threading.Event = field(default_factory=threading.Event)
    bad_signatures: int = 0
    _server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = webhook_signature(HOOK_SECRET.encode(), self.headers["X-Authsidecar-Timestamp"], body)
                if not hmac.compare_digest(expected, self.headers["X-Authsidecar-Signature"]):
                    owner.bad_signatures += 1
                event = json.loads(body)
                owner.received.append(event)
                status, reply, delay = owner.answer(event)
                if delay == HOLD:
                    owner.release.wait(60)
                data = json.dumps(reply).encode() if reply is not None else b""
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    for n in range(len(data)):  # delay < 0: trickle the body, one byte every -delay seconds
                        self.wfile.write(data[n : n + 1] if delay < 0 else data[n:])
                        self.wfile.flush()
                        if delay >= 0:
                            break
                        time.sleep(-delay)
                except (BrokenPipeError, ConnectionResetError):
                    return
                owner.answered.append(event["id"])

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(free_port())
    yield r
    r.stop()


def _pg_env(pg_url: str, redis_prefix: str, config: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": pg_url,
        "REDIS_URL": REDIS_URL,
        "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix,
        "AUTHSIDECAR_CONFIG": str(config),
        "AUTHSIDECAR_WEBHOOK_SECRET": HOOK_SECRET,
        **extra,
    }


@pytest.mark.postgres
async def test_a_before_webhook_rejects_rewrites_and_fails_closed_on_timeout(
    tmp_path: Path, pg_url: str, redis_prefix: str, receiver: Receiver
) -> None:
    def answer(event: dict[str, Any]) -> tuple[int, dict[str, Any] | None, float]:
        email = event["data"]["email"]
        if email.startswith("refused"):
            return 200, {"error": {"code": "FAILED_PRECONDITION", "message": "this domain may not sign up"}}, 0.0
        if email.startswith("rewritten"):
            return 200, {"data": {"name": "From Hook", "image": "https://img.example/a.png"}}, 0.0
        if email.startswith("slow"):
            return 200, None, HOLD  # answers only once the test has seen the call fail
        if email.startswith("aborted"):
            return 200, {"abort": True}, 0.0
        if email.startswith("trickle"):
            return 200, {"data": {"name": "Trickled in"}}, -0.2  # each read within the timeout, the whole not
        return 200, None, 0.0

    receiver.answer = answer
    receiver.start()
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    config = _write_config(
        tmp_path,
        f'[[hooks]]\nevents = ["user.create"]\nwhen = "before"\nurl = "{receiver.url}"\ntimeout = 0.5\n\n'
        f'[[hooks]]\nevents = ["session.create"]\nwhen = "before"\nurl = "{dead}"\ntimeout = 0.5\n'
        'on_failure = "continue"\n',
    )
    server = _serve(tmp_path, _pg_env(pg_url, redis_prefix, config))
    stubs = stubs_for(server.address)
    try:
        refused = _email("refused")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stubs.auth.SignUp(auth_pb.SignUpRequest(email=refused, password=PASSWORD, name="R"))
        details = error_details(exc.value)
        assert (details.code, details.reason, details.message) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "HOOK_REJECTED",
            "this domain may not sign up",
        )
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stubs.auth.SignUp(auth_pb.SignUpRequest(email=_email("aborted"), password=PASSWORD, name="A"))
        assert (exc.value.code(), error_details(exc.value).reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "HOOK_REJECTED",
        )

        rewritten = await stubs.auth.SignUp(
            auth_pb.SignUpRequest(email=_email("rewritten"), password=PASSWORD, name="Mine")
        )
        assert (rewritten.user.name, rewritten.user.image) == ("From Hook", "https://img.example/a.png")
        assert rewritten.token  # the session hook's URL is dead, and it goes on (on_failure = "continue")

        # The hook's timeout ends the call, not the receiver's answer: the receiver got the request and holds its
        # answer until after the call failed (the call's own deadline guards against a timeout that never fires).
        slow = _email("slow")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stubs.auth.SignUp(auth_pb.SignUpRequest(email=slow, password=PASSWORD, name="S"), timeout=30)
        assert (exc.value.code(), error_details(exc.value).reason) == (grpc.StatusCode.UNAVAILABLE, "HOOK_FAILED")
        [held] = [e for e in receiver.received if e["data"]["email"] == slow]
        assert held["id"] not in receiver.answered
        receiver.release.set()
        # The timeout bounds the whole exchange: the answer trickles in, each byte well within the timeout, and
        # the call fails before the receiver has written it all.
        trickle = _email("trickle")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stubs.auth.SignUp(auth_pb.SignUpRequest(email=trickle, password=PASSWORD, name="T"), timeout=30)
        assert error_details(exc.value).reason == "HOOK_FAILED"
        [trickled] = [e for e in receiver.received if e["data"]["email"] == trickle]
        assert trickled["id"] not in receiver.answered
        timeouts = [line for line in server.log().splitlines() if f"before hook {receiver.url}: " in line]
        assert len(timeouts) == 2 and all("Timeout" in line for line in timeouts), server.log()
        receiver.answer = lambda event: (200, None, 0.0)
        for email in (refused, slow):  # nothing was written: the address is still free
            again = await stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Later"))
            assert again.user.email == email
        assert receiver.bad_signatures == 0
        before = [e for e in receiver.received if e["when"] == "before"]
        assert before and all(e["type"] == "user.create" and e["context"]["rpc"] == "SignUp" for e in before)
        _no_secrets(receiver.received)
    finally:
        await stubs.channel.close()
        assert server.stop() == 0, server.log()


async def _user_story(stubs: Stubs, email: str, updates: int) -> str:
    up = await stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password=PASSWORD, name="v0"))
    for n in range(1, updates + 1):
        await stubs.auth.UpdateUser(auth_pb.UpdateUserRequest(token=up.token, name=f"v{n}"))
    return up.user.id


def _story(received: list[dict[str, Any]], user_id: str) -> list[str]:
    """The user's events as first delivered (deliveries are at least once: repeats are dropped by id)."""
    seen: set[str] = set()
    out = []
    for event in received:
        data = event["data"]
        if event["model"] == "user" and data.get("id") == user_id and event["id"] not in seen:
            seen.add(event["id"])
            out.append(f"{event['event']}:{data['name']}")
    return out


@pytest.mark.postgres
async def test_after_webhooks_wait_for_a_receiver_that_is_down_and_arrive_in_order(
    tmp_path: Path, pg_url: str, redis_prefix: str, receiver: Receiver
) -> None:
    config = _write_config(tmp_path, f'[[hooks]]\nevents = ["user.*"]\nwhen = "after"\nurl = "{receiver.url}"\n')
    server = _serve(tmp_path, _pg_env(pg_url, redis_prefix, config))
    stubs = stubs_for(server.address)
    try:
        users = [await _user_story(stubs, _email("order"), 4) for _ in range(2)]
        # Nobody listens yet: the first entry of each user is tried and fails.
        await wait_for(
            lambda: server.log().count("failed (attempt 1)") >= 2, what="failed attempts", details=server.log
        )
        receiver.start()
        expected = ["create:v0", "update:v1", "update:v2", "update:v3", "update:v4"]
        await wait_for(lambda: all(_story(receiver.received, u) == expected for u in users), 30, "ordered delivery")
        assert receiver.bad_signatures == 0
        event = receiver.received[0]
        assert event["type"] == "user.create" and event["when"] == "after" and event["occurredAt"]
    finally:
        await stubs.channel.close()
        assert server.stop() == 0, server.log()


@pytest.mark.postgres
async def test_events_committed_before_a_sigkill_are_delivered_after_the_restart(
    tmp_path: Path, pg_url: str, redis_prefix: str, receiver: Receiver
) -> None:
    config = _write_config(tmp_path, f'[[hooks]]\nevents = ["user.*"]\nwhen = "after"\nurl = "{receiver.url}"\n')
    env = _pg_env(pg_url, redis_prefix, config)
    server = _serve(tmp_path, env)
    stubs = stubs_for(server.address)
    user_id = await _user_story(stubs, _email("killed"), 2)
    await stubs.channel.close()
    server.process.kill()  # SIGKILL: committed, not delivered (nobody listens)
    server.process.wait()
    receiver.start()
    restarted = _serve(tmp_path, env)
    try:
        # The killed instance's lease lapses first: delivery timeout + 5 s (15 s here).
        await wait_for(
            lambda: _story(receiver.received, user_id) == ["create:v0", "update:v1", "update:v2"], 45, "redelivery"
        )
    finally:
        assert restarted.stop() == 0, restarted.log()


@pytest.mark.postgres
@pytest.mark.redis
async def test_after_events_are_published_to_a_redis_stream(tmp_path: Path, pg_url: str, redis_prefix: str) -> None:
    config = _write_config(tmp_path, "")
    server = _serve(tmp_path, _pg_env(pg_url, redis_prefix, config, AUTHSIDECAR_EVENT_STREAM="redis"))
    stubs = stubs_for(server.address)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        email = _email("stream")
        up = await stubs.auth.SignUp(auth_pb.SignUpRequest(email=email, password=PASSWORD, name="Streamed"))
        await stubs.auth.SignOut(auth_pb.SignOutRequest(token=up.token))
        key = f"{redis_prefix}events"

        def events() -> list[dict[str, Any]]:
            found = []
            for _, entries in client.xread({key: "0"}, count=1000) or []:
                for _, fields in entries:
                    event = json.loads(fields["event"])
                    assert fields["id"] == event["id"] and fields["type"] == event["type"]
                    found.append(event)
            return [e for e in found if up.user.id in (e["data"].get("id"), e["data"].get("userId"))]

        want = {"user.create", "account.create", "session.create", "session.delete"}
        await wait_for(lambda: {e["type"] for e in events()} >= want, what="the stream entries")
        _no_secrets(events())
        assert [e["type"] for e in events()][-1] == "session.delete"
    finally:
        client.close()
        await stubs.channel.close()
        assert server.stop() == 0, server.log()
