#!/usr/bin/env bash
# Every harpbridge process the tests ran logged to target/test-logs/; the secrets they
# were given (and the AUTHORIZATION-APP-API values made from them) are listed in
# target/test-logs.secrets. None may appear in any log.
set -euo pipefail
cd "$(dirname "$0")/../.."
secrets=target/test-logs.secrets
[ -s "$secrets" ] || { echo "no test secrets recorded: did the ExApp tests run?"; exit 1; }
# An empty pattern would match every line, so blank lines are dropped; a line shorter
# than 12 characters is not a secret any test uses, so it is a broken record: fail loudly.
patterns=$(mktemp)
trap 'rm -f "$patterns"' EXIT
grep -v '^$' "$secrets" | sort -u > "$patterns"
if short=$(awk 'length($0) < 12' "$patterns") && [ -n "$short" ]; then
  echo "FAIL: target/test-logs.secrets holds values too short to be secrets:"
  echo "$short"
  exit 1
fi
logs=$(find target/test-logs -name '*.log' | wc -l)
if grep -rFl -f "$patterns" target/test-logs; then
  echo "FAIL: a secret or auth header appears in the logs above"
  exit 1
fi
echo "checked $logs ExApp logs against $(wc -l < "$patterns") secret values: none found"
