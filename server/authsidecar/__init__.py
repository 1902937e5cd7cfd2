"""authsidecar: a gRPC authentication sidecar implementing the Better Auth data model."""

__all__ = ["__version__"]

__version__ = "0.1.0"
