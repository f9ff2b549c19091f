#!/usr/bin/env bash
# Measures trust-core's budgets and, in the same run, openssl's RSA speed on the same
# machine as the reference peer. Prints markdown for docs/BENCHMARKS.md.
# Usage: scripts/bench-core.sh   (about 2 minutes; BUDGET_QUICK=1 for ~20 s)
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%Y-%m-%d)"
echo
echo "### openssl speed (reference peer, same run)"
echo
echo '```'
openssl version
openssl speed -seconds 3 rsa2048 rsa4096 2>/dev/null | grep -E '^(rsa|  )' | grep -v '^$'
echo '```'
echo
echo "### trust-core per-operation latency"
echo
cargo bench -q -p trust-core --bench budgets 2>/dev/null | grep '^|'
