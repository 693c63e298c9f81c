#!/usr/bin/env bash
# The end-to-end tests (tests/real_nc.rs, tests/real_harp.rs, benches/ingest_real.rs) run
# the real Nextcloud 33.0.2 and HaRP 0.4.4 of ../shared/ (CI clones the repository with
# shared/ beside it). Their up.sh scripts install these themselves on first start; installing
# them here keeps that out of the tests' time. The agent's Python packages (aiohttp, pydantic)
# are installed by ../shared/harp/up.sh into its venv.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
[ "$(id -u)" = 0 ] || { echo "not root: the end-to-end tests will skip themselves"; exit 0; }
pkgs=(php8.2-cli php8.2-sqlite3 php8.2-xml php8.2-mbstring php8.2-gd php8.2-curl php8.2-zip
  php8.2-intl php8.2-bcmath php8.2-gmp php8.2-apcu zstd haproxy gettext-base python3-venv
  curl iproute2)
need=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "ok installed" >/dev/null || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
php --version | sed -n 1p
haproxy -v | sed -n 1p
[ -x ../shared/nextcloud/up.sh ] || [ -f ../shared/nextcloud/up.sh ] \
  || echo "warning: ../shared/nextcloud/up.sh is missing: the end-to-end tests will fail"
