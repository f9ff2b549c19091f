#!/usr/bin/env bash
# Checks the monitoring files: both Prometheus configurations, the alert rules and their unit
# tests, the generated Grafana dashboards, and that every metric the rules and dashboards use
# is in the catalog (monitoring/metrics.txt), which must match the metrics the code defines.
# Installs the `prometheus` Debian package (for promtool) when promtool is missing, without
# starting its service. Runs from anywhere; exits non-zero on the first failure.
# Usage: scripts/check-monitoring.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

tmp="$(mktemp -d)"
policy_rc_created=0
cleanup() {
  rm -rf "$tmp"
  if [ "$policy_rc_created" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

apt_install_prometheus() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
}

step "promtool"
if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "promtool is missing: apt-get install prometheus (as root), or run this as root" >&2
    exit 1
  fi
  echo "installing the prometheus package (its service is not started)"
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    policy_rc_created=1
  fi
  apt_install_prometheus || { apt-get update -qq && apt_install_prometheus; }
fi
promtool --version 2>&1 | head -n 1

step "promtool check config monitoring/prometheus.yml (local testnet)"
promtool check config monitoring/prometheus.yml

step "promtool check config monitoring/prometheus-compose.yml (compose)"
promtool check config --syntax-only monitoring/prometheus-compose.yml
# Its rule file lives at /etc/prometheus/ in the container: check it fully with that path
# pointed at this checkout.
sed "s#/etc/prometheus/tpm_alerts.yml#$PWD/monitoring/tpm_alerts.yml#" \
  monitoring/prometheus-compose.yml > "$tmp/prometheus-compose.yml"
promtool check config "$tmp/prometheus-compose.yml"

step "promtool check rules monitoring/tpm_alerts.yml"
promtool check rules monitoring/tpm_alerts.yml

step "promtool test rules monitoring/tests/tpm_alerts_test.yml"
promtool test rules monitoring/tests/tpm_alerts_test.yml

step "python3 monitoring/grafana/generate.py --check (dashboards match their generator)"
python3 monitoring/grafana/generate.py --check

step "metric names: rules and dashboards against monitoring/metrics.txt, catalog against the code"
python3 - "$tmp/dashboard-queries.json" <<'PY'
import json
import re
import sys
from pathlib import Path

errors = []
catalog = [l.strip() for l in Path("monitoring/metrics.txt").read_text().splitlines()]
catalog = {l for l in catalog if l and not l.startswith("#")}

# The catalog is exactly what the code registers (plus `up`, which Prometheus adds).
sources = ["sidecar/src/metrics.rs", "authority/src/metrics.rs", "crates/log-sampling/src/lib.rs"]
defined = set()
for src in sources:
    defined |= set(re.findall(r'"((?:tpm|sovereignmap)_[a-z0-9_]+)"', Path(src).read_text()))
for name in sorted(defined - catalog):
    errors.append(f"{name} is defined in {' or '.join(sources)} but missing from monitoring/metrics.txt")
for name in sorted(catalog - defined - {"up"}):
    errors.append(f"{name} is in monitoring/metrics.txt but defined in neither {' nor '.join(sources)}")
docs = Path("docs/metrics.md").read_text()
for name in sorted(catalog - {"up"}):
    if f"`{name}`" not in docs:
        errors.append(f"{name} is not described in docs/metrics.md")

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "bool", "inf", "nan"}


def metric_names(expr):
    """Metric names in a PromQL expression (Grafana variables allowed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges and subqueries
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\boffset\s+-?[\w$]+", " ", e)
    e = re.sub(r"\$\w+", " ", e)
    e = re.sub(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", " ", e)  # numbers
    names = set()
    for m in re.finditer(r"[A-Za-z_:][\w:]*", e):
        if e[m.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if m.group(0).lower() not in KEYWORDS:
            names.add(m.group(0))
    return names


def known(name):
    if name in catalog:
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in catalog:
            return True
    return False


# Alert rules: a minimal reader for this file's shape (`expr:` inline or as a block).
rules_path = Path("monitoring/tpm_alerts.yml")
lines = rules_path.read_text().splitlines()
exprs, alerts, runbooks = [], [], {}
i = 0
while i < len(lines):
    line = lines[i]
    if m := re.match(r"^\s*- alert:\s*(\S+)\s*$", line):
        alerts.append(m.group(1))
    if m := re.match(r"^\s*runbook:\s*(\S+)\s*$", line):
        runbooks[alerts[-1]] = m.group(1)
    m = re.match(r"^(\s*)expr:\s*(.*)$", line)
    if m:
        indent, rest = len(m.group(1)), m.group(2).strip()
        if rest[:1] in ("|", ">"):
            block = []
            while i + 1 < len(lines) and (not lines[i + 1].strip()
                                          or len(lines[i + 1]) - len(lines[i + 1].lstrip()) > indent):
                i += 1
                block.append(lines[i])
            exprs.append(("rule", "\n".join(block)))
        else:
            exprs.append(("rule", rest.strip("'\"")))
    i += 1
if len(alerts) != 14:
    errors.append(f"{rules_path}: {len(alerts)} alert rules, expected 14")
headings = set(re.findall(r"^### (\S+)\s*$", docs, re.M))
for alert in alerts:
    want = f"docs/metrics.md#{alert.lower()}"
    if runbooks.get(alert) != want:
        errors.append(f"{alert}: runbook should be {want}, is {runbooks.get(alert)}")
    if alert not in headings:
        errors.append(f"{alert}: no '### {alert}' section in docs/metrics.md")

# Dashboards: every target's expression and every variable's query.
dashboard_queries = []
for path in sorted(Path("monitoring/grafana/dashboards").glob("*.json")):
    board = json.loads(path.read_text())
    panels = list(board.get("panels", []))
    for p in list(panels):
        panels.extend(p.get("panels", []))  # panels inside collapsed rows
    for p in panels:
        for t in p.get("targets", []):
            exprs.append((f"{path.name}: {p.get('title')}", t["expr"]))
            dashboard_queries.append(t["expr"])
    for v in board.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.match(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", q)
        if m:
            exprs.append((f"{path.name}: variable {v['name']}", m.group(1)))
            dashboard_queries.append(m.group(1))

used = set()
for where, expr in exprs:
    for name in metric_names(expr):
        used.add(re.sub(r"_(?:bucket|sum|count)$", "", name) if name not in catalog else name)
        if not known(name):
            errors.append(f"{where}: {name} is not in monitoring/metrics.txt")

# Dashboard queries as recording rules, so promtool parses them (variables substituted).
rules = []
for n, q in enumerate(dashboard_queries):
    q = re.sub(r"\$__\w+", "1m", q)
    q = re.sub(r"\$\w+", ".*", q)
    rules.append({"record": f"dashboard:query_{n}", "expr": q})
Path(sys.argv[1]).write_text(json.dumps({"groups": [{"name": "dashboards", "rules": rules}]}))

print(f"{len(catalog)} metric names in the catalog; {len(alerts)} alerts and "
      f"{len(dashboard_queries)} dashboard queries use {len(used & catalog)} of them")
if errors:
    for e in errors:
        print(f"ERROR: {e}", file=sys.stderr)
    sys.exit(1)
print("every metric name used is in the catalog, and the catalog matches the code")
PY

step "dashboard queries parse (promtool, as recording rules)"
promtool check rules --lint=none "$tmp/dashboard-queries.json"

step "monitoring checks passed"
