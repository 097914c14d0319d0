#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer) on the nightly toolchain; see fuzz/.
#
#   scripts/fuzz.sh [SECONDS]       build the targets, fuzz each for SECONDS
#                                   (default 60), starting from fuzz/corpus/<target>
#   scripts/fuzz.sh --regressions   build the targets, replay every input in
#                                   fuzz/regressions/ through every target once
#
# Targets (fuzz/fuzz_targets/): frame, payload, connection, protocol (the
# sans-I/O Protocol on a simulated two-endpoint pair, rpc-core/src/proto/pair/).
#
# Fails on any crash (panic), hang (libFuzzer -timeout, the connection
# harness's own bounded-virtual-time check, or the protocol harness's
# livelock check) or OOM (-rss_limit_mb,
# -malloc_limit_mb). Crashing inputs are kept in $FUZZ_OUT/artifacts/<target>/,
# logs in $FUZZ_OUT/<target>.log (default FUZZ_OUT: fuzz/out/, git-ignored).
# The committed corpus is never written to: new inputs go to a scratch
# corpus, $FUZZ_OUT/corpus/<target>, kept between runs.
#
# Environment: FUZZ_TARGETS (default: every target), FUZZ_OUT (default fuzz/out),
# FUZZ_TIMEOUT (seconds per input, default 10), FUZZ_FLAGS (more libFuzzer
# flags, e.g. -detect_leaks=0 to look past a known leak).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=fuzz
seconds=60
case "${1:-}" in
  --regressions) mode=regressions ;;
  "") ;;
  *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS | --regressions]" >&2; exit 2 ;;
  *) seconds=$1 ;;
esac

per_input_timeout=${FUZZ_TIMEOUT:-10}
limits=(-timeout="$per_input_timeout" -rss_limit_mb=2048 -malloc_limit_mb=1024)
# shellcheck disable=SC2206 # FUZZ_FLAGS is a list of flags
limits+=(${FUZZ_FLAGS:-})

# --- toolchain -----------------------------------------------------------------
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: the nightly toolchain is missing (cargo-fuzz needs it for -Zsanitizer); installing it with rustup"
  if ! rustup toolchain install nightly --profile minimal; then
    echo "fuzz: FAILED: cannot install the nightly toolchain (no network?); install it with 'rustup toolchain install nightly'" >&2
    exit 1
  fi
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is missing; installing it (cargo install cargo-fuzz --locked)"
  if ! cargo install cargo-fuzz --locked; then
    echo "fuzz: FAILED: cannot install cargo-fuzz" >&2
    exit 1
  fi
fi

host=$(rustc +nightly -vV | sed -n 's/^host: //p')
targets=${FUZZ_TARGETS:-$(cd fuzz && cargo +nightly fuzz list)}
out=${FUZZ_OUT:-fuzz/out}
mkdir -p "$out"

echo "== fuzz: building targets ($(echo $targets))"
(cd fuzz && cargo +nightly fuzz build)
bin_dir=fuzz/target/$host/release

failed=()

if [ "$mode" = regressions ]; then
  shopt -s nullglob
  inputs=(fuzz/regressions/*)
  if [ ${#inputs[@]} -eq 0 ]; then
    echo "fuzz: no regression inputs"
    exit 0
  fi
  for target in $targets; do
    for input in "${inputs[@]}"; do
      # Each input alone: a hang in one must not hide the others.
      if timeout $((per_input_timeout * 3 + 30)) "$bin_dir/$target" "${limits[@]}" "$input" >"$out/regression.log" 2>&1; then
        echo "ok      $target < $input"
      else
        echo "FAILED  $target < $input: $(grep -E '^SUMMARY|^==[0-9]+== ERROR|panicked at|ALARM' "$out/regression.log" | head -2 | tr '\n' ' ')"
        failed+=("$target < $input")
      fi
    done
  done
  rm -f "$out/regression.log"
else
  for target in $targets; do
    scratch=$out/corpus/$target
    if [ "$(cd "$(dirname "$scratch")" 2>/dev/null && pwd)/$target" = "$(pwd)/fuzz/corpus/$target" ]; then
      echo "fuzz: FUZZ_OUT must not be fuzz/ (the scratch corpus would be the committed one)" >&2
      exit 2
    fi
    artifacts=$out/artifacts/$target
    mkdir -p "$scratch" "$artifacts"
    log=$out/$target.log
    echo "== fuzz: $target for ${seconds}s"
    status=0
    # The scratch corpus comes first: libFuzzer adds new inputs to the first
    # directory only, so fuzz/corpus/<target> stays as committed.
    timeout $((seconds + per_input_timeout * 3 + 120)) "$bin_dir/$target" "${limits[@]}" \
      -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/" \
      "$scratch" "fuzz/corpus/$target" >"$log" 2>&1 || status=$?
    # The last status line (executions, coverage, speed) and the final stats.
    grep -E '^#[0-9]+' "$log" | tail -1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" | tr '\n' ' ' || true
    echo
    if [ "$status" -ne 0 ]; then
      echo "FAILED: $target (exit $status); crashing input in $artifacts/:"
      grep -E -A12 '^==[0-9]+== ERROR|panicked at|^SUMMARY|ALARM|hang:' "$log" | head -40 || tail -40 "$log"
      failed+=("$target")
    fi
  done
fi

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: ok ($mode)"
