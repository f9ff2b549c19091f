#!/usr/bin/env bash
# One container per node: the app and its trust-proxy sidecar, started and stopped
# together (so `docker compose --scale` scales the pair). If either exits, the other is
# stopped and the container exits with its status; SIGTERM drains both.
#
# Usage: entrypoint.sh authority | aggregator | agent
#   authority   trust-proxy authority (full API on 127.0.0.1:7000, enrollment-only listener
#               on :7002) behind its sidecar (:8443, policies/authority.toml)
#   aggregator  the FL aggregator behind its sidecar (:8443, node 1000); read-only status
#               listener on :5001 (GET /trust/status, /fl/rounds)
#   agent       an FL node agent behind its sidecar; the authority assigns its node id
#
# Environment: TPM_AUTHORITY_URL (enrollment listener, default http://tpm-ca-service:7002),
# TPM_AUTHORITY_PEER (the authority's sidecar, default tpm-ca-service:8443),
# TPM_AGGREGATOR_PEER (default backend-secure:8443), TRUST_BOOTSTRAP_TOKEN_FILE,
# TPM_TRUST_ANCHOR (where the authority publishes its root and the others pin it from,
# default /var/lib/trust-anchor/ca-cert.pem; without that folder: trust on first use),
# TPM_ALLOW_DNS / TPM_ALLOW_IP (what the CA grants; localhost, 127.0.0.0/8), ROUND_QUORUM, ROUND_TIMEOUT,
# ROUND_INTERVAL, and every TRUST_PROXY_<SECTION>_<FIELD> override of the sidecar.
set -euo pipefail
role="${1:-agent}"
state=/var/lib/trust-proxy
authority_url="${TPM_AUTHORITY_URL:-http://tpm-ca-service:7002}"
authority_peer="${TPM_AUTHORITY_PEER:-tpm-ca-service:8443}"
aggregator_peer="${TPM_AGGREGATOR_PEER:-backend-secure:8443}"
token_file="${TRUST_BOOTSTRAP_TOKEN_FILE:-/run/secrets/bootstrap-token}"
export TRUST_BOOTSTRAP_TOKEN_FILE="$token_file"

anchor="${TPM_TRUST_ANCHOR:-/var/lib/trust-anchor/ca-cert.pem}"

# SHA-256 of a PEM certificate's DER, hex: the form authority.ca_fingerprint takes.
fingerprint() {
  python3 -c 'import base64, hashlib, sys
pem = open(sys.argv[1]).read()
der = base64.b64decode("".join(l for l in pem.splitlines() if l and not l.startswith("-----")))
print(hashlib.sha256(der).hexdigest())' "$1"
}

# Pin the root published in the shared trust-anchor folder, when one is mounted.
pin_published_root() {
  [ -d "$(dirname "$anchor")" ] || return 0
  local waited=0
  until [ -s "$anchor" ]; do
    [ "$waited" -ge 180 ] && { echo "no root certificate at $anchor after 180 s" >&2; exit 69; }
    sleep 1
    waited=$((waited + 1))
  done
  TRUST_PROXY_AUTHORITY_CA_FINGERPRINT="$(fingerprint "$anchor")"
  export TRUST_PROXY_AUTHORITY_CA_FINGERPRINT
  printf '{"entrypoint":"pinning the root published at %s: %s"}\n' "$anchor" "$TRUST_PROXY_AUTHORITY_CA_FINGERPRINT" >&2
}

pids=()
stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap 'stop; exit 0' TERM INT

# sidecar_config <node_id or ""> <upstream> <extra [ingress] lines> <policy set> [peer lines]
sidecar_config() {
  local id_line=""
  [ -n "$1" ] && id_line="node_id = $1"
  cat >"$state/sidecar.toml" <<TOML
# Written by entrypoint.sh ($role); every field: docs/examples/sidecar.toml.
state_dir = "$state/node"
$id_line
role = "$role"
names = ["localhost", "127.0.0.1"]
shutdown_grace = "10s"

[authority]
url = "$SIDECAR_AUTHORITY_URL"
bootstrap_token_file = "$token_file"

[ingress]
listen = "0.0.0.0:8443"
upstream = "$2"
$3

[egress]
listen = "127.0.0.1:8080"
$5

[admin]
listen = "0.0.0.0:9100"

[policy]
set = "/etc/trust-proxy/policies/$4"
plugin_dir = "/usr/lib/trust-proxy/plugins"
compile_cache = "/var/cache/trust-proxy/plugins"
TOML
}

