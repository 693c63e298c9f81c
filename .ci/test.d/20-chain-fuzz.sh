#!/usr/bin/env bash
# A bounded fuzz run (60 s) of the chain entry decoder: no input may panic it, and what it
# accepts must re-encode byte for byte (fuzz/fuzz_targets/chain_decode.rs). cargo-fuzz needs
# nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them. Without a sanitizer:
# the decoder is safe Rust, and this keeps the build short.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p fuzz/corpus/chain_decode
RUSTC_BOOTSTRAP=1 cargo fuzz run chain_decode --sanitizer none \
  fuzz/corpus/chain_decode fuzz/seeds/chain_decode -- \
  -max_total_time="${CHAIN_FUZZ_SECONDS:-60}" -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
  | grep -v '^#[0-9]' | tail -n 25
echo "chain fuzz: no crash"
