#!/usr/bin/env bash
# Instructions per operation, counted by callgrind: one unary call, one call
# of 64 in flight, one small Sequence item, one KiB of Bytes — ours beside the
# raw floor and, with --peers, tonic's stream of the same small struct. Counts
# (unlike times) repeat from run to run on a busy machine.
#
# Each workload runs at two sizes; (count(n2) - count(n1)) / (n2 - n1) cancels
# start-up and connection set-up. See examples/src/bin/cost_probe.rs and
# benches/src/bin/tonic_probe.rs.
#
# usage: scripts/costs.sh [--peers] [--json FILE] [--check BASELINE] [--tolerance PCT]
#   --peers also counts tonic's stream (builds the tonic probe in the benches/
#   workspace, slow the first time); without it the tonic column shows `-`.
#   --check fails (exit 1) when any of our figures exceeds the baseline's by
#   more than the tolerance (default 10%); raw and tonic are reference figures,
#   never checked. Write a new baseline with
#   `scripts/costs.sh --json benches/costs-baseline.json` and commit it with
#   the change that moved it, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."

json="" check="" tolerance=10 peers=""
while [ $# -gt 0 ]; do
  case "$1" in
    --peers) peers=1; shift ;;
    --json) json="$2"; shift 2 ;;
    --check) check="$2"; shift 2 ;;
    --tolerance) tolerance="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
cargo build --release --quiet -p rpc-examples --bin cost_probe
probe=target/release/cost_probe
tonic_probe="" tonic_missing="not counted (scripts/costs.sh --peers counts it)"
if [ -n "$peers" ]; then
  # Only what the probe needs: the peers' workspace without tarpc, remoc, capnp.
  if cargo build --release --quiet --manifest-path benches/Cargo.toml --no-default-features --features tonic \
    --bin tonic_probe; then
    tonic_probe=benches/target/release/tonic_probe
  else
    tonic_missing="not counted: the tonic probe did not build (see above)"
  fi
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Instructions executed by one run of a probe: count PROGRAM ARGS...
count() {
  valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "$@" 2>"$tmp/log" >/dev/null \
    || { cat "$tmp/log" >&2; echo "$* failed" >&2; return 1; }
  rm -f "$tmp/out"
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/log"
}

# workload  n1  n2  unit
workloads="unary 200 1200 call
inflight64 10 60 round_of_64
sequence 20000 120000 item
bytes 2048 12288 KiB"

# One line per figure: workload side instructions unit.
results="$tmp/results"
: >"$results"
while read -r workload n1 n2 unit; do
  for side in ours raw; do
    a=$(count "$probe" "$workload" "$side" "$n1") || exit 1
    b=$(count "$probe" "$workload" "$side" "$n2") || exit 1
    per=$(( (b - a) / (n2 - n1) ))
    if [ "$workload" = inflight64 ]; then per=$(( per / 64 )); unit=call; fi
    echo "$workload $side $per $unit" >>"$results"
  done
  if [ "$workload" = sequence ] && [ -n "$tonic_probe" ]; then
    # The probe exits with 3 when built without protoc (no tonic code).
    if a=$(count "$tonic_probe" sequence "$n1") && b=$(count "$tonic_probe" sequence "$n2"); then
      echo "$workload tonic $(( (b - a) / (n2 - n1) )) $unit" >>"$results"
    else
      tonic_missing="not counted: the tonic probe failed (see above)"
    fi
  fi
done <<<"$workloads"

# The table: one row per workload, `-` where a side was not counted.
awk '
  { per[$1, $2] = $3; unit[$1] = $4; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
  function ratio(a, b) { return (a == "" || b == "") ? "-" : sprintf("%.2fx", a / b) }
  function cell(x) { return x == "" ? "-" : x }
  END {
    printf "%-12s %10s %10s %9s %10s %10s  %s\n", "workload", "ours", "raw", "ours/raw", "tonic", "ours/tonic", "instructions per"
    for (i = 1; i <= n; i++) {
      w = order[i]; o = per[w, "ours"]; r = per[w, "raw"]; t = per[w, "tonic"]
      printf "%-12s %10s %10s %9s %10s %10s  %s\n", w, cell(o), cell(r), ratio(o, r), cell(t), ratio(o, t), unit[w]
    }
  }' "$results"
grep -q '^sequence tonic ' "$results" || echo "tonic: $tonic_missing"

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
