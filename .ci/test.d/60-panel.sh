#!/usr/bin/env bash
# The panel:
# 1. rebuild js/ and css/ from ui/ (after a clean `npm ci`, see install.d/60-panel.sh)
#    and fail if the result differs from the committed files, which the binary embeds;
# 2. the browser test: Debian's headless chromium, driven by playwright-core, loads the
#    panel through an AppAPI/HaRP-shaped harness in front of the real router.
set -euo pipefail
cd "$(dirname "$0")/../.."

echo "-- panel: type check and rebuild of js/ and css/"
(cd ui && npm run --silent typecheck && npm run --silent build)
if [ -n "$(git status --porcelain -- js css)" ]; then
  echo "the committed panel build differs from what ui/ builds:" >&2
  git status --porcelain -- js css >&2
  git diff --stat -- js css >&2
  echo "run 'npm ci && npm run build' in ui/ and commit js/ and css/" >&2
  exit 1
fi
echo "js/ and css/ match ui/'s sources"

echo "-- panel: browser test"
cargo build --locked --example panel_fixture
(cd tests/browser && npm test)
