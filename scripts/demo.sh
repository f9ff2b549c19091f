#!/usr/bin/env bash
# A five-minute tour of the trust layer with the real binary, in a temp folder:
# create a network root, enrol two nodes and an admin, sign a request from node 1 to
# node 2 and verify it, revoke node 1 and watch verification (ours and openssl's) refuse.
# Usage: scripts/demo.sh [workdir]     (leaves the files in workdir for you to explore)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d -t trust-demo.XXXXXX)}
mkdir -p "$work"
echo "==> building trust-proxy (release)"
cargo build -q --release --bin trust-proxy
tp() { target/release/trust-proxy "$@"; }
ca="$work/ca"

echo "==> 1. a new network root (RSA-4096, 10 years)"
tp ca init --state-dir "$ca" --trust-domain sovereign.local
echo "==> 2. node 2 makes its own key and CSR; the CA issues from the CSR"
tp key generate --out "$work/node-2-key.pem"
tp key csr --key "$work/node-2-key.pem" --dns localhost --ip 127.0.0.1 --out "$work/node-2.csr"
tp ca issue --state-dir "$ca" --node-id 2 --csr "$work/node-2.csr" --out "$work/node-2-cert.pem"
echo "==> 3. node 1 and an admin, the development shortcut"
tp ca issue-dev --state-dir "$ca" --node-id 1 --out-dir "$work" --dns localhost
tp ca issue-dev --state-dir "$ca" --admin ops --out-dir "$work"
tp cert inspect "$work/node-1-cert.pem"
echo "==> 4. node 1 signs a model update for node 2; node 2 verifies it"
printf '{"round":3,"weights":[0.1,0.2]}' > "$work/update.json"
tp message sign --key "$work/node-1-key.pem" --cert "$work/node-1-cert.pem" \
  --url http://node-2.localhost:8443/fl/update --body "$work/update.json" | tee "$work/headers.txt"
tp message verify --peer "$work/node-1-cert.pem" --ca "$ca/ca-cert.pem" --crl "$ca/crl.pem" \
  --headers "$work/headers.txt" --url http://node-2.localhost:8443/fl/update --body "$work/update.json"
echo "==> 5. a tampered body is refused"
printf '{"round":3,"weights":[9,9]}' > "$work/tampered.json"
tp message verify --peer "$work/node-1-cert.pem" --ca "$ca/ca-cert.pem" --crl "$ca/crl.pem" \
  --headers "$work/headers.txt" --url http://node-2.localhost:8443/fl/update --body "$work/tampered.json" || echo "   (exit $?: refused, as it should be)"
echo "==> 6. revoke node 1: a new CRL is published at once"
tp ca revoke --state-dir "$ca" --cert "$work/node-1-cert.pem"
tp cert verify --ca "$ca/ca-cert.pem" --crl "$ca/crl.pem" "$work/node-1-cert.pem" || echo "   (exit $?: refused)"
openssl verify -crl_check -CAfile "$ca/ca-cert.pem" -CRLfile "$ca/crl.pem" "$work/node-1-cert.pem" || echo "   (openssl agrees)"
tp cert verify --ca "$ca/ca-cert.pem" --crl "$ca/crl.pem" "$work/node-2-cert.pem"
echo
echo "Files are in $work"
