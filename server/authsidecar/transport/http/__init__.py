"""HTTP transport: the forward-auth endpoint for reverse proxies (nginx auth_request, Traefik, Caddy)."""

from authsidecar.transport.http.forward_auth import ForwardAuthServer

__all__ = ["ForwardAuthServer"]
