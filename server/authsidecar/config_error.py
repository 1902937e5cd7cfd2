"""``ConfigError``: a setting is invalid. At the bottom of the layers, so that every part that checks a setting
(the settings themselves, the hooks, the plugin loader, the composition root) raises the same exception, and the
command line answers each with one line and exit status 2."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(Exception):
    """A setting is invalid; the message is one line naming the setting."""
