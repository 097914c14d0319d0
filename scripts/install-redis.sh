#!/usr/bin/env bash
# Installs redis-server (the Debian package) for the resumption tests
# (tests/tests/resum*.rs), unless it is already on PATH. Runs as root
# without sudo; uses sudo only when not root and sudo exists.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  echo "redis-server already installed: $(command -v redis-server)"
  exit 0
fi
if [ "$(id -u)" = 0 ]; then as_root=(); elif command -v sudo >/dev/null 2>&1; then as_root=(sudo); else
  echo "install-redis.sh: not root and no sudo; install the redis-server package by hand" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends redis-server
# The package may start a system service; the tests start their own servers
# on free loopback ports, so the service is not needed (harmless if absent).
command -v redis-server >/dev/null
echo "redis-server installed: $(command -v redis-server)"
