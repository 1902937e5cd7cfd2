"""Verification and reset flows end to end, with the messages really delivered: a real SMTP server
(aiosmtpd) on localhost and a real HTTP server receiving signed webhooks."""

from __future__ import annotations

import email
import json
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from email.message import Message as MailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest
from aiosmtpd.controller import Controller
from grpc_health.v1 import health_pb2

from authsidecar.delivery.senders import webhook_signature
from authsidecar_client.v1 import auth_service_pb2 as auth_pb
from authsidecar_client.v1 import session_service_pb2 as session_pb
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
    wait_for_sync,
)

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a new horse battery"
TOKEN = re.compile(r"token=([A-Za-z0-9_\-]+)")
SERVING = health_pb2.HealthCheckResponse.SERVING


class Mailbox:
    """aiosmtpd handler keeping every received message."""

    def __init__(self) -> None:
        self.messages: list[MailMessage] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def to(self, address: str) -> list[MailMessage]:
        """The messages to ``address`` so far."""
        with self._lock:
            return [m for m in self.messages if m["To"] == address]

    def wait_for(self, to: str, count: int = 1, timeout: float = 10.0) -> list[MailMessage]:
        """The messages to ``to`` once there are ``count`` of them."""
        wait_for_sync(lambda: len(self.to(to)) >= count, timeout, f"{count} mail(s) for {to}")
        return self.to(to)


def token_of(mail: MailMessage) -> str:
    body = mail.get_payload(decode=True)
    assert isinstance(body, bytes)
    match = TOKEN.search(body.decode())
    assert match, body
    return match.group(1)


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture(scope="module", params=["postgres+redis", "sqlite+memory"])
def smtp_server(
    request: pytest.FixtureRequest, mailbox: tuple[Mailbox, int], module_tmp: Path, pg_url: str, redis_prefix: str
) -> Iterator[Server]:
    env = {
        "AUTHSIDECAR_DELIVERY": "smtp",
        "AUTHSIDECAR_SMTP_HOST": "127.0.0.1",
        "AUTHSIDECAR_SMTP_PORT": str(mailbox[1]),
        "AUTHSIDECAR_SMTP_SECURITY": "none",
        "AUTHSIDECAR_LINK_URL_TEMPLATE": "https://app.example/{purpose}?token={token}",
    }
    if request.param == "postgres+redis":
        env |= {"DATABASE_URL": pg_url, "REDIS_URL": REDIS_URL, "AUTHSIDECAR_REDIS_KEY_PREFIX": redis_prefix}
    else:
        folder = module_tmp / "smtp-embedded"
        folder.mkdir(exist_ok=True)
        env |= {"AUTHSIDECAR_SQLITE_PATH": str(folder / "authsidecar.db")}
        subprocess.run(
            [sys.executable, "-m", "authsidecar", "migrate"], cwd=folder, env={**clean_env(), **env}, check=True
        )
    server = start_server(module_tmp, env)
    server.wait_for(SERVING)
    yield server
    assert server.stop() == 0, server.log()


async def reason_of(call: Any) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return error_details(exc).reason
    return "OK"


async def sign_up(stubs: Stubs, address: str) -> auth_pb.SignUpResponse:
    return await stubs.auth.SignUp(auth_pb.SignUpRequest(email=address, password=PASSWORD, name="Mail Tester"))


async def test_email_verification_by_smtp(smtp_server: Server, mailbox: tuple[Mailbox, int]) -> None:
    box = mailbox[0]
    address = f"verify-{secrets.token_hex(4)}@example.com"
    stubs = stubs_for(smtp_server.address)
    try:
        up = await sign_up(stubs, address)
        assert up.user.email_verified is False
        await stubs.auth.SendVerificationEmail(auth_pb.SendVerificationEmailRequest(email=address))
        [mail] = box.wait_for(address)
        assert mail["Subject"] == "Verify your email address"
        token = token_of(mail)
        verified = await stubs.auth.VerifyEmail(auth_pb.VerifyEmailRequest(token=token))
        assert verified.user.email_verified is True
        assert await reason_of(stubs.auth.VerifyEmail(auth_pb.VerifyEmailRequest(token=token))) == "INVALID_TOKEN"
        valid = await stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=up.token))
        assert valid.user.email_verified is True

        unknown = f"nobody-{secrets.token_hex(4)}@example.com"
        await stubs.auth.SendVerificationEmail(auth_pb.SendVerificationEmailRequest(email=unknown))
        await stubs.auth.RequestPasswordReset(auth_pb.RequestPasswordResetRequest(email=unknown))
        # Messages go out one at a time, in order: once a later one (a reset for the known address) has arrived,
        # anything sent for the unknown address would have arrived before it.
        before = len(box.to(address))
        await stubs.auth.RequestPasswordReset(auth_pb.RequestPasswordResetRequest(email=address))
        box.wait_for(address, count=before + 1)
    finally:
        await stubs.channel.close()
    assert not box.to(unknown)
    assert token not in smtp_server.log()


