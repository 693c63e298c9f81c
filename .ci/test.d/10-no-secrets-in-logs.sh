#!/usr/bin/env bash
# Every harpbridge process the tests ran logged to target/test-logs/; the secrets they
# were given (and the AUTHORIZATION-APP-API values made from them) are listed in
# target/test-logs.secrets. None may appear in any log.
set -euo pipefail
cd "$(dirname "$0")/../.."
secrets=target/test-logs.secrets
[ -s "$secrets" ] || { echo "no test secrets recorded: did the ExApp tests run?"; exit 1; }
logs=$(find target/test-logs -name '*.log' | wc -l)
if grep -rFl -f "$secrets" target/test-logs; then
  echo "FAIL: a secret or auth header appears in the logs above"
  exit 1
fi
echo "checked $logs ExApp logs against $(wc -l < "$secrets") secret values: none found"
