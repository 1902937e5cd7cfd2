"""Senders: each delivers one Message or raises. Retries are the queue's business."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import ssl
import time
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib
import httpx

from authsidecar.cache.codec import iso
from authsidecar.delivery.messages import Message

__all__ = [
    "DeliveryError",
    "LogSender",
    "Sender",
    "SmtpSender",
    "WebhookSender",
    "http_client",
    "signed_post",
    "signed_request",
    "webhook_signature",
]

log = logging.getLogger("authsidecar.delivery")


class DeliveryError(Exception):
    """A message could not be delivered this time."""


class Sender(Protocol):
    """Delivers one message; raises on failure."""

    async def send(self, message: Message) -> None:
        """Deliver or raise."""

    async def close(self) -> None:
        """Release connections (after the queue has stopped)."""


class LogSender:
    """Development delivery: writes the link to the log (the token is in it, so never use this in production)."""

    async def send(self, message: Message) -> None:
        """Log the link."""
        log.warning("delivery=log: %s message for %s: %s", message.purpose, message.to, message.url)

    async def close(self) -> None:
        """Nothing to release."""


class SmtpSender:
    """Real SMTP (STARTTLS, implicit TLS or plain) with a timeout, through aiosmtplib."""

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
        ca_file: str | None = None,
    ) -> None:
        self._ca_file = ca_file
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
        """Deliver over SMTP (aiosmtplib: on the event loop, no thread), with the configured security: implicit
        TLS, required STARTTLS, or plain (never an opportunistic downgrade)."""
        mail = self.render(message)
        try:
            await aiosmtplib.send(
                mail,
                hostname=self._host,
                port=self._port,
                username=self._username or None,
                password=self._password if self._username else None,
                use_tls=self._security == "ssl",
                start_tls=self._security == "starttls",
                tls_context=ssl.create_default_context(cafile=self._ca_file) if self._security != "none" else None,
                timeout=self._timeout,
            )
        except (OSError, aiosmtplib.SMTPException, TimeoutError) as exc:
            raise DeliveryError(f"SMTP {self._host}:{self._port}: {type(exc).__name__}") from exc

    async def close(self) -> None:
        """Nothing held between messages."""


def webhook_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, "<timestamp>." + body): what receivers recompute to verify."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def http_client(max_connections: int = 32) -> httpx.AsyncClient:
    """The pooled async HTTP client every outgoing call of a process shares (keep-alive; each call passes its
    own timeout, which bounds connect, read and write; no redirects: a signed body goes where it was sent)."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections // 2),
        follow_redirects=False,
    )


def signed_request(
    client: httpx.AsyncClient, url: str, secret: bytes, body: bytes, time_limit: float, event_id: str | None = None
) -> httpx.Request:
    """A POST of a JSON body signed like every webhook of ours (X-Authsidecar-Timestamp / -Signature)."""
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "authsidecar-webhook",
        "X-Authsidecar-Timestamp": timestamp,
        "X-Authsidecar-Signature": webhook_signature(secret, timestamp, body),
    }
    if event_id:
        headers["X-Authsidecar-Event-Id"] = event_id
    return client.build_request("POST", url, content=body, headers=headers, timeout=time_limit)


async def signed_post(
    client: httpx.AsyncClient, url: str, secret: bytes, body: bytes, time_limit: float, event_id: str | None = None
) -> httpx.Response:
    """Send a signed POST (see signed_request) and read the answer."""
    return await client.send(signed_request(client, url, secret, body, time_limit, event_id))


class WebhookSender:
    """HTTP POST of a JSON event, signed with HMAC-SHA256 (headers X-Authsidecar-Timestamp/-Signature), through
    one pooled httpx client."""

    def __init__(self, url: str, secret: str, timeout: float, client: httpx.AsyncClient | None = None) -> None:
        self._url = url
        self._secret = secret.encode()
        self._timeout = timeout
        # The process's pooled HTTP client (shared with the hooks), or one of its own.
        self._own = client is None
        self._client = client or http_client()

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
        try:
            response = await signed_post(self._client, self._url, self._secret, body, self._timeout)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook: {type(exc).__name__}") from exc
        if not response.is_success:
            raise DeliveryError(f"webhook answered {response.status_code}")

    async def close(self) -> None:
        """Close the pooled connections (when the client is this sender's own)."""
        if self._own:
            await self._client.aclose()
