#!/usr/bin/env bash
# A five-minute tour of the trust layer with the real binary, in a temp folder:
# create a network root, enrol two nodes and an admin, sign a request from node 1 to
# node 2 and verify it, revoke node 1 and watch verification (ours and openssl's) refuse;
# then run the trust authority, enroll three nodes over its API and revoke one.
# Usage: scripts/demo.sh [workdir]     (leaves the files in workdir for you to explore)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d -t trust-demo.XXXXXX)}
mkdir -p "$work"
echo "==> building trust-proxy (release; the policy plugins need the wasm32-wasip2 target)"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
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

echo "==> 7. the trust authority: enroll over the API, revoke, watch the status"
openssl rand -hex 32 > "$work/token" && chmod 600 "$work/token"
tp authority --state-dir "$work/authority" --listen 127.0.0.1:0 --bootstrap-token-file "$work/token" \
  > "$work/authority.out" 2> "$work/authority.log" &
authority_pid=$!
trap 'kill "$authority_pid" 2>/dev/null; wait "$authority_pid" 2>/dev/null' EXIT
until grep -q '^listening on ' "$work/authority.out" 2>/dev/null; do
  kill -0 "$authority_pid" 2>/dev/null || { cat "$work/authority.log"; exit 1; }
  sleep 0.1
done
url="http://$(awk '{print $3}' "$work/authority.out")"
echo "   authority at $url"
for n in 1 2 3; do
  tp key generate --out "$work/api-node-$n-key.pem" > /dev/null
  tp key csr --key "$work/api-node-$n-key.pem" --dns localhost --out "$work/api-node-$n.csr" > /dev/null
  python3 -c 'import json,sys; print(json.dumps({"csr": open(sys.argv[1]).read(), "token": open(sys.argv[2]).read().strip()}))' \
    "$work/api-node-$n.csr" "$work/token" \
    | curl -s -X POST --data @- "$url/trust/enroll" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print("   enrolled node", d["node_id"], d["spiffe_id"])'
done
curl -s "$url/trust/status" | python3 -c 'import json,sys; d=json.load(sys.stdin); d.pop("ca_certificate"); print("  ", d)'
echo "   revoking node 2: $(curl -s -X POST "$url/trust/revoke/2")"
echo "   verify node 2:   $(curl -s -X POST "$url/trust/verify/2")"
curl -s "$url/trust/status" | python3 -c 'import json,sys; d=json.load(sys.stdin); d.pop("ca_certificate"); print("  ", d)'
kill -TERM "$authority_pid"; wait "$authority_pid" || true
trap - EXIT
echo
echo "Files are in $work"
