#!/usr/bin/env bash
# Side-by-side load benchmark: the trust-proxy sidecar and nginx, both terminating mutual
# TLS with the same CA and CRL in front of the same fast static upstream (a separate
# one-worker nginx answering `200 ok`), driven by tools/loadgen with real client
# certificates. Reports req/s and p50/p99/p99.9 per mode and concurrency, handshakes/s, and
# the sidecar's and nginx's RSS idle and after load, and the CPU time per request (user +
# system, all threads and workers) of each proxy, of the load generator and of the
# upstream: the three share the cores, so together they show where a row's cores went.
#
#   scripts/bench-proxy.sh            # ~13 minutes after the release build
#   DURATION=5s REPEAT=1 scripts/bench-proxy.sh
#   ROWS="keepalive" CONC="1" REPEAT=5 DURATION=3s scripts/bench-proxy.sh
#                                     # only some rows (keepalive signed like-for-like
#                                     # new-connection flask) and keep-alive concurrencies
#                                     # (default "1 16 64"; the signed and like-for-like
#                                     # rows always run at 16 and 64, flask at 16)
#   BASELINE_BIN=/path/to/older/trust-proxy scripts/bench-proxy.sh
#                                     # adds that build's sidecar to the unsigned rows and
#                                     # its chain sidecar to the signed and flask rows, so a change is
#                                     # measured against its parent in one run
#   THREADS=1 ROWS=flask REPEAT=1 scripts/bench-proxy.sh
#                                     # also writes each row's context switches per proxy
#                                     # thread: target/bench-proxy/threads-<label>-c<conc>.txt
#   PROFILE="sidecar-signed+2-plugins" ROWS=signed REPEAT=1 scripts/bench-proxy.sh
#                                     # also records a perf profile (software clock, call
#                                     # graphs) of that label's proxy during each of its
#                                     # rows: target/bench-proxy/perf-<label>-c<conc>.data
#
# Every row runs REPEAT times (default 3), the sidecar and nginx alternating, and the
# table shows the median of each figure: run-to-run noise on a shared 2-core VM is larger
# than the differences being measured.
# Results: a markdown table on stdout and target/bench-proxy/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8s}
ROWS=${ROWS:-keepalive signed like-for-like flask new-connection}
CONC=${CONC:-1 16 64}
WARMUP=${WARMUP:-1s}
REPEAT=${REPEAT:-3}

step() { printf '\n==> %s\n' "$*" >&2; }
wants() { [[ " $ROWS " == *" $1 "* ]]; }

missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v strace >/dev/null || missing+=(strace)
if [ -n "${PROFILE:-}" ] && ! command -v perf >/dev/null; then missing+=(linux-perf); fi
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]} (Debian packages; nginx's service is not started)"
  # Keep apt from starting the packaged service on port 80.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

step "release build (trust-proxy, loadgen; the policy plugins need the wasm32-wasip2 target)"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
cargo build --release --locked -q -p trust-proxy -p loadgen
BIN=$PWD/target/release
OUT=$PWD/target/bench-proxy
rm -rf "$OUT" && mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# Waits for "<what> listening on <addr>" in a log; prints the address.
wait_line() {
  local file=$1 what=$2
  for _ in $(seq 1 300); do
    if grep -q "${what}listening on " "$file" 2>/dev/null; then
      grep "${what}listening on " "$file" | head -1 | sed "s/.*listening on //"
      return 0
    fi
    sleep 0.1
  done
  echo "timed out waiting for '${what}listening on' in $file" >&2; cat "$file" >&2; return 1
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
tree_rss_kib() { # a process and its children (nginx master + workers)
  local total=0
  for pid in $1 $(pgrep -P "$1" || true); do total=$((total + $(rss_kib "$pid"))); done
  echo $total
}

step "authority, client and server certificates"
openssl rand -hex 32 > "$WORK/token"
"$BIN/trust-proxy" authority --listen 127.0.0.1:0 --state-dir "$WORK/authority" \
  --bootstrap-token-file "$WORK/token" > "$WORK/authority.out" 2> "$WORK/authority.log" &
PIDS+=($!)
AUTHORITY=$(wait_line "$WORK/authority.out" "")
for id in 7 8; do
  "$BIN/trust-proxy" ca issue-dev --node-id $id --dns localhost --ip 127.0.0.1 \
    --state-dir "$WORK/authority" --out-dir "$WORK/pki" >/dev/null
done
CA=$WORK/authority/ca-cert.pem
# The authority publishes its CRL on its API; both proxies use that same CRL.
curl -sf "http://$AUTHORITY/trust/crl" > "$WORK/crl.pem"

step "upstream: one nginx worker answering 200"
UP=$(free_port)
cat > "$WORK/upstream.conf" <<EOF
worker_processes 1;
pid $WORK/upstream.pid;
error_log $WORK/upstream-error.log;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$UP; keepalive_requests 1000000; location / { return 200 "ok\n"; } }
}
EOF
nginx -c "$WORK/upstream.conf" -p "$WORK" &
UPSTREAM_PID=$!
PIDS+=($UPSTREAM_PID)

