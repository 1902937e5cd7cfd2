"""Hooks as webhooks: a signed POST of the event to the hook's URL.

Request body (JSON): ``{"id", "type": "<model>.<event>", "model", "event", "when", "data", "context",
"occurredAt"}``, signed like every webhook of ours (X-Authsidecar-Timestamp, X-Authsidecar-Signature: sha256 HMAC
of "<timestamp>." + body; X-Authsidecar-Event-Id for after events).

A before hook's answer (2xx): empty or ``{}`` to go on; ``{"data": {...}}`` to replace fields; ``{"abort": true}``
(optionally with ``"message"``) to refuse with PERMISSION_DENIED; ``{"error": {"code": "INVALID_ARGUMENT",
"message": "..."}}`` to refuse with that status. Anything else (timeout, non-2xx, not JSON) is a failure. After
hooks need only a 2xx; anything else is retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import httpx

from authsidecar.delivery.senders import DeliveryError, signed_post, signed_request
from authsidecar.errors import HOOK_STATUSES, HookFailed, HookRejected
from authsidecar.hooks.context import HookContext

__all__ = ["WebhookHook"]

log = logging.getLogger("authsidecar.hooks")
MAX_ANSWER = 256 * 1024


class WebhookHook:
    """One configured webhook hook."""

    def __init__(self, url: str, secret: str, timeout: float, client: httpx.AsyncClient) -> None:
        self.name = url
        self._url = url
        self._secret = secret.encode()
        self._timeout = timeout
        self._client = client

    async def before(self, data: dict[str, Any], context: HookContext, call: dict[str, Any]) -> dict[str, Any] | None:
        """POST the change and read the answer; raises HookRejected or HookFailed."""
        body = {
            "id": uuid.uuid4().hex,
            "type": f"{context.model}.{context.event}",
            "model": context.model,
            "event": context.event,
            "when": "before",
            "data": data,
            "context": call,
        }
        try:  # the timeout bounds the whole exchange (a trickling answer too): the change's transaction is open
            async with asyncio.timeout(self._timeout):
                status, content = await self._exchange(_encode(body))
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("before hook %s: %s", self._url, type(exc).__name__)
            raise HookFailed() from None
        if not 200 <= status < 300:
            log.warning("before hook %s answered %d", self._url, status)
            raise HookFailed()
        return _answer(self._url, content)

    async def _exchange(self, body: bytes) -> tuple[int, bytes]:
        """POST and read at most MAX_ANSWER + 1 bytes of the answer."""
        request = signed_request(self._client, self._url, self._secret, body, self._timeout)
        response = await self._client.send(request, stream=True)
        try:
            content = b""
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > MAX_ANSWER:
                    break
            return response.status_code, content
        finally:
            await response.aclose()

    async def deliver(self, event: dict[str, Any]) -> None:
        """POST an after event; raises DeliveryError unless the answer is 2xx."""
        try:
            async with asyncio.timeout(self._timeout):
                response = await signed_post(
                    self._client, self._url, self._secret, _encode(event), self._timeout, str(event.get("id", ""))
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            raise DeliveryError(f"{type(exc).__name__}") from exc
        if not response.is_success:
            raise DeliveryError(f"answered {response.status_code}")


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), default=str).encode()


def _answer(url: str, content: bytes) -> dict[str, Any] | None:
    """The replacement data of a before hook's answer, or the rejection it asks for."""
    if not content.strip():
        return None
    if len(content) > MAX_ANSWER:
        log.warning("before hook %s answered more than %d bytes", url, MAX_ANSWER)
        raise HookFailed()
    try:
        answer = json.loads(content)
    except ValueError:
        log.warning("before hook %s answered something that is not JSON", url)
        raise HookFailed() from None
    if not isinstance(answer, dict):
        log.warning("before hook %s answered a JSON %s, not an object", url, type(answer).__name__)
        raise HookFailed()
    error = answer.get("error")
    if isinstance(error, dict):
        code = str(error.get("code", "PERMISSION_DENIED")).upper()
        if code not in HOOK_STATUSES:
            code = "PERMISSION_DENIED"
        raise HookRejected(_text(error.get("message")), code)
    if error is not None or answer.get("abort") is True:
        raise HookRejected(_text(answer.get("message") if error is None else error))
    data = answer.get("data")
    if data is None:
        return None
    if not isinstance(data, dict):
        log.warning("before hook %s answered data that is not an object", url)
        raise HookFailed()
    return data


def _text(value: Any) -> str | None:
    if value is None:
        return None
    line = " ".join(str(value).split())[:500]
    return line or None
