#!/usr/bin/env bash
# Install the Go toolchain, protoc, its Go plugins and the Go libraries of clients/go from Debian's packages
# (bookworm), only those that are missing. Needs root (apt-get). Used by `make go-tools` and .ci/run.
set -euo pipefail
# golang-github-golang-protobuf-1-5-dev is named on purpose: grpc's package accepts the 1.3 one too, which predates
# google.golang.org/protobuf and cannot marshal the generated (APIv2) messages.
PACKAGES=(golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev
  golang-google-protobuf-dev golang-google-genproto-dev golang-github-golang-protobuf-1-5-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing from Debian: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
