"""Transports. Only gRPC for now."""