step "trust-proxy sidecar (node 1, enrolled with the authority)"
cat > "$WORK/sidecar.toml" <<EOF
state_dir = "$WORK/sidecar"
node_id = 1
names = ["localhost", "127.0.0.1"]
[authority]
url = "http://$AUTHORITY"
bootstrap_token_file = "$WORK/token"
[ingress]
listen = "127.0.0.1:0"
upstream = "127.0.0.1:$UP"
signed_prefixes = ["/signed/"]
[admin]
listen = "127.0.0.1:0"
EOF
# Starts <binary> on $WORK/<name>.toml; sets <VAR> (its ingress address) and <VAR>_PID
# once its /readyz answers.
start_sidecar() { # name binary VAR
  local name=$1 bin=$2 var=$3 admin
  "$bin" --log warn run --config "$WORK/$name.toml" > "$WORK/$name.out" 2> "$WORK/$name.log" &
  printf -v "${var}_PID" '%s' $!
  PIDS+=($!)
  printf -v "$var" '%s' "$(wait_line "$WORK/$name.out" "ingress ")"
  admin=$(wait_line "$WORK/$name.out" "admin ")
  until curl -sf "http://$admin/readyz" >/dev/null; do sleep 0.1; done
}
# $WORK/<name>.toml: the first sidecar's config as another node with its own state.
derive_config() { # name node-id
  sed -e "s|^state_dir = .*|state_dir = \"$WORK/$1\"|" -e "s|^node_id = 1|node_id = $2|" \
    "$WORK/sidecar.toml" > "$WORK/$1.toml"
}
start_sidecar sidecar "$BIN/trust-proxy" SIDECAR

step "a second sidecar (node 2) with a policy chain of two plugins"
# In a folder of its own, as docs/PLUGINS.md advises: the watcher hears every write in the
# set's folder, and $WORK holds the logs.
mkdir -p "$WORK/policies"
cat > "$WORK/policies/bench.toml" <<EOF
[[plugin]]
name = "admin-only-revoke"
[[plugin]]
name = "route-allow-list"
[plugin.settings]
rules = "node=/; admin=/"
EOF
derive_config sidecar-policy 2
cat >> "$WORK/sidecar-policy.toml" <<EOF
[policy]
set = "$WORK/policies/bench.toml"
plugin_dir = "$PWD/target/plugins/wasm32-wasip2/release"
EOF
start_sidecar sidecar-policy "$BIN/trust-proxy" SIDECAR_POLICY

BASELINE_PID=
if [ -n "${BASELINE_BIN:-}" ]; then
  step "a baseline sidecar (node 3) from $BASELINE_BIN"
  derive_config sidecar-baseline 3
  start_sidecar sidecar-baseline "$BASELINE_BIN" BASELINE
  step "a baseline sidecar (node 4) with the same policy chain"
  derive_config sidecar-policy-baseline 4
  sed -n '/^\[policy\]/,$p' "$WORK/sidecar-policy.toml" >> "$WORK/sidecar-policy-baseline.toml"
  start_sidecar sidecar-policy-baseline "$BASELINE_BIN" BASELINE_POLICY
fi

