#!/usr/bin/env bash
# Assemble vendor/ (not committed) from Debian's Go sources so that the module builds and tests OFFLINE with
# `-mod=vendor`: no module proxy, no checksum database. Debian ships libraries as GOPATH trees under
# /usr/share/gocode/src (packages golang-google-grpc-dev, golang-google-protobuf-dev, ...; see debian-deps.sh),
# not as module zips, so a module build cannot use them directly. This script
#   1. checks that the installed grpc-go and google.golang.org/protobuf are the versions go.mod names (the generated
#      code needs grpc >= 1.32 for SupportPackageIsVersion7 and protobuf >= 1.28 for protoc-gen-go 1.28's output),
#   2. lists every non-standard package our packages and tests import, transitively (GOPATH mode over a temporary
#      GOPATH that links this folder at its import path, plus /usr/share/gocode),
#   3. copies those package folders into vendor/ and writes vendor/modules.txt from go.mod's requirements.
# Idempotent: does nothing when vendor/modules.txt is newer than go.mod, this script and the Go sources.
# Usage: clients/go/vendor.sh [--force]
set -euo pipefail
cd "$(dirname "$0")"
GOCODE=${GOCODE:-/usr/share/gocode/src}
MODULE=github.com/authsidecar/authsidecar/clients/go

if ! command -v go >/dev/null; then
  echo "vendor.sh: go is not installed; run: make go-tools   (Debian: apt-get install golang-go ...; see clients/go/debian-deps.sh)" >&2
  exit 1
fi
if [ ! -d "$GOCODE/google.golang.org/grpc" ] || [ ! -d "$GOCODE/google.golang.org/protobuf" ]; then
  echo "vendor.sh: Go libraries missing under $GOCODE; run: make go-tools" >&2
  exit 1
fi

if [ "${1:-}" != "--force" ] && [ -f vendor/modules.txt ] && [ -z "$(find go.mod vendor.sh ./*.go authsidecarv1 -newer vendor/modules.txt 2>/dev/null)" ]; then
  exit 0
fi

# go.mod's requirements: "path version" per line.
requirements=$(awk '/^require \(/{block=1; next} block && /^\)/{block=0} block && NF>=2 {print $1, $2} /^require [^(]/{print $2, $3}' go.mod)
version_of() { awk -v m="$1" '$1 == m {print $2}' <<<"$requirements"; }

# 1. The installed versions must be the ones go.mod names.
grpc_installed=v$(sed -n 's/^const Version = "\(.*\)"/\1/p' "$GOCODE/google.golang.org/grpc/version.go")
pb=$GOCODE/google.golang.org/protobuf/internal/version/version.go
pb_installed=v$(awk '/^\tMajor *=/{a=$3} /^\tMinor *=/{b=$3} /^\tPatch *=/{c=$3} END{print a"."b"."c}' "$pb")
for pair in "google.golang.org/grpc $grpc_installed" "google.golang.org/protobuf $pb_installed"; do
  set -- $pair
  if [ "$(version_of "$1")" != "$2" ]; then
    echo "vendor.sh: $GOCODE has $1 $2 but go.mod requires $(version_of "$1"); install the matching Debian package or update go.mod" >&2
    exit 1
  fi
done
if [ ! -f "$GOCODE/github.com/golang/protobuf/proto/registry.go" ]; then
  echo "vendor.sh: github.com/golang/protobuf is the 1.3 API (golang-github-golang-protobuf-1-3-dev); it cannot marshal the generated messages: run make go-tools (installs golang-github-golang-protobuf-1-5-dev)" >&2
  exit 1
fi

# 2. The transitive non-standard imports of our packages and their tests.
gopath=$(mktemp -d)
trap 'rm -rf "$gopath" vendor.new' EXIT
mkdir -p "$gopath/src/$(dirname "$MODULE")"
ln -s "$PWD" "$gopath/src/$MODULE"
rm -rf vendor
own=$(find . -name '*.go' -not -path './vendor/*' -exec dirname {} \; | sort -u | sed "s|^\.|$MODULE|")
packages=$(GO111MODULE=off GOPATH="$gopath:${GOCODE%/src}" GOFLAGS= go list -deps -test \
  -f '{{if not .Standard}}{{.ImportPath}}{{end}}' $own | grep -v "^$MODULE" | grep -v '\.test$' | sort -u)

# 3. Copy each package's files (not its tests) and write modules.txt, grouped by go.mod's modules.
mkdir vendor.new
modules_txt=vendor.new/modules.txt
: >"$modules_txt"
while read -r path version; do
  mine=$(grep -E "^$path(/|$)" <<<"$packages" || true)
  goversion=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$GOCODE/$path/go.mod" 2>/dev/null || true)
  printf '# %s %s\n## explicit%s\n' "$path" "$version" "${goversion:+; go $goversion}" >>"$modules_txt"
  [ -n "$mine" ] && printf '%s\n' "$mine" >>"$modules_txt"
  for pkg in $mine; do
    mkdir -p "vendor.new/$pkg"
    find "$GOCODE/$pkg" -maxdepth 1 -type f ! -name '*_test.go' -exec cp {} "vendor.new/$pkg/" \;
  done
done < <(sort <<<"$requirements")
unmatched=$(while read -r pkg; do
  awk -v p="$pkg" 'index(p"/", $1"/")==1 {found=1} END{exit !found}' <<<"$requirements" || echo "$pkg"
done <<<"$packages")
if [ -n "$unmatched" ]; then
  echo "vendor.sh: packages from modules go.mod does not require: $unmatched" >&2
  exit 1
fi
mv vendor.new vendor
echo "vendor.sh: vendored $(wc -l <<<"$packages") packages from $GOCODE"
