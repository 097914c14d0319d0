#!/usr/bin/env bash
# A/B of two builds of the benchmark, in turns, on the figures the targets
# use (see BENCHMARKS.md: wall clock drifts between runs on this machine, so
# only turns of the same groups, run back to back, compare two builds).
#
#   cp benches/target/release/rpc-benches /tmp/bench-old     # before a change
#   ...change, cargo build --release --manifest-path benches/Cargo.toml...
#   scripts/ab-bench.sh 4 unary,chain /tmp/bench-old benches/target/release/rpc-benches
#
# Prints one line per run: the binary, then each target ratio the run
# measured (unary and chain in raw RTTs, inflight and stream as x raw).
set -euo pipefail
turns=${1:?turns}
groups=${2:?groups (e.g. unary,inflight,chain)}
shift 2
[ $# -ge 2 ] || { echo "usage: $0 TURNS GROUPS BINARY_A BINARY_B..." >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for turn in $(seq 1 "$turns"); do
  for bin in "$@"; do
    "$bin" --only "$groups" --contenders raw,ours --rounds 3 --no-costs --json "$out/figures.json" >/dev/null 2>&1
    python3 - "$bin" "$out/figures.json" <<'PY'
import json, sys
figures = json.load(open(sys.argv[2]))
figures = figures.get("figures", figures)
keys = {
    "unary": "unary.ours.rtt/raw",
    "inflight": "inflight64.ours.rate/raw",
    "chain": "chain10.ours.pipelined/rtt",
    "stream": "stream.ours.rate/raw",
    "bulk": "bulk.ours.rate/raw",
}
shown = [f"{name}={figures[key]['median']:.3f}" for name, key in keys.items() if key in figures]
print(sys.argv[1], " ".join(shown))
PY
  done
done
