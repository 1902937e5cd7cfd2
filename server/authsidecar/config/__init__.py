"""Settings: read once at start-up from environment variables and an optional TOML file, then frozen.

Sources, highest priority first: environment variables (``DATABASE_URL``, ``REDIS_URL``, ``AUTHSIDECAR_*``),
then the TOML file named by ``AUTHSIDECAR_CONFIG`` (keys are the field names of ``Settings``, without the prefix).
Unknown keys are errors; every number has a range; secrets are ``SecretStr`` and never logged.

The settings are the composition root's input: it builds every part from them (assembly.py), loads the plugins
they enable (plugins/loader.py) and hands each part plain values. No part below reads them (the layers are held
by tests/unit/test_layers.py). ``ConfigError`` lives in config_error.py, below every part that raises it.
"""

from authsidecar.config.load import load_settings
from authsidecar.config.settings import Settings
from authsidecar.config.tables import (
    MAX_BEFORE_TIMEOUT,
    CallerSettings,
    HookSettings,
    PluginSettings,
    RpcLimitSettings,
)
from authsidecar.config_error import ConfigError

__all__ = [
    "MAX_BEFORE_TIMEOUT",
    "CallerSettings",
    "ConfigError",
    "HookSettings",
    "PluginSettings",
    "RpcLimitSettings",
    "Settings",
    "load_settings",
]
