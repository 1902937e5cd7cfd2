"""TLS and mutual TLS for the listener, with certificates reloaded from disk without a restart.

gRPC asks for the certificate configuration before each new connection's handshake; the files are re-read when
their modification time or size changed since the last read, so replacing them (a renewal, a cert-manager
secret update) takes effect for new connections while existing ones continue. A replacement that cannot be
read or parsed is logged and the previous certificates stay in use.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import grpc

__all__ = ["TlsFiles", "is_loopback", "server_credentials"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files: the server's certificate chain and key, and (mTLS) the CA that client certificates must chain to."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None

    def paths(self) -> tuple[str, ...]:
        """Every file, in a fixed order."""
        return (self.cert_file, self.key_file, *((self.client_ca_file,) if self.client_ca_file else ()))


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _stamp(files: TlsFiles) -> tuple[tuple[int, int], ...]:
    return tuple((st.st_mtime_ns, st.st_size) for st in (os.stat(p) for p in files.paths()))


def _configuration(files: TlsFiles) -> grpc.ServerCertificateConfiguration:
    """The files' certificates, checked the way a TLS stack loads them (a key that does not match its
    certificate, a half-written file or an unreadable CA raise ssl.SSLError, an OSError) before gRPC gets them."""
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(files.cert_file, files.key_file)
    if files.client_ca_file:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=files.client_ca_file)
    key, chain = _read(files.key_file), _read(files.cert_file)
    roots = _read(files.client_ca_file) if files.client_ca_file else None
    return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=roots)


class _Reloader:
    """gRPC's certificate configuration fetcher: a new configuration when the files changed, else None."""

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._lock = threading.Lock()
        self._stamp = _stamp(files)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                stamp = _stamp(self._files)
                if stamp == self._stamp:
                    return None
                configuration = _configuration(self._files)
            except (OSError, ValueError) as exc:
                log.warning("TLS certificates changed but cannot be loaded (%s); keeping the previous ones", exc)
                return None
            self._stamp = stamp
            log.info("TLS certificates reloaded")
            return configuration


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Credentials for ``add_secure_port``; client certificates are required when a client CA is configured.
    Raises OSError / ValueError when the files cannot be read at start-up."""
    initial = _configuration(files)
    # The fetcher may return None ("unchanged"), which the type stubs do not say.
    fetcher = cast(Callable[[], grpc.ServerCertificateConfiguration], _Reloader(files))
    return grpc.dynamic_ssl_server_credentials(
        initial, fetcher, require_client_authentication=files.client_ca_file is not None
    )


def is_loopback(listen: str) -> bool:
    """Whether a ``host:port`` listening address (or a unix socket) is reachable from this machine only."""
    if listen.startswith("unix:"):
        return True
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
