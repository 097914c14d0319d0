#!/usr/bin/env bash
# Instructions per operation, counted by callgrind: one unary call, one call
# of 64 in flight, one small Sequence item, one KiB of Bytes — ours beside the
# raw floor. Counts (unlike times) repeat from run to run on a busy machine.
#
# Each workload runs at two sizes; (count(n2) - count(n1)) / (n2 - n1) cancels
# start-up and connection set-up. See examples/src/bin/cost_probe.rs.
#
# usage: scripts/costs.sh [--json FILE] [--check BASELINE] [--tolerance PCT]
#   --check fails (exit 1) when any of our figures exceeds the baseline's by
#   more than the tolerance (default 10%). Write a new baseline with
#   `scripts/costs.sh --json benches/costs-baseline.json` and commit it with
#   the change that moved it, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."

json="" check="" tolerance=10
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json="$2"; shift 2 ;;
    --check) check="$2"; shift 2 ;;
    --tolerance) tolerance="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
cargo build --release --quiet -p rpc-examples --bin cost_probe
probe=target/release/cost_probe
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Instructions executed by one run of the probe.
count() {
  valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "$probe" "$@" 2>"$tmp/log" >/dev/null \
    || { cat "$tmp/log" >&2; echo "cost_probe $* failed" >&2; exit 1; }
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/log"
}

# workload  n1  n2  unit
workloads="unary 200 1200 call
inflight64 10 60 round_of_64
sequence 20000 120000 item
bytes 2048 12288 KiB"

results="$tmp/results"
: >"$results"
while read -r workload n1 n2 unit; do
  for side in ours raw; do
    a=$(count "$workload" "$side" "$n1")
    b=$(count "$workload" "$side" "$n2")
    per=$(( (b - a) / (n2 - n1) ))
    if [ "$workload" = inflight64 ]; then per=$(( per / 64 )); unit=call; fi
    echo "$workload $side $per $unit" >>"$results"
  done
done <<<"$workloads"

printf '%-12s %14s %14s %8s  %s\n' workload ours raw ratio "instructions per"
while read -r workload _ ours unit; read -r _ _ raw _; do
  ratio=$(awk -v o="$ours" -v r="$raw" 'BEGIN { printf "%.2f", o / r }')
  printf '%-12s %14s %14s %7sx  %s\n' "$workload" "$ours" "$raw" "$ratio" "$unit"
done <"$results"

if [ -n "$json" ]; then
  awk 'BEGIN { printf "{\n" } { printf "%s  \"%s.%s\": %s", (NR > 1 ? ",\n" : ""), $1, $2, $3 } END { printf "\n}\n" }' \
    "$results" >"$json"
  echo "wrote $json"
fi

if [ -n "$check" ]; then
  failed=0
  while read -r workload side per _; do
    [ "$side" = ours ] || continue
    base=$(sed -n "s/.*\"$workload\.ours\": *\([0-9]*\).*/\1/p" "$check")
    if [ -z "$base" ]; then echo "no baseline for $workload in $check" >&2; failed=1; continue; fi
    limit=$(( base + base * tolerance / 100 ))
    if [ "$per" -gt "$limit" ]; then
      echo "REGRESSION: $workload costs $per instructions, baseline $base (+${tolerance}% = $limit)" >&2
      failed=1
    else
      echo "ok: $workload $per vs baseline $base"
    fi
  done <"$results"
  exit "$failed"
fi
