"""Which hooks run on which event, and running the before hooks.

Configuration (``[[hooks]]`` in the TOML file; see config/tables.py ``HookSettings``) names events as
``"<model>.<event>"`` with ``*`` wildcards. Before hooks run in configuration order inside the transaction of the
change, each seeing the data as the previous one left it; after hooks become outbox entries of that transaction
(hooks/dispatcher.py delivers them).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from authsidecar.errors import HookFailed, HookRejected
from authsidecar.hooks.context import HookContext
from authsidecar.hooks.errors import HookAbort

__all__ = ["EVENTS", "MODELS", "BeforeHook", "HookRunner", "PythonHook", "import_callable", "matches"]

log = logging.getLogger("authsidecar.hooks")

MODELS = ("user", "session", "account", "verification")
EVENTS = ("create", "update", "delete")
MAX_MESSAGE = 500


def matches(pattern: str, model: str, event: str) -> bool:
    """``"user.create"``, ``"user.*"``, ``"*.delete"`` or ``"*"``."""
    if pattern == "*":
        return True
    want_model, _, want_event = pattern.partition(".")
    return want_model in ("*", model) and want_event in ("*", event)


def check_pattern(pattern: str) -> str:
    """Raise ValueError for a pattern that can match nothing."""
    if pattern == "*":
        return pattern
    model, dot, event = pattern.partition(".")
    if not dot or model not in (*MODELS, "*") or event not in (*EVENTS, "*"):
        raise ValueError(
            f"{pattern!r}: expected <model>.<event> with model in {', '.join(MODELS)} and event in"
            f" {', '.join(EVENTS)} (or *)"
        )
    return pattern


def import_callable(path: str) -> Callable[..., Any]:
    """Import ``"package.module:function"``; raises ValueError when it cannot be used."""
    module_name, sep, name = path.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"{path!r}: expected package.module:function")
    try:
        function = importlib.import_module(module_name)
        for part in name.split("."):
            function = getattr(function, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {path}: {exc}") from None
    if not callable(function):
        raise ValueError(f"{path} is not callable")
    return function


class BeforeHook(Protocol):
    """A before hook: the replacement data (or None), or raises HookRejected / HookFailed."""

    name: str

    async def before(self, data: dict[str, Any], context: HookContext, call: dict[str, Any]) -> dict[str, Any] | None:
        """Run the hook on one change."""


class PythonHook:
    """A Python callable ``fn(data, context)``, async or sync (a sync one runs in a worker thread)."""

    def __init__(self, path: str, function: Callable[..., Any] | None = None, timeout: float = 10.0) -> None:
        self.name = path
        self._timeout = timeout  # before hooks: the change's transaction is open meanwhile
        self._function = function or import_callable(path)
        self._is_async = inspect.iscoroutinefunction(self._function)

    async def call(self, data: dict[str, Any], context: HookContext) -> Any:
        """Call it (after hooks: any exception is a failed delivery, retried)."""
        if self._is_async:
            return await self._function(data, context)
        result = await asyncio.to_thread(self._function, data, context)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def before(self, data: dict[str, Any], context: HookContext, call: dict[str, Any]) -> dict[str, Any] | None:
        """None, replacement data, or HookRejected from a HookAbort; anything else it raises is HookFailed."""
        try:
            async with asyncio.timeout(self._timeout):
                result = await self.call(data, context)
        except HookAbort as abort:
            raise HookRejected(_message(abort.message), abort.code) from None
        except TimeoutError:
            log.warning(
                "before hook %s took more than %gs on %s.%s", self.name, self._timeout, context.model, context.event
            )
            raise HookFailed() from None
        except Exception:
            log.exception("before hook %s failed on %s.%s", self.name, context.model, context.event)
            raise HookFailed() from None
        if result is not None and not isinstance(result, dict):
            log.error("before hook %s returned %s (expected None or a dict)", self.name, type(result).__name__)
            raise HookFailed()
        return result


def _message(text: Any) -> str:
    """A hook's message as the client sees it: a short single line."""
    line = " ".join(str(text).split())
    return line[:MAX_MESSAGE] or "rejected by a hook"


@dataclass(frozen=True, slots=True)
class _Before:
    patterns: tuple[str, ...]
    hook: BeforeHook
    fail_open: bool


@dataclass(frozen=True, slots=True)
class AfterTarget:
    """Where after events of some kinds go: a Python hook, a webhook, or the event stream (by target name)."""

    patterns: tuple[str, ...]
    target: str


class HookRunner:
    """The configured hooks, by event."""

    def __init__(self) -> None:
        self._before: list[_Before] = []
        self._after: list[AfterTarget] = []
        self._cache: dict[tuple[str, str, str], tuple[Any, ...]] = {}

    def add_before(self, patterns: tuple[str, ...], hook: BeforeHook, fail_open: bool = False) -> None:
        """Register a before hook."""
        self._before.append(_Before(patterns, hook, fail_open))
        self._cache.clear()

    def add_after(self, patterns: tuple[str, ...], target: str) -> None:
        """Send after events matching ``patterns`` to the dispatcher's ``target``."""
        self._after.append(AfterTarget(patterns, target))
        self._cache.clear()

    def __bool__(self) -> bool:
        return bool(self._before or self._after)

    def _select(self, when: Literal["before", "after"], model: str, event: str) -> tuple[Any, ...]:
        key = (when, model, event)
        found = self._cache.get(key)
        if found is None:
            items = self._before if when == "before" else self._after
            found = tuple(i for i in items if any(matches(p, model, event) for p in i.patterns))
            self._cache[key] = found
        return found

    def has_before(self, model: str, event: str) -> bool:
        """Whether a before hook runs on this event."""
        return bool(self._select("before", model, event))

    def after_targets(self, model: str, event: str) -> tuple[str, ...]:
        """The targets this event is delivered to after commit (each once)."""
        return tuple(dict.fromkeys(a.target for a in self._select("after", model, event)))

    async def before(self, model: str, event: str, data: dict[str, Any], call: dict[str, Any]) -> dict[str, Any]:
        """Run the before hooks in order; returns the data as they left it (the answers merged, each hook seeing
        the previous one's result). Raises HookRejected or HookFailed."""
        context = HookContext.of(model, event, "before", call)
        for entry in self._select("before", model, event):
            try:
                answer = await entry.hook.before(dict(data), context, call)
            except HookFailed:
                if not entry.fail_open:
                    raise
                log.warning(
                    "before hook %s could not be run on %s.%s; going on (fail open)", entry.hook.name, model, event
                )
                continue
            if answer:
                data = {**data, **answer}
        return data
