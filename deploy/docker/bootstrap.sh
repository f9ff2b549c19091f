#!/usr/bin/env bash
# Bootstrap of a node container (the seed's tpm-bootstrap.sh role): wait until the trust
# authority's enrollment listener answers, check the bootstrap token is there, and prepare
# the state folder (0700). The sidecar then enrolls itself on start: it makes its key here
# (0600, it never leaves the container), sends only a CSR with the token, and writes its
# certificate, the CA certificate and the CRL into the same folder.
# Usage: bootstrap.sh <authority-url> <state-dir>
set -euo pipefail
url="${1:?usage: bootstrap.sh <authority-url> <state-dir>}"
state="${2:?usage: bootstrap.sh <authority-url> <state-dir>}"
token_file="${TRUST_BOOTSTRAP_TOKEN_FILE:-/run/secrets/bootstrap-token}"
wait_for="${TPM_BOOTSTRAP_WAIT:-180s}"

log() { printf '{"bootstrap":"%s"}\n' "$*" >&2; }

if [ -s "$state/node-cert.pem" ]; then
  log "state in $state has a certificate; the sidecar checks it and renews when due"
elif [ ! -r "$token_file" ]; then
  log "no bootstrap token at $token_file: mount it (compose secret bootstrap-token) or set TRUST_BOOTSTRAP_TOKEN_FILE"
  exit 66
fi
mkdir -p "$state"
chmod 0700 "$state"
log "waiting up to $wait_for for the authority at $url"
if ! trust-proxy probe --wait "$wait_for" "$url/healthz"; then
  log "the authority at $url did not answer within $wait_for"
  exit 69
fi
log "the authority answers; the sidecar enrolls next"
