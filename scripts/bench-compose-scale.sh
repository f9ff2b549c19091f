#!/usr/bin/env bash
# How fast the compose deployment grows, as an operator runs it: the guide's command at
# SCALES (default "50 100": up from nothing to the first, then from each to the next),
# timing each step until the authority counts every agent live and verified, and reporting
# what went wrong on the way: container restarts, containers unhealthy, seconds during
# which /trust/status did not answer, and where each node's start-up time went (key made,
# enrolled, CRL fetched, serving) from the sidecars' own log lines.
#
#   scripts/bench-compose-scale.sh                # builds the images first (no registry needed)
#   SCALES="5 50 100" scripts/bench-compose-scale.sh
#
# Needs Docker with docker-compose (or the compose plugin) and the images of
# deploy/docker/build-images.sh (built here when missing). Uses its own compose project
# and ephemeral published ports, and takes the project down (volumes included) at the end.
# Results: a markdown table on stdout and target/bench-compose/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALES=${SCALES:-50 100}
LIMIT=${LIMIT:-300}
project="tpm-scale-$$"
out=target/bench-compose
mkdir -p "$out"
step() { printf '==> %s\n' "$*" >&2; }

if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
export TPM_TRUST_PUBLISH=127.0.0.1: TPM_BACKEND_PUBLISH=127.0.0.1: TPM_PROMETHEUS_PUBLISH=127.0.0.1:
dc() { "${compose[@]}" -f docker-compose.full.yml -p "$project" "$@"; }
cleanup() { dc down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

if ! docker image inspect sovereign/trust-proxy-app:latest >/dev/null 2>&1; then
  [ -x target/release/trust-proxy ] || cargo build --release --locked -p trust-proxy
  deploy/docker/build-images.sh target/release/trust-proxy >/dev/null
fi

status_json() {
  local addr
  addr=$(dc port backend-secure 5001 2>/dev/null || true)
  [ -n "$addr" ] || return 1
  curl -s --max-time 2 "http://$addr/trust/status"
}

# grow N: `up -d --scale` to N agents; waits until N agents are live and N + 2 verified.
grow() {
  local n=$1 from=$2 start now silent=0 live=0 verified=0 answer
  step "scale node-agent-secure $from -> $n"
  start=$(date +%s.%N)
  dc up -d --scale node-agent-secure="$n" >"$out/up-$n.log" 2>&1
  local up_returned
  up_returned=$(awk -v a="$(date +%s.%N)" -v b="$start" 'BEGIN { printf "%.1f", a - b }')
  while :; do
    now=$(date +%s.%N)
    if answer=$(status_json) && [ -n "$answer" ]; then
      live=$(jq -r '.by_role.agent.live // 0' <<<"$answer" 2>/dev/null || echo 0)
      verified=$(jq -r '.verified_nodes // 0' <<<"$answer" 2>/dev/null || echo 0)
    else
      silent=$((silent + 1))
    fi
    [ "$live" -ge "$n" ] && [ "$verified" -ge $((n + 2)) ] && break
    if awk -v a="$now" -v b="$start" -v l="$LIMIT" 'BEGIN { exit !(a - b > l) }'; then
      step "not all live within ${LIMIT}s: $live agents live, $verified verified"
      break
    fi
    sleep 1
  done
  local took restarts unhealthy
  took=$(awk -v a="$(date +%s.%N)" -v b="$start" 'BEGIN { printf "%.1f", a - b }')
  restarts=$(docker ps -a -q --filter "label=com.docker.compose.project=$project" \
    | xargs -r docker inspect -f '{{.RestartCount}}' | awk '{s += $1} END {print s + 0}')
  unhealthy=$(docker ps -a -q --filter "label=com.docker.compose.project=$project" --filter health=unhealthy | wc -l)
  printf '{"from":%s,"to":%s,"seconds":%s,"agents_live":%s,"verified":%s,"restarts":%s,"unhealthy":%s,"status_silent_polls":%s,"up_returned":%s}\n' \
    "$from" "$n" "$took" "$live" "$verified" "$restarts" "$unhealthy" "$silent" "$up_returned" | tee -a "$out/results.jsonl" >&2
  printf '| %s -> %s agents | %s s | %s s | %s live, %s verified | %s | %s | %s |\n' \
    "$from" "$n" "$took" "$up_returned" "$live" "$verified" "$restarts" "$unhealthy" "$silent" >>"$out/table.md"
}

# Where a node's start-up went: the sidecar's own timestamps, first line to `serving`.
phases() {
  dc logs --no-color node-agent-secure 2>/dev/null | python3 -c '
import json, sys, statistics
from datetime import datetime
marks = {}
for line in sys.stdin:
    name, _, rest = line.partition("|")
    try:
        event = json.loads(rest.strip())
    except ValueError:
        continue
    t = event.get("timestamp")
    msg = event.get("fields", {}).get("message", "")
    if not t:
        continue
    when = datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
    m = marks.setdefault(name.strip(), {})
    m.setdefault("first", when)
    for key, needle in [("identity", "node identity ready"), ("serving", "sidecar serving")]:
        if needle in msg and key not in m:
            m[key] = when
rows = [m for m in marks.values() if "identity" in m and "serving" in m]
if rows:
    ident = [m["identity"] - m["first"] for m in rows]
    serve = [m["serving"] - m["identity"] for m in rows]
    print(f"| sidecar start to identity (key, enrollment), median / max | {statistics.median(ident):.1f} s / {max(ident):.1f} s |")
    print(f"| identity to serving (policy compile, CRL), median / max | {statistics.median(serve):.1f} s / {max(serve):.1f} s |")
'
}

: >"$out/table.md"
prev=0
for n in $SCALES; do
  grow "$n" "$prev"
  prev=$n
done
echo "| step | until every agent live and verified | of which until \`up -d\` returned | counted | restarts | unhealthy | status polls unanswered |"
echo "|---|---|---|---|---|---|---|"
cat "$out/table.md"
echo
echo "| start-up phase (agents' sidecars, all steps) | figure |"
echo "|---|---|"
phases