async def test_password_reset_by_smtp_revokes_sessions(smtp_server: Server, mailbox: tuple[Mailbox, int]) -> None:
    box = mailbox[0]
    address = f"reset-{secrets.token_hex(4)}@example.com"
    stubs = stubs_for(smtp_server.address)
    try:
        up = await sign_up(stubs, address)
        await stubs.auth.RequestPasswordReset(auth_pb.RequestPasswordResetRequest(email=address))
        [mail] = box.wait_for(address)
        token = token_of(mail)
        assert f"https://app.example/reset-password?token={token}" in mail.get_payload(decode=True).decode()
        assert (
            await reason_of(stubs.auth.ResetPassword(auth_pb.ResetPasswordRequest(token=token, new_password="short")))
            == "PASSWORD_TOO_SHORT"
        )
        await stubs.auth.ResetPassword(auth_pb.ResetPasswordRequest(token=token, new_password=NEW_PASSWORD))
        validate = stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=up.token))
        assert await reason_of(validate) == "INVALID_TOKEN"
        again = stubs.auth.ResetPassword(auth_pb.ResetPasswordRequest(token=token, new_password=NEW_PASSWORD))
        assert await reason_of(again) == "INVALID_TOKEN"
        old = stubs.auth.SignIn(auth_pb.SignInRequest(email=address, password=PASSWORD))
        assert await reason_of(old) == "INVALID_EMAIL_OR_PASSWORD"
        await stubs.auth.SignIn(auth_pb.SignInRequest(email=address, password=NEW_PASSWORD))
    finally:
        await stubs.channel.close()


async def test_change_email_update_and_delete(smtp_server: Server, mailbox: tuple[Mailbox, int]) -> None:
    box = mailbox[0]
    address = f"change-{secrets.token_hex(4)}@example.com"
    new_address = f"changed-{secrets.token_hex(4)}@example.com"
    stubs = stubs_for(smtp_server.address)
    try:
        up = await sign_up(stubs, address)
        taken = await sign_up(stubs, f"taken-{secrets.token_hex(4)}@example.com")
        conflict = stubs.auth.ChangeEmail(auth_pb.ChangeEmailRequest(token=up.token, new_email=taken.user.email))
        assert await reason_of(conflict) == "USER_ALREADY_EXISTS"
        await stubs.auth.ChangeEmail(auth_pb.ChangeEmailRequest(token=up.token, new_email=new_address))
        [mail] = box.wait_for(new_address)
        assert mail["Subject"] == "Confirm your new email address"
        changed = await stubs.auth.VerifyEmail(auth_pb.VerifyEmailRequest(token=token_of(mail)))
        assert changed.user.email == new_address

        updated = await stubs.auth.UpdateUser(auth_pb.UpdateUserRequest(token=up.token, name="Renamed"))
        assert updated.user.name == "Renamed"
        assert updated.user.email == new_address
        changed_pw = await stubs.auth.ChangePassword(
            auth_pb.ChangePasswordRequest(
                token=up.token, current_password=PASSWORD, new_password=NEW_PASSWORD, revoke_other_sessions=True
            )
        )
        assert changed_pw.token
        old = stubs.sessions.ValidateSession(session_pb.ValidateSessionRequest(token=up.token))
        assert await reason_of(old) == "INVALID_TOKEN"
        wrong = stubs.auth.DeleteUser(auth_pb.DeleteUserRequest(token=changed_pw.token, password=PASSWORD))
        assert await reason_of(wrong) == "INVALID_PASSWORD"
        await stubs.auth.DeleteUser(auth_pb.DeleteUserRequest(token=changed_pw.token, password=NEW_PASSWORD))
        gone = stubs.auth.SignIn(auth_pb.SignInRequest(email=new_address, password=NEW_PASSWORD))
        assert await reason_of(gone) == "INVALID_EMAIL_OR_PASSWORD"
    finally:
        await stubs.channel.close()


class WebhookReceiver(BaseHTTPRequestHandler):
    """Records signed events; fails the first request so the sender's retry is exercised."""

    secret: ClassVar[bytes] = b""
    events: ClassVar[list[dict[str, Any]]] = []
    requests: ClassVar[int] = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests += 1
        timestamp = self.headers["X-Authsidecar-Timestamp"]
        good = self.headers["X-Authsidecar-Signature"] == webhook_signature(self.secret, timestamp, body)
        if type(self).requests == 1 or not good:
            self.send_response(500 if good else 401)
        else:
            type(self).events.append(json.loads(body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[tuple[str, type[WebhookReceiver]]]:
    WebhookReceiver.secret = secrets.token_hex(16).encode()
    WebhookReceiver.events = []
    WebhookReceiver.requests = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), WebhookReceiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hooks/auth", WebhookReceiver
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


async def test_password_reset_by_signed_webhook_with_retry(
    webhook: tuple[str, type[WebhookReceiver]], tmp_path: Path, pg_url: str
) -> None:
    url, receiver = webhook
    server = start_server(
        tmp_path,
        {
            "DATABASE_URL": pg_url,
            "AUTHSIDECAR_DELIVERY": "webhook",
            "AUTHSIDECAR_WEBHOOK_URL": url,
            "AUTHSIDECAR_WEBHOOK_SECRET": receiver.secret.decode(),
        },
    )
    server.wait_for(SERVING)
    address = f"hook-{secrets.token_hex(4)}@example.com"
    stubs = stubs_for(server.address)
    try:
        await sign_up(stubs, address)
        await stubs.auth.RequestPasswordReset(auth_pb.RequestPasswordResetRequest(email=address))
        await wait_for(lambda: receiver.events, 10, "the webhook", server.log)
        [event] = receiver.events
        assert receiver.requests == 2  # the first attempt got a 500 and was retried
        assert event["type"] == "authsidecar.reset-password"
        assert event["data"]["email"] == address
        await stubs.auth.ResetPassword(
            auth_pb.ResetPasswordRequest(token=event["data"]["token"], new_password=NEW_PASSWORD)
        )
        await stubs.auth.SignIn(auth_pb.SignInRequest(email=address, password=NEW_PASSWORD))
    finally:
        await stubs.channel.close()
        assert server.stop() == 0, server.log()
    assert receiver.secret.decode() not in server.log()
