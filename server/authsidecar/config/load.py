"""``load_settings``: build and validate the settings, refusing a bad one with one line naming it."""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from authsidecar.config.settings import Settings
from authsidecar.config_error import ConfigError

__all__ = ["load_settings"]


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    parts = [str(part) for part in first["loc"]]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown setting"
    if parts and parts[0] in ("schema", "db_schema", "AUTHSIDECAR_SCHEMA"):  # a TOML path: say it as written
        return f"invalid configuration: {'.'.join(['schema', *parts[1:]])}: {message}"
    loc = ".".join(parts) or "settings"
    name = loc if loc.isupper() else f"AUTHSIDECAR_{loc.upper()}"
    return f"invalid configuration: {name}: {message}"


def load_settings(**overrides: Any) -> Settings:
    """Build and validate the settings; raise ConfigError with one line naming the bad setting.

    The ``[plugins.<name>]`` tables are checked where the plugins are loaded (``plugins.loader``: the command line
    does it right after this, so every command still refuses a plugin that is missing or misconfigured)."""
    if "AUTHSIDECAR_CONFIG" in os.environ and not os.path.isfile(os.environ["AUTHSIDECAR_CONFIG"]):
        raise ConfigError(f"invalid configuration: AUTHSIDECAR_CONFIG: no such file {os.environ['AUTHSIDECAR_CONFIG']}")
    known = {f"AUTHSIDECAR_{name.upper()}" for name in Settings.model_fields} | {"AUTHSIDECAR_CONFIG"}
    unknown = sorted(key for key in os.environ if key.upper().startswith("AUTHSIDECAR_") and key.upper() not in known)
    if unknown:
        raise ConfigError(f"invalid configuration: {unknown[0]}: unknown setting")
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except ValueError as exc:  # a malformed TOML file
        path = os.environ.get("AUTHSIDECAR_CONFIG", "")
        raise ConfigError(f"invalid configuration: AUTHSIDECAR_CONFIG: {path}: {exc}") from None
    if "{token}" not in settings.link_url_template:
        raise ConfigError("invalid configuration: AUTHSIDECAR_LINK_URL_TEMPLATE: must contain {token}")
    if settings.password_min_length > settings.password_max_length:
        raise ConfigError("invalid configuration: AUTHSIDECAR_PASSWORD_MIN_LENGTH: greater than password_max_length")
    identity = [settings.gateway_user_id_header, settings.gateway_session_id_header, settings.gateway_email_header]
    if len({name for name in identity if name}) != len([name for name in identity if name]):
        raise ConfigError(
            "invalid configuration: AUTHSIDECAR_GATEWAY_SESSION_ID_HEADER: the user id, session id and email"
            " headers need different names"
        )
    if settings.better_auth and settings.gateway_cookie_name is not None:
        raise ConfigError(
            "invalid configuration: AUTHSIDECAR_GATEWAY_COOKIE_NAME: the compat profile reads Better Auth's session"
            " cookie; name it with AUTHSIDECAR_COOKIE_PREFIX (and AUTHSIDECAR_SECURE_COOKIES) instead"
        )
    if settings.better_auth and settings.redis_url is not None:
        from authsidecar.cache.topology import parse_redis_url

        if parse_redis_url(settings.redis_url.get_secret_value()).mode == "cluster":
            raise ConfigError(
                "invalid configuration: REDIS_URL: the compat profile uses Better Auth's key names, which a Redis"
                " Cluster would spread over slots its scripts cannot span: use one server or Sentinel"
            )
    return settings
