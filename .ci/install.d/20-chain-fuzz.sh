#!/usr/bin/env bash
# The chain decoder's fuzz run needs cargo-fuzz (built from crates.io; skipped when
# already installed). It drives libFuzzer, built from C++ by libfuzzer-sys: needs a C++
# compiler, which the machine has.
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
