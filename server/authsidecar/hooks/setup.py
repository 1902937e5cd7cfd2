"""Builds the hook runner and the outbox's delivery targets from the hook options, for the composition root.

The composition root passes the settings: they are a ``HookOptions`` (the few options read here). The hooks never
import the settings, which sit above them (tests/unit/test_layers.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from authsidecar.cache.redis import connect_redis
from authsidecar.cache.stream import RedisEventStream
from authsidecar.config_error import ConfigError
from authsidecar.hooks.context import HookContext
from authsidecar.hooks.dispatcher import Deliver
from authsidecar.hooks.runner import HookRunner, PythonHook
from authsidecar.hooks.webhooks import WebhookHook

if TYPE_CHECKING:
    from pydantic import SecretStr

__all__ = ["STREAM_TARGET", "HookOptions", "HookSetup", "HookSpec", "build_hooks"]

STREAM_TARGET = "stream:redis"


class HookSpec(Protocol):
    """One ``[[hooks]]`` table (the settings' ``HookSettings`` is one)."""

    @property
    def events(self) -> Sequence[str]:
        """Event patterns ("user.create", "session.*", "*.delete", "*")."""

    @property
    def when(self) -> str:
        """Either "before" or "after"."""

    @property
    def call(self) -> str | None:
        """A Python hook: "package.module:function"."""

    @property
    def url(self) -> str | None:
        """A webhook hook: its URL."""

    @property
    def secret(self) -> SecretStr | None:
        """The webhook's HMAC key (default: HookOptions.webhook_secret)."""

    @property
    def timeout(self) -> float:
        """Seconds one call may take."""

    @property
    def on_failure(self) -> str:
        """Before hooks that cannot be run: "reject" the change or "continue"."""


class HookOptions(Protocol):
    """The options ``build_hooks`` reads (the settings are one)."""

    @property
    def hooks(self) -> Sequence[HookSpec]:
        """``[[hooks]]``, in configuration order."""

    @property
    def webhook_secret(self) -> SecretStr | None:
        """The default HMAC key of webhook hooks."""

    @property
    def event_stream(self) -> str:
        """Either "redis" (publish every after event to a Redis Stream) or "off"."""

    @property
    def event_stream_key(self) -> str:
        """The stream's key, after the Redis key prefix."""

    @property
    def event_stream_max_length(self) -> int:
        """The stream is trimmed to about this many entries."""

    @property
    def effective_redis_key_prefix(self) -> str:
        """The prefix of every Redis key."""

    @property
    def redis_url(self) -> SecretStr | None:
        """REDIS_URL."""

    @property
    def redis_timeout(self) -> float:
        """Seconds a Redis call may take."""

    @property
    def redis_max_connections(self) -> int:
        """Connections of a Redis pool."""


@dataclass
class HookSetup:
    """The runner (before hooks, and which targets get which after events) and the targets' delivery functions."""

    runner: HookRunner = field(default_factory=HookRunner)
    targets: dict[str, Deliver] = field(default_factory=dict)
    stream: RedisEventStream | None = None


def _after_python(hook: PythonHook) -> Deliver:
    async def deliver(event: dict[str, Any]) -> None:
        context = HookContext.of(
            str(event["model"]),
            str(event["event"]),
            "after",
            event.get("context") or {},
            event_id=str(event["id"]),
            occurred_at=str(event.get("occurredAt", "")),
        )
        await hook.call(event["data"], context)

    return deliver


def build_hooks(settings: HookOptions, client: httpx.AsyncClient) -> HookSetup:
    """Every configured hook, and the event stream when it is on; raises ConfigError on an unusable one."""
    setup = HookSetup()
    for index, spec in enumerate(settings.hooks):
        patterns = tuple(spec.events)
        where = f"hooks[{index}]"
        if spec.call is not None:
            try:
                python = PythonHook(spec.call, timeout=spec.timeout)
            except ValueError as exc:
                raise ConfigError(f"invalid configuration: {where}.call: {exc}") from None
            if spec.when == "before":
                setup.runner.add_before(patterns, python, spec.on_failure == "continue")
            else:
                target = f"python:{spec.call}"
                setup.targets.setdefault(target, _after_python(python))
                setup.runner.add_after(patterns, target)
            continue
        assert spec.url is not None
        secret = spec.secret or settings.webhook_secret
        if secret is None or not secret.get_secret_value():
            raise ConfigError(
                f"invalid configuration: {where}.secret: a webhook hook needs a secret (or AUTHSIDECAR_WEBHOOK_SECRET)"
            )
        webhook = WebhookHook(spec.url, secret.get_secret_value(), spec.timeout, client)
        if spec.when == "before":
            setup.runner.add_before(patterns, webhook, spec.on_failure == "continue")
        else:
            target = f"webhook:{spec.url}"
            setup.targets.setdefault(target, webhook.deliver)
            setup.runner.add_after(patterns, target)
    if settings.event_stream == "redis":
        if settings.redis_url is None:
            raise ConfigError("invalid configuration: AUTHSIDECAR_EVENT_STREAM: redis needs REDIS_URL")
        try:
            redis = connect_redis(
                settings.redis_url.get_secret_value(), max(settings.redis_timeout, 2.0), settings.redis_max_connections
            )
        except ValueError as exc:
            raise ConfigError(f"invalid configuration: REDIS_URL: {exc}") from None
        key = settings.effective_redis_key_prefix + settings.event_stream_key
        setup.stream = RedisEventStream(redis, key, settings.event_stream_max_length)
        setup.targets[STREAM_TARGET] = setup.stream.publish
        setup.runner.add_after(("*",), STREAM_TARGET)
    return setup
