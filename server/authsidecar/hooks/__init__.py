"""Database hooks and events: the public API for Python hooks.

A hook is ``fn(data: dict, context: HookContext)`` (async or sync), named ``"package.module:function"`` in the
configuration. A before hook returns None (go on), a dict of replacement data, or raises ``HookAbort``.
"""

from authsidecar.hooks.context import HookContext
from authsidecar.hooks.errors import HookAbort

__all__ = ["HookAbort", "HookContext"]
