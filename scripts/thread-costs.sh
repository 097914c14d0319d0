#!/usr/bin/env bash
# Instructions per operation on each thread of the benchmark itself (the
# client's thread and the server's), counted by callgrind: the benchmark
# binary runs one group of ours at 1 and at 3 rounds, and the difference,
# divided by the operations of two rounds, cancels start-up. Unlike
# scripts/costs.sh (cost_probe: both sides on one thread), this says which
# side a cost is on, and sees the benchmark's own build (its features and
# inlining). Prints the hottest functions (self cost) per thread.
#
#   scripts/thread-costs.sh unary       # per call (1,500 calls a round)
#   scripts/thread-costs.sh inflight    # per call (4,000 calls a round)
#
# Builds the benchmark with line tables into target/line-tables/ (minutes the
# first time). Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
group=${1:?group: unary or inflight}
case "$group" in
  unary) per_round=1500 ;;
  inflight) per_round=4000 ;;
  *) echo "group: unary or inflight" >&2; exit 2 ;;
esac
target=$PWD/target/line-tables
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_TARGET_DIR=$target \
  cargo build --release --quiet --manifest-path benches/Cargo.toml
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for rounds in 1 3; do
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/cg.$rounds.%p" \
    "$target/release/rpc-benches" --quick --only "$group" --contenders ours --rounds "$rounds" --no-costs \
    --json "$out/figures.json" >/dev/null 2>&1
done
python3 - "$out" $((2 * per_round)) "$PWD" <<'PY'
import glob, re, subprocess, sys
out, ops, root = sys.argv[1], float(sys.argv[2]), sys.argv[3]

def load(path):
    text = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100", path],
                          capture_output=True, text=True).stdout
    costs = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([0-9,]+) \([^)]*\)\s+(.*)$", line)
        if m:
            name = re.sub(r"\s*\[.*\]$", "", m.group(2))
            # Shorter paths: the crate's (registry), the standard library's, ours.
            name = re.sub(r"^.*/registry/src/[^/]+/", "", name)
            name = re.sub(r"^/rustc/[0-9a-f]+/library/", "", name)
            name = re.sub(r"^" + re.escape(root) + "/", "", name)
            costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return costs

for thread, label in (("01", "client (main thread)"), ("02", "server thread")):
    one = load(glob.glob(f"{out}/cg.1.*-{thread}")[0])
    three = load(glob.glob(f"{out}/cg.3.*-{thread}")[0])
    rows = sorted(((three.get(k, 0) - one.get(k, 0)) / ops, k) for k in three)[::-1]
    print(f"== {label}: instructions per operation, self cost")
    for cost, name in rows[:25]:
        print(f"{cost:9.1f}  {name[:120]}")
PY
