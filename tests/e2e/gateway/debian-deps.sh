#!/usr/bin/env bash
# Install nginx from Debian's packages (bookworm: 1.22, with the auth_request module) when it is missing: the
# gateway tests (tests/e2e/test_gateway_nginx.py) put a real nginx in front of a small upstream. Needs root
# (apt-get) when nginx is absent. Used by .ci/run. The tests start their own nginx (never the system service).
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
echo "installing from Debian: nginx"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends nginx >/dev/null