start() { # name, command...
  local name="$1"
  shift
  "$@" &
  pids+=($!)
  printf '{"entrypoint":"started %s (pid %s)"}\n' "$name" "$!" >&2
}

case "$role" in
  authority)
    mkdir -p "$state/authority"
    start authority trust-proxy authority --state-dir "$state/authority" \
      --listen 127.0.0.1:7000 --enroll-listen 0.0.0.0:7002 \
      --bootstrap-token-file "$token_file" \
      --allow-dns "${TPM_ALLOW_DNS:-localhost}" --allow-ip "${TPM_ALLOW_IP:-127.0.0.0/8}"
    trust-proxy probe --wait 60s http://127.0.0.1:7000/healthz
    root="$state/authority/ca-cert.pem"
    TRUST_PROXY_AUTHORITY_CA_FINGERPRINT="$(fingerprint "$root")"
    export TRUST_PROXY_AUTHORITY_CA_FINGERPRINT
    if [ -d "$(dirname "$anchor")" ] && [ -w "$(dirname "$anchor")" ]; then
      cp "$root" "$anchor.tmp" && mv -f "$anchor.tmp" "$anchor"
      printf '{"entrypoint":"published the root at %s"}\n' "$anchor" >&2
    fi
    SIDECAR_AUTHORITY_URL=http://127.0.0.1:7000
    sidecar_config 1001 127.0.0.1:7000 \
      'anonymous_prefixes = ["/trust/status", "/trust/ca-certificate"]
local_authorities = ["authority", "tpm-ca-service"]' authority.toml ""
    ;;
  aggregator)
    bootstrap.sh "$authority_url" "$state/node"
    pin_published_root
    SIDECAR_AUTHORITY_URL="$authority_url"
    sidecar_config 1000 127.0.0.1:5000 \
      'signed_prefixes = ["/fl/"]
local_authorities = ["aggregator", "backend-secure"]' node.toml \
      "[[egress.peers]]
name = \"authority\"
address = \"$authority_peer\"
node_id = 1001"
    ;;
  agent)
    bootstrap.sh "$authority_url" "$state/node"
    pin_published_root
    SIDECAR_AUTHORITY_URL="$authority_url"
    sidecar_config "" 127.0.0.1:5000 'signed_prefixes = ["/fl/"]' node.toml \
      "[[egress.peers]]
name = \"aggregator\"
address = \"$aggregator_peer\"
node_id = 1000"
    ;;
  *)
    echo "usage: entrypoint.sh authority | aggregator | agent (got '$role')" >&2
    exit 64
    ;;
esac

start sidecar trust-proxy run --config "$state/sidecar.toml"
trust-proxy probe --wait 120s http://127.0.0.1:9100/healthz >/dev/null
case "$role" in
  aggregator)
    start app env LISTEN=127.0.0.1:5000 PUBLIC_LISTEN=0.0.0.0:5001 \
      HTTP_PROXY=http://127.0.0.1:8080 AUTHORITY_URL=http://authority \
      python3 -u /opt/apps/aggregator.py
    ;;
  agent)
    start app env LISTEN=127.0.0.1:5000 HTTP_PROXY=http://127.0.0.1:8080 \
      NODE_SEED="$(hostname | cksum | cut -d' ' -f1)" python3 -u /opt/apps/node_agent.py
    ;;
esac

# The first process to exit ends the container, with its status.
set +e
wait -n
status=$?
printf '{"entrypoint":"a process exited with status %s; stopping the container"}\n' "$status" >&2
stop
exit "$status"
