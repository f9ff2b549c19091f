#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes for a bounded time with libFuzzer (cargo fuzz,
# nightly, AddressSanitizer) and prints a table of executions per target.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   scripts/fuzz.sh                 # every target, 60 s each
#   scripts/fuzz.sh 600 signature   # one target for 10 minutes
#
# Targets and their invariants: crates/fuzz-targets/src/lib.rs. Seeds: fuzz/corpus/<target>/
# (read, never written); what the fuzzer learns goes to target/fuzz-corpus/<target>/.
# A crash is saved under fuzz/artifacts/<target>/ and the script exits 1: copy the file to
# fuzz/regressions/<target>/, fix the bug, and the normal test run replays it from then on
# (crates/fuzz-targets/tests/replay.rs). Not part of scripts/test.sh: it needs nightly.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
all=(signature certificate csr crl enroll_body policy_set path)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 69
fi
if ! command -v cargo-fuzz >/dev/null; then
  echo "==> installing cargo-fuzz" >&2
  cargo +stable install cargo-fuzz --locked
fi

# The fuzz build loads no policy plugin, and nightly here has no wasm target: skip the
# plugin build that policy-host's build script would start.
export POLICY_HOST_SKIP_PLUGIN_BUILD=1

echo "==> building the fuzz targets (nightly, AddressSanitizer)" >&2
cargo +nightly fuzz build

log_dir="target/fuzz-logs"
mkdir -p "$log_dir"
failed=0
printf '| target | seconds | executions | exec/s | corpus | peak RSS MiB | result |\n'
printf '|---|---|---|---|---|---|---|\n'
for t in "${targets[@]}"; do
  work="target/fuzz-corpus/$t"
  mkdir -p "$work"
  echo "==> fuzzing $t for ${seconds}s" >&2
  status=0
  cargo +nightly fuzz run "$t" "$work" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    >"$log_dir/$t.log" 2>&1 || status=$?
  stat() { awk -v k="stat::$1:" '$1 == k { print $2 }' "$log_dir/$t.log" | tail -1; }
  execs="$(stat number_of_executed_units)"
  rss="$(stat peak_rss_mb)"
  corpus="$(find "$work" -type f | wc -l)"
  rate=$(( ${execs:-0} / seconds ))
  if [ "$status" -eq 0 ]; then
    result="no crash"
  else
    result="CRASH (exit $status): see $log_dir/$t.log and fuzz/artifacts/$t/"
    failed=1
  fi
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$seconds" "${execs:-?}" "$rate" "$corpus" "${rss:-?}" "$result"
done
exit "$failed"
