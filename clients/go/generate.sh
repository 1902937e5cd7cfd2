#!/usr/bin/env bash
# Regenerate authsidecarv1/ (committed) from proto/authsidecar/v1 with Debian bookworm's protoc 3.21.12,
# protoc-gen-go v1.28.1 and protoc-gen-go-grpc (grpc-go 1.33.3). The google/rpc protos under proto/ are not
# generated: their go_package is google.golang.org/genproto, which the client imports. Run via `make proto-go`.
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in protoc protoc-gen-go protoc-gen-go-grpc; do
  command -v "$tool" >/dev/null || { echo "generate.sh: $tool is not installed; run: make go-tools" >&2; exit 1; }
done
MODULE=github.com/authsidecar/authsidecar/clients/go
rm -f clients/go/authsidecarv1/*.pb.go
protoc -I proto \
  --go_out=clients/go --go_opt=module=$MODULE \
  --go-grpc_out=clients/go --go-grpc_opt=module=$MODULE \
  proto/authsidecar/v1/*.proto
