#!/usr/bin/env bash
# Bounded fuzz runs of every decoder a peer reaches (fuzz/README.md): chain entries,
# /harp/sync/1 bodies and frames, /harp/blocks/1 requests and answers, gossip head
# announcements. FUZZ_SECONDS each (default 30; about 2 min of runs after a 1-2 min build
# on 2 cores); no input may panic, hang (10 s per input)
# or make an allocation sized by a claimed length (fuzz/src/lib.rs), and what a decoder
# accepts must re-encode to the same bytes. One build for all targets, then one run each;
# the step fails if any target crashed, after running them all.
#
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
# Without a sanitizer: the decoders are safe Rust, and this keeps the build short.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${FUZZ_SECONDS:-30}"
# FUZZ_TARGETS (space-separated) runs fewer, e.g. to replay one locally.
read -ra targets <<<"${FUZZ_TARGETS:-chain_decode sync_wire blocks_wire gossip_heads}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

start=$SECONDS
if ! RUSTC_BOOTSTRAP=1 cargo fuzz build --sanitizer none >"$log" 2>&1; then
  tail -n 40 "$log"
  echo "fuzz: build failed"
  exit 1
fi
echo "fuzz: built in $((SECONDS - start)) s"

crashed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  # The status is cargo fuzz's own (the log is filtered afterwards, not through a pipe).
  status=0
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" --sanitizer none "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  if [ "$status" -eq 0 ]; then
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
    rss="$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
    echo "fuzz $t: ${runs:-?} inputs in ${secs} s, peak RSS ${rss:-?} MB, no crash"
  else
    # What failed (a panic, the allocation cap, a timeout), then how to replay it.
    grep -m1 -A4 -e 'panicked at' -e 'an allocation over' -e 'ERROR: libFuzzer' "$log" || true
    grep -v -e '^#[0-9]' -e '^ *[0-9]*: ' -e '^ *at ' -e '^stat::' -e '^\s*$' "$log" \
      | tail -n 12 || true
    echo "fuzz $t: CRASHED (exit $status); the input is under fuzz/artifacts/$t/"
    crashed+=("$t")
  fi
done
echo "fuzz: ${#targets[@]} targets in $((SECONDS - start)) s"
if [ "${#crashed[@]}" -gt 0 ]; then
  echo "fuzz: crashed: ${crashed[*]}"
  exit 1
fi
