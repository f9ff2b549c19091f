#!/usr/bin/env bash
# The soak, for as long as you like (the test run does 2 minutes): a testnet under mixed
# traffic with the policy set rewritten every 3 s and a node revoked every minute; fails on
# any unexpected error or on memory growth, and plots every process's RSS.
#
# Usage: scripts/soak.sh [MINUTES]     (default 30)
# Output: target/soak/rss.csv, target/soak/summary.txt, target/soak/rss.svg
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-30}"
out="$PWD/target/soak"
mkdir -p "$out"
if [ ! -x .venv/bin/python3 ]; then
  echo "soak.sh: run scripts/test.sh once first (it makes the .venv with Flask)" >&2
  exit 69
fi
echo "==> soaking for $minutes minutes (cargo test ... soak)" >&2
SOAK_SECS=$((minutes * 60)) SOAK_OUT="$out" \
  cargo test --locked -p trust-proxy --test e2e -- soak --nocapture
python3 scripts/plot-rss.py "$out/rss.csv" "$out/rss.svg" "RSS of every testnet process, ${minutes}-minute soak"
