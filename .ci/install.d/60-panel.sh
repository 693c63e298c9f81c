#!/usr/bin/env bash
# The panel: Debian's chromium for the browser test (Playwright's own browser download
# cannot work here), and the Node packages that build the frontend (ui/) and drive the
# browser (tests/browser/). Node 20.19+ and npm come with the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DEBIAN_FRONTEND=noninteractive

if ! command -v chromium >/dev/null; then
  apt-get install -y -qq chromium >/dev/null
fi
chromium --version
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "the panel needs Node.js 20.19 or later with npm" >&2
  exit 1
fi
node --version

(cd ui && npm ci --no-audit --no-fund)
(cd tests/browser && npm ci --no-audit --no-fund)