FLASK_PID=
if wants flask; then
  step "a Flask upstream (tests/python/flask_app.py on werkzeug, threaded, HTTP/1.0: how the network's apps run)"
  python3 -c 'import venv, ensurepip' 2>/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
  [ -x .venv/bin/python3 ] || python3 -m venv .venv
  .venv/bin/python3 -m pip install -q --disable-pip-version-check -r deploy/apps/requirements.txt
  .venv/bin/python3 tests/python/flask_app.py > "$WORK/flask.out" 2> "$WORK/flask.log" &
  FLASK_PID=$!
  PIDS+=($FLASK_PID)
  FLASK=$(wait_line "$WORK/flask.out" "")
  # Nodes 5 and 6 in front of it: /fl/ requires a signature there, /whoami does not.
  for name in sidecar-flask sidecar-flask-policy; do
    [ $name = sidecar-flask ] && id=5 || id=6
    derive_config $name $id
    sed -i -e "s|^upstream = .*|upstream = \"$FLASK\"|" \
      -e 's|^signed_prefixes = .*|signed_prefixes = ["/fl/"]|' "$WORK/$name.toml"
  done
  sed -n '/^\[policy\]/,$p' "$WORK/sidecar-policy.toml" >> "$WORK/sidecar-flask-policy.toml"
  start_sidecar sidecar-flask "$BIN/trust-proxy" SIDECAR_FLASK
  start_sidecar sidecar-flask-policy "$BIN/trust-proxy" SIDECAR_FLASK_POLICY
  if [ -n "${BASELINE_BIN:-}" ]; then
    sed -e "s|$WORK/sidecar-flask-policy\"|$WORK/sidecar-flask-policy-baseline\"|" \
      -e 's|^node_id = 6|node_id = 9|' "$WORK/sidecar-flask-policy.toml" > "$WORK/sidecar-flask-policy-baseline.toml"
    start_sidecar sidecar-flask-policy-baseline "$BASELINE_BIN" BASELINE_FLASK_POLICY
  fi
fi

step "nginx doing mTLS + CRL (worker_processes auto)"
NGINX_PORT=$(free_port)
cat > "$WORK/nginx.conf" <<EOF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server 127.0.0.1:$UP; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_certificate $WORK/pki/node-8-cert.pem;
    ssl_certificate_key $WORK/pki/node-8-key.pem;
    ssl_client_certificate $CA;
    ssl_verify_client on;
    ssl_crl $WORK/crl.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Verified-Subject \$ssl_client_s_dn;
    }
  }
EOF
NGINX_FLASK_PORT=
if [ -n "$FLASK_PID" ]; then
  NGINX_FLASK_PORT=$(free_port)
  # The same mTLS server in front of the Flask app.
  sed -n '/^  server {/,/^  }/p' "$WORK/nginx.conf" \
    | sed -e "s|listen 127.0.0.1:$NGINX_PORT ssl|listen 127.0.0.1:$NGINX_FLASK_PORT ssl|" \
      -e 's|proxy_pass http://app;|proxy_pass http://flask;|' > "$WORK/nginx-flask.conf"
  { echo "  upstream flask { server $FLASK; keepalive 128; }"; cat "$WORK/nginx-flask.conf"; } >> "$WORK/nginx.conf"
fi
echo "}" >> "$WORK/nginx.conf"
nginx -c "$WORK/nginx.conf" -p "$WORK" &
NGINX_PID=$!
PIDS+=($NGINX_PID)
until curl -s -o /dev/null --cacert "$CA" --cert "$WORK/pki/node-7-cert.pem" --key "$WORK/pki/node-7-key.pem" "https://localhost:$NGINX_PORT/"; do sleep 0.1; done

SIDECAR_IDLE=$(rss_kib $SIDECAR_PID)
NGINX_IDLE=$(tree_rss_kib $NGINX_PID)

# Context switches (voluntary and not) of a process tree so far, every thread: per second
# at rest over 10 s they are what an idle proxy costs the machine (timers and tickers that
# wake it); per request under load, how often a request puts a proxy thread to sleep.
ctxt_total() {
  local total=0 pid f
  for pid in $1 $(pgrep -P "$1" || true); do
    for f in /proc/"$pid"/task/*/status; do
      total=$((total + $(awk '/voluntary_ctxt_switches/ {s += $2} END {print s + 0}' "$f")))
    done
  done
  echo $total
}
# "<tid>:<thread name> <context switches>" per thread of a process, sorted for join.
thread_switches() {
  local f
  for f in /proc/"$1"/task/*; do
    echo "${f##*/}:$(cat "$f/comm") $(awk '/voluntary_ctxt_switches/ {s += $2} END {print s + 0}' "$f/status")"
  done | sort
}
idle_wakeups() {
  local before
  before=$(ctxt_total "$1")
  sleep 10
  echo $(( ($(ctxt_total "$1") - before) / 10 ))
}
step "idle wake-ups (10 s each, nothing sent)"
SIDECAR_WAKEUPS=$(idle_wakeups $SIDECAR_PID)
SIDECAR_POLICY_WAKEUPS=$(idle_wakeups $SIDECAR_POLICY_PID)
NGINX_WAKEUPS=$(idle_wakeups $NGINX_PID)
BASELINE_WAKEUPS=
BASELINE_POLICY_WAKEUPS=
if [ -n "$BASELINE_PID" ]; then
  BASELINE_WAKEUPS=$(idle_wakeups $BASELINE_PID)
  BASELINE_POLICY_WAKEUPS=$(idle_wakeups $BASELINE_POLICY_PID)
