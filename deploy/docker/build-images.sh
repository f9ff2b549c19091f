#!/usr/bin/env bash
# Builds the compose images on an engine that cannot pull (no registry): the local Debian
# base (build-base-image.sh), then the `app` image from deploy/Dockerfile with a trust-proxy
# binary built on this machine (TRUST_PROXY_FROM=prebuilt), so no Rust image is needed.
# The classic builder is enough (no buildx here).
# The images get the names docker-compose.full.yml uses by default, so afterwards the
# guide's command works as written (`docker compose -f docker-compose.full.yml up -d
# --scale node-agent-secure=5`, or `docker-compose ...`) and pulls nothing. Prints those
# names as variables too (TPM_APP_IMAGE, PROMETHEUS_IMAGE), for scripts that pass them.
# Usage: deploy/docker/build-images.sh [path/to/trust-proxy]
#   default binary: target/release/trust-proxy if built, else target/debug/trust-proxy
set -euo pipefail
cd "$(dirname "$0")/../.."

base="${TPM_LOCAL_BASE:-sovereign-local/bookworm:1}"
app="${TPM_APP_IMAGE:-sovereign/trust-proxy-app:latest}"
prometheus="${PROMETHEUS_IMAGE:-sovereign/prometheus:latest}"
step() { printf '==> %s\n' "$*" >&2; }

binary="${1:-}"
if [ -z "$binary" ]; then
  for b in target/release/trust-proxy target/debug/trust-proxy; do
    [ -x "$b" ] && { binary="$b"; break; }
  done
fi
[ -n "$binary" ] && [ -x "$binary" ] || { echo "no trust-proxy binary: cargo build -p trust-proxy first, or pass its path" >&2; exit 66; }
plugins="target/plugins/wasm32-wasip2/release"
ls "$plugins"/*.wasm >/dev/null 2>&1 || { echo "no plugins in $plugins: cargo build -p trust-proxy builds them" >&2; exit 66; }

deploy/docker/build-base-image.sh "$base"

step "dist: $binary (stripped) and $plugins/*.wasm into target/docker/dist/"
rm -rf target/docker/dist
mkdir -p target/docker/dist/plugins
strip -o target/docker/dist/trust-proxy "$binary"
cp "$plugins"/*.wasm target/docker/dist/plugins/

step "docker build --target app -t $app (base $base)"
docker build -q -f deploy/Dockerfile --target app \
  --build-arg TRUST_PROXY_FROM=prebuilt \
  --build-arg RUST_IMAGE="$base" \
  --build-arg RUNTIME_IMAGE="$base" \
  --build-arg PYTHON_IMAGE="$base" \
  -t "$app" . >/dev/null
step "built $app ($(docker image inspect -f '{{.Size}}' "$app" | awk '{printf "%.0f MB", $1/1e6}'))"
step "docker build -t $prometheus (Debian's prometheus in $base)"
docker build -q -f deploy/docker/prometheus.Dockerfile \
  --build-arg PROMETHEUS_BASE="$base" -t "$prometheus" deploy/docker >/dev/null
step "ready: docker-compose -f docker-compose.full.yml up -d --scale node-agent-secure=5 pulls nothing now"
cat <<ENV
TPM_APP_IMAGE=$app
PROMETHEUS_IMAGE=$prometheus
ENV
