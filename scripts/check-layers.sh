#!/usr/bin/env bash
# The layering rpc-core keeps (ARCHITECTURE.md, "Layers"):
# - the wire format at the bottom imports nothing above it but the error
#   type (doc links aside);
# - the protocol core (proto/) is plain data: it names no runtime, no lock
#   and no handle of the connection — nothing of tokio, no Mutex, no
#   ConnShared, no Weak<…> (comments aside);
# - above the wire, imports go one way: proto <- conn <- stream.
# Fails, naming the lines, when either rule is broken.
set -euo pipefail
cd "$(dirname "$0")/.."

code_lines() { # file:line:text for every line under $1 that is not a comment
  grep -rnE "$2" "$1" | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' || true
}

violations=$(code_lines rpc-core/src/wire/ 'crate::[A-Za-z_]+' \
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

proto=$(code_lines rpc-core/src/proto/ 'tokio|Mutex|ConnShared|Weak<')
if [ -n "$proto" ]; then
  echo "proto/ must stay plain data (no tokio, Mutex, ConnShared or Weak<):" >&2
  echo "$proto" >&2
  exit 1
fi
# Above the wire: proto <- conn <- stream, never back (no cycle among the four).
upward=$( (code_lines rpc-core/src/proto/ 'crate::(conn|stream)\b'; code_lines rpc-core/src/conn/ 'crate::stream\b') )
if [ -n "$upward" ]; then
  echo "proto/ must not import conn/ or stream/, and conn/ must not import stream/:" >&2
  echo "$upward" >&2
  exit 1
fi
echo "layers ok: wire/ imports only the error type; proto/ names no runtime, lock or connection handle; wire <- proto <- conn <- stream"