fi

# CPU time (clock ticks, user + system, all threads) of a process and its children.
cpu_ticks() {
  local total=0
  for pid in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo $total
}
TICK_HZ=$(getconf CLK_TCK)
# The proxy's own CPU per request is the fair comparison on a box the load generator and
# the upstream share: req/s there also measures who won the cores.
load() { # label target pid-of-the-proxy mode concurrency [extra...]
  local label=$1 target=$2 pid=$3 mode=$4 conc=$5; shift 5
  local before up_before cs_before result
  before=$(cpu_ticks "$pid")
  cs_before=$(ctxt_total "$pid")
  [ -n "${THREADS:-}" ] && thread_switches "$pid" > "$WORK/threads-before"
  local up_pid=${LOAD_UPSTREAM_PID:-$UPSTREAM_PID}
  up_before=$(cpu_ticks "$up_pid")
  local perf_pid=
  if [ -n "${PROFILE:-}" ] && [ "$label" = "$PROFILE" ]; then
    perf record -q -F 4000 -g -p "$pid" -o "$OUT/perf-$label-c$conc.data" 2>/dev/null &
    perf_pid=$!
  fi
  result=$("$BIN/loadgen" --target "$target" --host localhost --ca "$CA" \
    --cert "$WORK/pki/node-7-cert.pem" --key "$WORK/pki/node-7-key.pem" \
    --mode "$mode" --concurrency "$conc" --duration "$DURATION" --warmup "$WARMUP" \
    --label "$label" "$@")
  if [ -n "${THREADS:-}" ]; then
    thread_switches "$pid" | join "$WORK/threads-before" - \
      | awk '{print $1, $3 - $2}' > "$OUT/threads-$label-c$conc.txt"
  fi
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; fi
  # The warm-up's requests are not counted by loadgen; assume the same rate for them.
  python3 -c '
import json, sys
r = json.loads(sys.argv[1]); ticks, up, hz, warm = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
switches = int(sys.argv[6])
total = r["requests"] * (r["duration_s"] + warm) / r["duration_s"]
r["proxy_switches_per_req"] = round(switches / max(total, 1), 2)
r["cpu_us_per_req"] = round(ticks / hz * 1e6 / max(total, 1), 1)
r["upstream_cpu_us_per_req"] = round(up / hz * 1e6 / max(total, 1), 1)
print(json.dumps(r, sort_keys=True))' "$result" $(( $(cpu_ticks "$pid") - before )) \
    $(( $(cpu_ticks "$up_pid") - up_before )) "$TICK_HZ" "${WARMUP%s}" \
    $(( $(ctxt_total "$pid") - cs_before )) \
    | tee -a "$OUT/results.jsonl" >&2
}

