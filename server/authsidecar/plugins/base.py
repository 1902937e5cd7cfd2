"""The plugin interface.

A plugin is a class published under the ``authsidecar.plugins`` entry point group and enabled by name in the
configuration (``[plugins.<name>]``, whose other keys are its options). It is built with its options, then:

- ``schema()`` says what it adds to the database: fields on core models (``user``, ``session``) and tables of its
  own. They are created by ``authsidecar migrate``, shown by ``generate``, checked by ``migrate --check`` and at
  start-up, and renamed by ``[plugins.<name>.schema.<model>]`` (``model_name``, ``fields``) like the core tables.
- ``setup(host)``, at start-up, gets what it may use (the server's secrets, the store of record with hooks and
  outbox, the SQL tables of its own, the session manager, the hasher, the limits, the hook runner to add hooks
  to) and returns its parts:
  gRPC services (unary RPCs, served with reflection, health and the same call guard as the core services:
  caller checks, error model, malformed requests; the servicer does nothing for them) and, optionally, a sign-in gate that may turn a password sign-in
  into a challenge (a second factor) or refuse it (a ban). Every enabled plugin's gate is asked, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from authsidecar.domain.fields import FieldDef, ModelDef

if TYPE_CHECKING:
    from pydantic import SecretStr

    from authsidecar.domain.ports import Database
    from authsidecar.hooks.dispatcher import Deliver
    from authsidecar.hooks.runner import HookRunner
    from authsidecar.security.passwords import PasswordHasher
    from authsidecar.services.accounts import AccountService, SignInGate
    from authsidecar.services.limits import Limits, LoginGuard
    from authsidecar.services.profile import ProfileService
    from authsidecar.services.sessions import SessionManager
    from authsidecar.storage.database import SqlDatabase
    from authsidecar.transport.grpc.convert import Converter

__all__ = ["GrpcService", "Plugin", "PluginHost", "PluginParts", "PluginSchema", "ServerSecrets"]


class ServerSecrets(Protocol):
    """The server's secrets, for a plugin that keys data of its own with them (the settings are one)."""

    @property
    def better_auth(self) -> bool:
        """The Better Auth compatibility profile is on (then Better Auth's secrets key shared data)."""

    @property
    def secret(self) -> SecretStr | None:
        """AUTHSIDECAR_SECRET."""

    @property
    def better_auth_secret(self) -> SecretStr | None:
        """Better Auth's secret as set in the TOML file (the environment's BETTER_AUTH_SECRET comes first)."""

    def better_auth_current_secret(self) -> str:
        """The secret Better Auth signs with now; raises ConfigError when there is none."""

    def better_auth_secret_versions(self) -> list[tuple[int, str]]:
        """BETTER_AUTH_SECRETS as (version, secret) pairs, current first ([] when unset)."""


@dataclass(frozen=True, slots=True)
class PluginSchema:
    """What a plugin adds: ``fields`` on core models (additional fields: ``builtin=False``, by core model name) and
    ``models`` of its own (their ``references`` may name core models)."""

    fields: Mapping[str, tuple[FieldDef, ...]] = field(default_factory=dict)
    models: tuple[ModelDef, ...] = ()


@dataclass(frozen=True, slots=True)
class GrpcService:
    """A gRPC service of a plugin: its full name (for reflection and health), the generated
    ``add_<Service>Servicer_to_server`` function and the servicer."""

    name: str
    add: Callable[[Any, Any], None]
    servicer: Any


@dataclass(frozen=True)
class PluginHost:
    """What a plugin may use, built by the composition root (each part typed; nothing to look up by name)."""

    secrets: ServerSecrets  # the composition root passes the settings, which have these and more
    store: Database  # units of work with hooks and the outbox: write core records through it
    database: SqlDatabase  # the plugin's own tables: database.schema.plugin_tables[<model>]
    sessions: SessionManager
    hasher: PasswordHasher
    limits: Limits
    guard: LoginGuard
    hooks: HookRunner  # add_before(patterns, hook): a before hook (an object with ``name`` and ``before()``)
    targets: dict[str, Deliver]  # the outbox's delivery targets (see on_after)
    accounts: AccountService  # sign-up and sign-in, as the core RPCs run them
    profile: ProfileService  # profile and password changes
    convert: Converter  # domain records -> the API's messages (User, Session), for a plugin's replies

    def on_after(self, patterns: tuple[str, ...], name: str, deliver: Deliver) -> None:
        """Deliver the after events matching ``patterns`` ("user.create", "session.*", ...) to ``deliver(event)``
        through the outbox: at least once, in order per user, retried while it raises. ``name`` identifies the
        target in the outbox (keep it stable across releases)."""
        self.targets[name] = deliver
        self.hooks.add_after(patterns, name)


@dataclass
class PluginParts:
    """What a plugin contributes at start-up."""

    services: list[GrpcService] = field(default_factory=list)
    sign_in_gate: SignInGate | None = None


class Plugin(Protocol):
    """A plugin class: ``Plugin(options)`` raises ValueError for bad options."""

    name: str

    def schema(self) -> PluginSchema:
        """Fields and tables the plugin adds."""

    def setup(self, host: PluginHost) -> PluginParts:
        """Build the plugin's components; raise ValueError when it cannot run with this configuration."""
