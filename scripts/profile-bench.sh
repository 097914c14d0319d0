#!/usr/bin/env bash
# Profiles one benchmark group of one contender (see BENCHMARKS.md, "profiling notes"):
# syscall counts (strace -c -f), page faults and CPU time (perf stat), and the
# hottest symbols per thread (perf record, flat).
#
#   scripts/profile-bench.sh GROUP CONTENDER [extra rpc-benches arguments]
#   scripts/profile-bench.sh unary ours
#   scripts/profile-bench.sh stream ours --stream-items 2000000
#
# GROUP: unary, inflight, chain, stream, bulk. Needs strace and perf
# (apt-get install -y strace linux-perf). Divide the syscall counts by the
# operations the run did: unary 3000 calls/round, inflight 30000 calls/round,
# chain 2 x 300 chains/round, stream --stream-items per round, bulk 512 MiB/round.
set -euo pipefail
cd "$(dirname "$0")/.."
group=${1:?group}
contender=${2:?contender}
shift 2
bin=benches/target/release/rpc-benches
cargo build --release --manifest-path benches/Cargo.toml >/dev/null
out=$(mktemp -d)
args=(--only "$group" --contenders "$contender" --rounds 3 --json "$out/figures.json" "$@")

echo "== figures"
"$bin" "${args[@]}" | grep -E "^($group|inflight64|chain10)\." || true

if command -v strace >/dev/null; then
  echo "== strace -c -f (syscalls)"
  strace -c -f -o "$out/strace.txt" "$bin" "${args[@]}" >/dev/null
  head -12 "$out/strace.txt"
fi

if command -v perf >/dev/null; then
  echo "== perf stat"
  perf stat -e task-clock,context-switches,page-faults "$bin" "${args[@]}" 2>&1 >/dev/null | grep -E "task-clock|context|faults" || true
  echo "== perf record: hottest symbols per thread (bench-server = server side, rpc-benches = client side)"
  perf record -q -F 4999 -o "$out/perf.data" "$bin" "${args[@]}" >/dev/null 2>&1
  perf report -i "$out/perf.data" --stdio --no-children --sort comm,dso 2>/dev/null | grep -v '^#' | grep -v '^$' | head -8
  perf report -i "$out/perf.data" --stdio --no-children --sort comm,symbol 2>/dev/null | grep -v '^#' | grep -v '^$' | head -30 | cut -c1-160
fi
rm -rf "$out"
