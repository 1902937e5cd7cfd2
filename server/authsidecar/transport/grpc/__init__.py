"""gRPC transport: thin servicers (proto <-> domain), status mapping, server life cycle."""

from authsidecar.transport.grpc.server import GrpcServer

__all__ = ["GrpcServer"]
