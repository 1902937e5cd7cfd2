"""Log lines that say which call they belong to, as text or as JSON.

Every RPC gets a request id: the caller's ``x-request-id`` metadata when it sends a sane one (so a gateway's id
follows the call), else a random one, made only when something needs it (a log line, an INTERNAL error's
ErrorInfo metadata): nothing is spent on calls that log nothing.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time
from contextvars import ContextVar
from typing import Any

__all__ = ["begin_request", "configure_logging", "request_id"]

_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class _Request:
    """The current call: its RPC name and, lazily, its id."""

    __slots__ = ("_context", "_id", "rpc")

    def __init__(self, rpc: str, context: Any) -> None:
        self.rpc = rpc
        self._context = context
        self._id: str | None = None

    @property
    def id(self) -> str:
        if self._id is None:
            given = ""
            try:
                for key, value in self._context.invocation_metadata() or ():
                    if key == "x-request-id" and isinstance(value, str):
                        given = value
                        break
            except Exception:
                given = ""
            self._id = given if _SANE.match(given) else secrets.token_hex(8)
            self._context = None
        return self._id


_REQUEST: ContextVar[_Request | None] = ContextVar("authsidecar_request", default=None)


def begin_request(rpc: str, context: Any) -> None:
    """A call starts (in its own task: the request ends with it)."""
    _REQUEST.set(_Request(rpc, context))


def request_id() -> str:
    """The current call's request id (a new random one outside a call)."""
    current = _REQUEST.get()
    return current.id if current is not None else secrets.token_hex(8)


class _CallFilter(logging.Filter):
    """Adds ``request_id`` and ``rpc`` to every record ("-" outside a call)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _REQUEST.get()
        record.request_id = current.id if current is not None else "-"
        record.rpc = current.rpc if current is not None else "-"
        return True


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, (worker,) message, rpc, request_id (and the traceback)."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
        }
        if self._worker is not None:
            line["worker"] = self._worker
        line["message"] = record.getMessage()
        if getattr(record, "request_id", "-") != "-":
            line["rpc"] = getattr(record, "rpc", "-")
            line["request_id"] = getattr(record, "request_id", "-")
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str, fmt: str, worker: int | None = None) -> None:
    """The root handler on stderr: ``fmt`` "text" (one line, the request id in brackets) or "json"; ``worker``
    (a process of ``serve --workers``): its index on every line ("worker 1" / ``"worker": 1``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_CallFilter())
    if fmt == "json":
        formatter: logging.Formatter = _JsonFormatter(worker)
        formatter.converter = time.gmtime
    else:
        tag = "" if worker is None else f"worker {worker} "
        formatter = logging.Formatter(f"%(asctime)s %(levelname)s %(name)s {tag}[%(request_id)s]: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