for round in $(seq 1 "$REPEAT"); do
  wants keepalive && step "round $round/$REPEAT: keep-alive, no signature"
  wants keepalive && for c in $CONC; do
    load sidecar "$SIDECAR" $SIDECAR_PID keepalive $c --path /plain
    load nginx "127.0.0.1:$NGINX_PORT" $NGINX_PID keepalive $c --path /plain
    if [ -n "$BASELINE_PID" ]; then
      load sidecar-baseline "$BASELINE" $BASELINE_PID keepalive $c --path /plain
    fi
  done
  wants signed && step "round $round/$REPEAT: keep-alive, signed (the sidecar verifies RSA-PSS per request)"
  wants signed && for c in 16 64; do
    load sidecar-signed "$SIDECAR" $SIDECAR_PID keepalive $c --path /signed/update --body-bytes 256 --sign --node-id 7
    load sidecar-signed+2-plugins "$SIDECAR_POLICY" $SIDECAR_POLICY_PID keepalive $c --path /signed/update --body-bytes 256 --sign --node-id 7
    if [ -n "$BASELINE_PID" ]; then
      load sidecar-baseline-signed+2-plugins "$BASELINE_POLICY" $BASELINE_POLICY_PID keepalive $c --path /signed/update --body-bytes 256 --sign --node-id 7
    fi
  done
  # The signed rows' request without the verification: the same 256-byte POST body, with
  # and without the signature's bytes (sent as x-pad-* headers, which ask for nothing), on
  # a route that requires no signature. Against the signed rows they split a signed
  # request's extra cost into its bytes and its verification.
  wants like-for-like && step "round $round/$REPEAT: keep-alive, the signed rows' request shape, not verified"
  wants like-for-like && for c in 16 64; do
    load sidecar-post256 "$SIDECAR" $SIDECAR_PID keepalive $c --path /plain/update --body-bytes 256
    load nginx-post256 "127.0.0.1:$NGINX_PORT" $NGINX_PID keepalive $c --path /plain/update --body-bytes 256
    load sidecar-post256+padding "$SIDECAR" $SIDECAR_PID keepalive $c --path /plain/update --body-bytes 256 --sign --node-id 7 --signature-as-padding
    load nginx-post256+padding "127.0.0.1:$NGINX_PORT" $NGINX_PID keepalive $c --path /plain/update --body-bytes 256 --sign --node-id 7 --signature-as-padding
    load sidecar-post256+padding+2-plugins "$SIDECAR_POLICY" $SIDECAR_POLICY_PID keepalive $c --path /plain/update --body-bytes 256 --sign --node-id 7 --signature-as-padding
  done
  # What users run: a Flask app behind the proxy. Unsigned POSTs to /whoami against
  # signed ones to /fl/update (same 256-byte body; both routes echo the request).
  wants flask && step "round $round/$REPEAT: keep-alive, the Flask upstream"
  wants flask && for c in 16; do
    LOAD_UPSTREAM_PID=$FLASK_PID load flask-sidecar "$SIDECAR_FLASK" $SIDECAR_FLASK_PID keepalive $c --path /whoami --body-bytes 256
    LOAD_UPSTREAM_PID=$FLASK_PID load flask-nginx "127.0.0.1:$NGINX_FLASK_PORT" $NGINX_PID keepalive $c --path /whoami --body-bytes 256
    LOAD_UPSTREAM_PID=$FLASK_PID load flask-sidecar+padding "$SIDECAR_FLASK" $SIDECAR_FLASK_PID keepalive $c --path /whoami --body-bytes 256 --sign --node-id 7 --signature-as-padding
    LOAD_UPSTREAM_PID=$FLASK_PID load flask-sidecar-signed "$SIDECAR_FLASK" $SIDECAR_FLASK_PID keepalive $c --path /fl/update --body-bytes 256 --sign --node-id 7
    LOAD_UPSTREAM_PID=$FLASK_PID load flask-sidecar-signed+2-plugins "$SIDECAR_FLASK_POLICY" $SIDECAR_FLASK_POLICY_PID keepalive $c --path /fl/update --body-bytes 256 --sign --node-id 7
    if [ -n "$BASELINE_PID" ]; then
      LOAD_UPSTREAM_PID=$FLASK_PID load flask-sidecar-baseline-signed+2-plugins "$BASELINE_FLASK_POLICY" $BASELINE_FLASK_POLICY_PID keepalive $c --path /fl/update --body-bytes 256 --sign --node-id 7
    fi
  done
  if wants new-connection; then
    step "round $round/$REPEAT: a new connection and full handshake per request"
    load sidecar "$SIDECAR" $SIDECAR_PID new-connection 16 --path /plain
    load nginx "127.0.0.1:$NGINX_PORT" $NGINX_PID new-connection 16 --path /plain
  fi
done

