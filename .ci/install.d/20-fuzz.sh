#!/usr/bin/env bash
# The decoders' fuzz runs (.ci/test.d/20-fuzz.sh) need cargo-fuzz (built from crates.io;
# skipped when already installed). It drives libFuzzer, built from C++ by libfuzzer-sys:
# needs a C++ compiler, which the machine has.
set -euo pipefail
if cargo fuzz --version >/dev/null 2>&1; then
  cargo fuzz --version
  exit 0
fi
if ! command -v c++ >/dev/null; then
  apt-get install -y -qq g++ >/dev/null
fi
cargo install --locked cargo-fuzz
cargo fuzz --version
