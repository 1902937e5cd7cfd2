"""Senders: each delivers one Message or raises. Retries are the queue's business."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import Protocol

from authsidecar.cache.codec import iso
from authsidecar.delivery.messages import Message

__all__ = ["DeliveryError", "LogSender", "Sender", "SmtpSender", "WebhookSender", "webhook_signature"]

log = logging.getLogger("authsidecar.delivery")


class DeliveryError(Exception):
    """A message could not be delivered this time."""


class Sender(Protocol):
    """Delivers one message; raises on failure."""

    async def send(self, message: Message) -> None:
        """Deliver or raise."""


class LogSender:
    """Development delivery: writes the link to the log (the token is in it, so never use this in production)."""

    async def send(self, message: Message) -> None:
        """Log the link."""
        log.warning("delivery=log: %s message for %s: %s", message.purpose, message.to, message.url)


class SmtpSender:
    """Real SMTP (STARTTLS, implicit TLS or plain), run in a thread with a timeout."""

    def __init__(
        self,
        host: str,
        port: int,
        security: str,
        username: str | None,
        password: str | None,
        sender: str,
        subjects: dict[str, str],
        body_template: str,
        timeout: float,
        notice_template: str = "Hello {name},\n\nthe email address of your account is now {detail}.\n",
    ) -> None:
        self._host, self._port, self._security = host, port, security
        self._username, self._password = username, password
        self._sender, self._subjects, self._body = sender, subjects, body_template
        self._notice = notice_template
        self._timeout = timeout

    def render(self, message: Message) -> EmailMessage:
        """The email for a message."""
        mail = EmailMessage()
        mail["From"] = self._sender
        mail["To"] = message.to
        mail["Subject"] = self._subjects.get(message.purpose, message.purpose)
        minutes = max(1, int((message.expires_at.timestamp() - time.time()) // 60))
        body = self._notice if message.purpose == "email-changed" else self._body
        mail.set_content(
            body.format(
                name=message.name,
                email=message.to,
                url=message.url,
                token=message.token,
                purpose=message.purpose,
                minutes=minutes,
                detail=message.detail,
            )
        )
        return mail

    async def send(self, message: Message) -> None:
        """Deliver over SMTP."""
        mail = self.render(message)
        try:
            await asyncio.to_thread(self._send_sync, mail)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"SMTP {self._host}:{self._port}: {type(exc).__name__}") from exc

    def _send_sync(self, mail: EmailMessage) -> None:
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if self._security == "ssl":
            client = smtplib.SMTP_SSL(self._host, self._port, timeout=self._timeout, context=context)
        else:
            client = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
        with client:
            if self._security == "starttls":
                client.starttls(context=context)
            if self._username:
                client.login(self._username, self._password or "")
            client.send_message(mail)


def webhook_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, "<timestamp>." + body): what receivers recompute to verify."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookSender:
    """HTTP POST of a JSON event, signed with HMAC-SHA256 (headers X-Authsidecar-Timestamp/-Signature)."""

    def __init__(self, url: str, secret: str, timeout: float) -> None:
        self._url = url
        self._secret = secret.encode()
        self._timeout = timeout

    def payload(self, message: Message) -> bytes:
        """The event body."""
        event = {
            "type": f"authsidecar.{message.purpose}",
            "data": {
                "userId": message.user_id,
                "email": message.to,
                "name": message.name,
                "token": message.token,
                "url": message.url,
                "expiresAt": iso(message.expires_at),
                **({"newEmail": message.detail} if message.detail else {}),
            },
        }
        return json.dumps(event, separators=(",", ":")).encode()

    async def send(self, message: Message) -> None:
        """POST; any non-2xx answer is a failure."""
        body = self.payload(message)
        timestamp = str(int(time.time()))
        request = urllib.request.Request(  # noqa: S310 - the URL is the operator's configured endpoint
            self._url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "authsidecar-webhook",
                "X-Authsidecar-Timestamp": timestamp,
                "X-Authsidecar-Signature": webhook_signature(self._secret, timestamp, body),
            },
        )
        try:
            await asyncio.to_thread(self._post, request)
        except (OSError, urllib.error.URLError) as exc:
            raise DeliveryError(f"webhook: {type(exc).__name__}: {getattr(exc, 'code', '')}") from exc

    def _post(self, request: urllib.request.Request) -> None:
        with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
            if not 200 <= response.status < 300:
                raise DeliveryError(f"webhook answered {response.status}")