# Syscalls per keep-alive request at c=1, counted by strace over a short run (strace slows
# the proxy; only the counts are read).
SYSCALLS=
if wants keepalive || wants signed || wants flask; then
  step "syscalls per request (strace -c, keep-alive c=1)"
  proxies=()
  SIGNED_ARGS="--path /signed/update --body-bytes 256 --sign --node-id 7"
  if wants keepalive; then
    proxies+=("sidecar $SIDECAR $SIDECAR_PID --path /plain" "nginx 127.0.0.1:$NGINX_PORT $NGINX_PID --path /plain")
    [ -n "$BASELINE_PID" ] && proxies+=("sidecar-baseline $BASELINE $BASELINE_PID --path /plain")
  fi
  if wants signed; then
    proxies+=("sidecar-signed $SIDECAR $SIDECAR_PID $SIGNED_ARGS"
      "sidecar-signed+2-plugins $SIDECAR_POLICY $SIDECAR_POLICY_PID $SIGNED_ARGS")
  fi
  if wants flask; then
    proxies+=("flask-sidecar $SIDECAR_FLASK $SIDECAR_FLASK_PID --path /whoami --body-bytes 256"
      "flask-nginx 127.0.0.1:$NGINX_FLASK_PORT $NGINX_PID --path /whoami --body-bytes 256")
  fi
  for who in "${proxies[@]}"; do
    set -- $who
    strace -c -f -o "$WORK/strace-$1.txt" $(for p in $3 $(pgrep -P "$3" || true); do echo -p "$p"; done) &
    STRACE_PID=$!
    sleep 1 # strace attaches
    n=$("$BIN/loadgen" --target "$2" --host localhost --ca "$CA" \
      --cert "$WORK/pki/node-7-cert.pem" --key "$WORK/pki/node-7-key.pem" \
      --mode keepalive --concurrency 1 --duration 2s --warmup 0s --label strace "${@:4}" \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["requests"])')
    kill -INT $STRACE_PID; wait $STRACE_PID 2>/dev/null || true
    SYSCALLS+="| $1 | $(awk -v n="$n" '$NF != "total" && $4 ~ /^[0-9]+$/ {
        t += $4 / n; if ($4 / n >= 0.05) printf "%s %.1f, ", $NF, $4 / n }
      END { printf "total %.1f", t }' "$WORK/strace-$1.txt") |"$'\n'
  done
fi

SIDECAR_LOADED=$(awk '/^VmHWM/ {print $2}' "/proc/$SIDECAR_PID/status")
NGINX_LOADED=$(tree_rss_kib $NGINX_PID)

{
  echo "| target | mode | signed | conc | req/s (median) | req/s (min-max) | p50 us | p99 us | p99.9 us | proxy CPU us/req | client CPU us/req | upstream CPU us/req | proxy context switches/req | errors+non-2xx |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  python3 - "$OUT/results.jsonl" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault((r['label'], r['mode'], r['signed'], r['concurrency']), []).append(r)
for (label, mode, signed, conc), runs in rows.items():
    med = lambda k: statistics.median(x[k] for x in runs)
    rps = [x['rps'] for x in runs]
    bad = sum(x['errors'] + x['non_2xx'] for x in runs)
    print(f"| {label} | {mode} | {'yes' if signed else 'no'} | {conc} | {med('rps'):.0f} | {min(rps):.0f}-{max(rps):.0f} | {med('p50_us'):.0f} | {med('p99_us'):.0f} | {med('p999_us'):.0f} | {med('cpu_us_per_req'):.1f} | {med('client_cpu_us_per_req'):.1f} | {med('upstream_cpu_us_per_req'):.1f} | {med('proxy_switches_per_req'):.2f} | {bad} |")
PY
  echo
  echo "| process | idle RSS | RSS after load |"
  echo "|---|---|---|"
  echo "| trust-proxy sidecar | $((SIDECAR_IDLE / 1024)) MiB | $((SIDECAR_LOADED / 1024)) MiB (peak, VmHWM) |"
  echo "| nginx master + workers | $((NGINX_IDLE / 1024)) MiB | $((NGINX_LOADED / 1024)) MiB (now) |"
  echo
  echo "| process at rest | context switches per second |"
  echo "|---|---|"
  echo "| trust-proxy sidecar, no policy set | $SIDECAR_WAKEUPS |"
  echo "| trust-proxy sidecar, 2-plugin policy set | $SIDECAR_POLICY_WAKEUPS |"
  echo "| nginx master + workers | $NGINX_WAKEUPS |"
  if [ -n "$BASELINE_WAKEUPS" ]; then
    echo "| baseline sidecar, no policy set | $BASELINE_WAKEUPS |"
    echo "| baseline sidecar, 2-plugin policy set | $BASELINE_POLICY_WAKEUPS |"
  fi
  if [ -n "$SYSCALLS" ]; then
    echo
    echo "| proxy | syscalls per keep-alive request at c=1 (strace -c) |"
    echo "|---|---|"
    printf '%s' "$SYSCALLS"
  fi
  echo
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%Y-%m-%d); nginx $(nginx -v 2>&1 | cut -d/ -f2); $REPEAT runs of $DURATION per row."
} | tee "$OUT/summary.md"
