#!/usr/bin/env bash
# The layering rpc-core keeps (ARCHITECTURE.md, "Layers"): the wire format at
# the bottom imports nothing above it but the error type (doc links aside).
# Fails, naming the lines, when code under rpc-core/src/wire/ reaches into
# another module.
set -euo pipefail
cd "$(dirname "$0")/.."

violations=$(grep -rnE 'crate::[A-Za-z_]+' rpc-core/src/wire/ \
  | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' \
  | grep -E 'crate::' \
  | while IFS= read -r line; do
      for path in $(grep -oE 'crate::[A-Za-z_]+' <<<"$line"); do
        case "$path" in crate::wire | crate::error | crate::RpcError | crate::ErrorKind) ;; *) echo "${line%%:*}: $path" ;; esac
      done
    done)
if [ -n "$violations" ]; then
  echo "wire/ must import nothing above it (only the error type):" >&2
  echo "$violations" >&2
  exit 1
fi
echo "layers ok: wire/ imports only the error type"
