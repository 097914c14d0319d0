#!/usr/bin/env bash
# Installs the Debian packages the benchmark program's build scripts need:
# protoc (protobuf-compiler, for tonic/prost), the capnp compiler (capnproto,
# for capnp-rpc) and capnp's standard schemas (libcapnp-dev ships
# /usr/include/capnp/stream.capnp, which `-> stream` methods import).
# Idempotent: does nothing when all three are already there.
# Run as root (or through sudo): scripts/install-bench-deps.sh
set -euo pipefail

if command -v protoc >/dev/null 2>&1 && command -v capnp >/dev/null 2>&1 \
  && [ -f /usr/include/capnp/stream.capnp ]; then
  echo "protoc and capnp already installed: $(protoc --version), $(capnp --version)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install-bench-deps: must run as root (or with sudo available)" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends protobuf-compiler capnproto libcapnp-dev
echo "installed: $(protoc --version), $(capnp --version)"
