"""Python client for authsidecar: generated stubs in ``authsidecar_client.v1`` and a small async wrapper."""

from authsidecar_client.client import AuthClient, AuthSidecarError, fields_of

__all__ = ["AuthClient", "AuthSidecarError", "fields_of"]
