"""The error a Python before hook raises to refuse a change."""

from __future__ import annotations

__all__ = ["HookAbort"]


class HookAbort(Exception):
    """Refuse the change: the client gets ``code`` (a gRPC status name such as "PERMISSION_DENIED",
    "INVALID_ARGUMENT", "FAILED_PRECONDITION") with reason HOOK_REJECTED and ``message``."""

    def __init__(self, message: str = "rejected by a hook", code: str = "PERMISSION_DENIED") -> None:
        self.message = message
        self.code = code
        super().__init__(message)
