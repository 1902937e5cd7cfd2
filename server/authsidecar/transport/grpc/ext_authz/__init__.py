"""Envoy ext_authz messages, generated from authsidecar_ext_authz.proto (`make proto`). Do not edit the _pb2 files."""
