#!/usr/bin/env bash
# Runs every test from a fresh clone on a fresh machine of this kind (Debian, rustup, root):
# installs what the suite needs, then fmt check, clippy with warnings denied, all tests.
# Usage: scripts/test.sh            (CI runs exactly this via .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain (rust-toolchain.toml pins 1.95.0 with rustfmt, clippy, wasm32-wasip2)"
rustup show active-toolchain >/dev/null
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

step "system packages"
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
# jemalloc (the binary's allocator, tikv-jemalloc-sys) is built from C with make.
command -v make >/dev/null || missing+=(make)
command -v cc >/dev/null || missing+=(gcc)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

step "python venv (.venv) with tests/python/requirements.txt"
if [ ! -x .venv/bin/python3 ]; then
  python3 -m venv .venv
fi
.venv/bin/python3 -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt -r deploy/apps/requirements.txt

step "monitoring: Prometheus configs, alert rules and their promtool tests, dashboards, catalog"
# Also installs Debian's prometheus package: the end-to-end suite runs a real Prometheus.
scripts/check-monitoring.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "cargo test"
cargo test --workspace --all-features --locked
