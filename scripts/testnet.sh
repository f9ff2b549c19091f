#!/usr/bin/env bash
# The main job: a whole trust network on this machine's loopback, from a fresh clone.
# Installs what it needs (the wasm target for the policy plugins, python3-venv, a venv
# with Flask and requests, jq for the tour's commands), builds trust-proxy, then runs
# `trust-proxy testnet`.
# Usage: scripts/testnet.sh [--nodes 5] [--fresh] [any other `trust-proxy testnet` flag]
#        Ctrl-C stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '==> %s\n' "$*" >&2; }

step "toolchain and the wasm32-wasip2 target (the policy plugins)"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  step "installing python3-venv"
  if [ "$(id -u)" -ne 0 ]; then
    echo "python3-venv is missing: apt-get install python3-venv (or run as root)" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi

# jemalloc (the binary's allocator) is built from C with make.
if ! command -v make >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
  step "installing make and gcc (jemalloc is built from C)"
  if [ "$(id -u)" -ne 0 ]; then
    echo "make or a C compiler is missing: apt-get install make gcc (or run as root)" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make gcc
fi

# The tour the testnet prints pipes its curl answers through jq.
if ! command -v jq >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    step "installing jq (the tour's commands use it)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }
  else
    step "jq is missing: the tour's commands pipe through it (apt-get install jq)"
  fi
fi

step "python venv (.venv) with deploy/apps/requirements.txt"
[ -x .venv/bin/python3 ] || python3 -m venv .venv
.venv/bin/python3 -m pip install -q --disable-pip-version-check -r deploy/apps/requirements.txt

step "building trust-proxy (first time: a few minutes, wasmtime is large)"
cargo build --locked -p trust-proxy

exec target/debug/trust-proxy testnet --python .venv/bin/python3 "$@"
