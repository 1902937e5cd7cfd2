"""Caller authentication (optional): which calling services may call which RPCs.

A caller is named in the configuration and recognised by a service key sent as ``authorization: Bearer <key>``
metadata (the configuration holds only its SHA-256), or by its client certificate under mTLS (a subject common
name or DNS/URI subject alternative name). Each caller is allowed a list of RPCs (``*``: all). With no caller
configured, every call is allowed (the listener's TLS and network policy are then the only guard).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from authsidecar.errors import CallerNotAllowed, CallerNotAuthenticated
from authsidecar_client.v1 import auth_service_pb2, session_service_pb2, two_factor_service_pb2

__all__ = ["RPC_NAMES", "Caller", "CallerPolicy"]

RPC_NAMES = frozenset(
    method.name
    for module, service in (
        (auth_service_pb2, "AuthService"),
        (session_service_pb2, "SessionService"),
        (two_factor_service_pb2, "TwoFactorService"),  # the two_factor plugin's
    )
    for method in module.DESCRIPTOR.services_by_name[service].methods
) | {"Check"}  # envoy.service.auth.v3.Authorization/Check (AUTHSIDECAR_EXT_AUTHZ)


@dataclass(frozen=True, slots=True)
class Caller:
    """One calling service."""

    name: str
    allow: frozenset[str]
    key_sha256: str | None = None
    certificate_names: frozenset[str] = frozenset()

    def allows(self, rpc: str) -> bool:
        """Whether this caller may call ``rpc``."""
        return "*" in self.allow or rpc in self.allow


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class CallerPolicy:
    """Identifies the caller of each call and checks the RPC against its list."""

    def __init__(self, callers: Iterable[Caller]) -> None:
        self._callers = list(callers)
        self._by_name = {name: c for c in self._callers for name in c.certificate_names}

    @property
    def enabled(self) -> bool:
        """Whether any caller is configured."""
        return bool(self._callers)

    def identify(
        self, metadata: Sequence[tuple[str, str | bytes]], auth_context: Mapping[str, Iterable[bytes]]
    ) -> Caller:
        """The caller of a call; raises CallerNotAuthenticated."""
        for key, value in metadata:
            if key == "authorization":
                scheme, _, secret = _text(value).partition(" ")
                if scheme.lower() != "bearer" or not secret:
                    raise CallerNotAuthenticated("authorization metadata must be: Bearer <service key>")
                digest = hashlib.sha256(secret.strip().encode()).hexdigest()
                for caller in self._callers:
                    if caller.key_sha256 is not None and hmac.compare_digest(caller.key_sha256, digest):
                        return caller
                raise CallerNotAuthenticated("unknown service key")
        for prop in ("x509_common_name", "x509_subject_alternative_name"):
            for value in auth_context.get(prop, ()):
                named = self._by_name.get(_text(value))
                if named is not None:
                    return named
        raise CallerNotAuthenticated()

    def authorize(
        self, rpc: str, metadata: Sequence[tuple[str, str | bytes]], auth_context: Mapping[str, Iterable[bytes]]
    ) -> None:
        """Raise CallerNotAuthenticated / CallerNotAllowed unless the caller may call ``rpc``."""
        if not self._callers:
            return
        caller = self.identify(metadata, auth_context)
        if not caller.allows(rpc):
            raise CallerNotAllowed(f"caller {caller.name!r} may not call {rpc}")
