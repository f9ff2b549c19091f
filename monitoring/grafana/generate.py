#!/usr/bin/env python3
"""Generates the Grafana dashboards in monitoring/grafana/dashboards/ from the panel lists
below (Python 3 standard library only).

    python3 monitoring/grafana/generate.py           # write the JSON files
    python3 monitoring/grafana/generate.py --check   # exit 1 if a committed file differs

Edit the panels here, never the JSON. Each panel is data: a title, a type (timeseries,
stat, gauge, table), one or more PromQL queries and a unit. Every metric name used must be
in monitoring/metrics.txt (scripts/check-monitoring.sh checks it).
"""

import argparse
import json
import sys
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}

# Query fragments: the sidecars picked in the `instance` variable, the nodes in `node`.
SC = 'job="sidecar", instance=~"$instance"'
NODE = 'node_id=~"$node"'
AUTH = 'job="authority"'
RI = "$__rate_interval"

TEMPLATING = [
    {
        "name": "instance",
        "label": "Sidecar",
        "query": 'label_values(up{job="sidecar"}, instance)',
    },
    {
        "name": "node",
        "label": "Node",
        "query": "label_values(tpm_certificate_expiry_seconds, node_id)",
    },
]


def panel(title, kind, queries, unit="short", width=None, height=None, description="",
          thresholds=None, minimum=None, maximum=None):
    """One panel. `queries` is an expression, or a list of (expression, legend) pairs."""
    if isinstance(queries, str):
        queries = [(queries, "")]
    return {
        "title": title,
        "type": kind,
        "queries": queries,
        "unit": unit,
        "width": width or {"stat": 4, "gauge": 4, "table": 12, "timeseries": 12}[kind],
        "height": height or {"stat": 4, "gauge": 5, "table": 8, "timeseries": 8}[kind],
        "description": description,
        "thresholds": thresholds,
        "min": minimum,
        "max": maximum,
    }


def p99(metric, by, selector):
    return (f"histogram_quantile(0.99, sum by ({by}, le) "
            f"(rate({metric}_bucket{{{selector}}}[{RI}])))")


# Green until the first step, then each (value, colour).
READY = [(0, "red"), (1, "green")]
EXPIRY = [(0, "red"), (7 * 86400, "orange"), (30 * 86400, "green")]

TRUST_VERIFICATION = [
    panel("Sidecars up", "stat", f"sum(up{{{SC}}})", thresholds=[(0, "red"), (1, "green")]),
    panel("Sidecars ready", "stat", f"sum(tpm_ready{{{SC}}})", thresholds=[(0, "red"), (1, "green")]),
    panel("Authority up", "stat", f"max(up{{{AUTH}}})", thresholds=READY),
    panel("Verified nodes", "stat", f"max(sovereignmap_verified_nodes_count{{{AUTH}}})"),
    panel("Requests/s", "stat", f"sum(rate(tpm_requests_total{{{SC}}}[{RI}]))", unit="reqps"),
    panel("Not forwarded", "stat",
          f'sum(rate(tpm_requests_total{{{SC}, outcome!="forwarded"}}[{RI}])) '
          f"/ sum(rate(tpm_requests_total{{{SC}}}[{RI}]))",
          unit="percentunit", thresholds=[(0, "green"), (0.05, "orange"), (0.1, "red")]),
    panel("Requests by outcome", "timeseries",
          [(f"sum by (outcome) (rate(tpm_requests_total{{{SC}}}[{RI}]))", "{{outcome}}")],
          unit="reqps"),
    panel("Requests by direction and instance", "timeseries",
          [(f"sum by (instance, direction) (rate(tpm_requests_total{{{SC}}}[{RI}]))",
            "{{instance}} {{direction}}")], unit="reqps"),
    panel("Trust verification p99 (sidecars)", "timeseries",
          [(p99("tpm_trust_verification_duration_seconds", "instance", SC), "{{instance}}")],
          unit="s", description="Per-request check: peer still trusted, plus the signature. "
          "Budget: 1 us cached, 100 us uncached; alert above 1 ms."),
    panel("Trust verification p50 (sidecars)", "timeseries",
          [(f"histogram_quantile(0.5, sum by (instance, le) (rate("
            f"tpm_trust_verification_duration_seconds_bucket{{{SC}}}[{RI}])))", "{{instance}}")],
          unit="s"),
    panel("Certificate verification p99 (authority)", "timeseries",
          [(p99("tpm_trust_verification_duration_seconds", "instance", AUTH), "{{instance}}")],
          unit="s"),
    panel("Trust cache hit ratio", "timeseries",
          [(f"sum by (instance) (rate(tpm_trust_cache_hits_total{{{SC}}}[{RI}])) / "
            f"(sum by (instance) (rate(tpm_trust_cache_hits_total{{{SC}}}[{RI}])) + "
            f"sum by (instance) (rate(tpm_trust_cache_misses_total{{{SC}}}[{RI}])))",
            "{{instance}}")], unit="percentunit", minimum=0, maximum=1),
    panel("Trust cache hits and misses", "timeseries",
          [(f"sum(rate(tpm_trust_cache_hits_total{{{SC}}}[{RI}]))", "hits"),
           (f"sum(rate(tpm_trust_cache_misses_total{{{SC}}}[{RI}]))", "misses")],
          unit="ops"),
    panel("Signature failures by reason", "timeseries",
          [(f"sum by (reason) (rate(tpm_signature_verification_failures_total{{{SC}}}[{RI}]))",
            "{{reason}}")], unit="ops"),
    panel("TLS handshake failures by reason", "timeseries",
          [(f"sum by (reason) (rate(tpm_tls_handshake_failures_total{{{SC}}}[{RI}]))",
            "{{reason}}")], unit="ops"),
    panel("Policy evaluations by plugin and outcome", "timeseries",
          [(f'sum by (plugin, outcome) (rate(tpm_policy_evaluations_total{{{SC}, shadow="false"}}[{RI}]))',
            "{{plugin}} {{outcome}}")], unit="ops"),
    panel("Policy evaluation p99 by plugin", "timeseries",
          [(p99("tpm_policy_evaluation_duration_seconds", "plugin", SC), "{{plugin}}")],
          unit="s", description="Budget: a chain of 2 plugins p99 <= 25 us."),
    panel("Shadow policy disagreements", "timeseries",
          [(f"sum by (enforced, shadow) (rate(tpm_policy_shadow_disagreements_total{{{SC}}}[{RI}]))",
            "enforced {{enforced}}, shadow {{shadow}}")], unit="ops"),
    panel("Upstream errors", "timeseries",
          [(f"sum by (direction, kind) (rate(tpm_upstream_errors_total{{{SC}}}[{RI}]))",
            "{{direction}} {{kind}}")], unit="ops"),
    panel("Open inbound connections", "timeseries",
          [(f"tpm_connections_active{{{SC}}}", "{{instance}}")]),
    panel("Authority API p99 by route (without the CRL long poll)", "timeseries",
          [(p99("tpm_authority_request_duration_seconds", "route",
                f'{AUTH}, route!="crl"'), "{{route}}")], unit="s"),
    panel("Authority API requests by route and class", "timeseries",
          [(f"sum by (route, class) (rate(tpm_authority_request_duration_seconds_count{{{AUTH}}}[{RI}]))",
            "{{route}} {{class}}")], unit="reqps"),
    panel("Own certificate expiry of the selected nodes", "timeseries",
          [(f"tpm_certificate_expiry_seconds{{{SC}, {NODE}}}", "node {{node_id}}")], unit="s",
          width=24, height=6),
]

CERTIFICATE_LIFECYCLE = [
    panel("Soonest certificate expiry (sidecars)", "stat",
          f"min(tpm_certificate_expiry_seconds{{{SC}, {NODE}}})", unit="s", thresholds=EXPIRY),
    panel("Verified nodes", "stat", f"max(sovereignmap_verified_nodes_count{{{AUTH}}})"),
    panel("Revoked nodes", "stat", f'max(tpm_nodes{{{AUTH}, status="revoked"}})',
          thresholds=[(0, "green"), (1, "orange")]),
    panel("Expired or invalid nodes", "stat",
          f'sum(tpm_nodes{{{AUTH}, status=~"expired|invalid"}})',
          thresholds=[(0, "green"), (1, "red")]),
    panel("CRL number (authority)", "stat", f"max(tpm_crl_number{{{AUTH}}})"),
    panel("Serials in the CRL", "stat", f"max(tpm_crl_size{{{AUTH}}})"),
    panel("Certificate expiry by node (authority registry)", "table",
          [(f"tpm_certificate_expiry_seconds{{{AUTH}, {NODE}}}", "")], unit="s",
          description="Every registered node's current certificate, revoked ones included."),
    panel("Nodes by status", "gauge",
          [(f"tpm_nodes{{{AUTH}}}", "{{status}}")], width=12, height=8, minimum=0),
    panel("Certificate expiry by node (sidecars)", "timeseries",
          [(f"tpm_certificate_expiry_seconds{{{SC}, {NODE}}}", "node {{node_id}}")], unit="s"),
    panel("Certificate age by node", "timeseries",
          [(f"tpm_certificate_age_days{{{AUTH}, {NODE}}}", "node {{node_id}}")], unit="d"),
    panel("Enrollments by result", "timeseries",
          [(f"sum by (result) (increase(tpm_authority_enrollments_total{{{AUTH}}}[{RI}]))",
            "{{result}}")]),
    panel("Certificate rotations by result", "timeseries",
          [(f"sum by (result) (increase(tpm_certificate_rotations_total{{{SC}}}[{RI}]))",
            "{{result}}")]),
    panel("Revocations", "timeseries",
          [(f"increase(tpm_authority_revocations_total{{{AUTH}}}[{RI}])", "revocations")]),
    panel("CRL number: authority and sidecars", "timeseries",
          [(f"max(tpm_crl_number{{{AUTH}}})", "authority"),
           (f"tpm_crl_number{{{SC}}}", "{{instance}}")],
          description="A sidecar below the authority has not installed the latest CRL."),
    panel("Time to CRL nextUpdate (sidecars)", "timeseries",
          [(f"tpm_crl_next_update_timestamp_seconds{{{SC}}} - time()", "{{instance}}")],
          unit="s", description="Past nextUpdate a sidecar refuses every peer."),
    panel("CRL age (sidecars)", "timeseries",
          [(f"tpm_crl_age_seconds{{{SC}}}", "{{instance}}")], unit="s"),
    panel("Time since the last successful CRL poll", "timeseries",
          [(f"time() - tpm_crl_last_fetch_timestamp_seconds{{{SC}}}", "{{instance}}")], unit="s"),
    panel("CRL update failures", "timeseries",
          [(f"increase(tpm_crl_update_failures_total{{{SC}}}[{RI}])", "{{instance}}")]),
]

SECURITY_EVENTS = [
    panel("Signature failures (1 h)", "stat",
          f"sum(increase(tpm_signature_verification_failures_total{{{SC}}}[1h]))",
          thresholds=[(0, "green"), (1, "orange")]),
    panel("Handshake failures (1 h)", "stat",
          f"sum(increase(tpm_tls_handshake_failures_total{{{SC}}}[1h]))",
          thresholds=[(0, "green"), (1, "orange")]),
    panel("Policy denials (1 h)", "stat",
          f'sum(increase(tpm_policy_evaluations_total{{{SC}, outcome="deny", shadow="false"}}[1h]))'),
    panel("Policy plugin errors (1 h)", "stat",
          f'sum(increase(tpm_policy_evaluations_total{{{SC}, outcome="error"}}[1h]))',
          thresholds=[(0, "green"), (1, "red")]),
    panel("Revocations (1 h)", "stat",
          f"sum(increase(tpm_authority_revocations_total{{{AUTH}}}[1h]))"),
    panel("Failed policy reloads (1 h)", "stat",
          f'sum(increase(tpm_policy_reloads_total{{{SC}, result="failed"}}[1h]))',
          thresholds=[(0, "green"), (1, "orange")]),
    panel("Signature failures by instance and reason", "timeseries",
          [(f"sum by (instance, reason) (rate(tpm_signature_verification_failures_total{{{SC}}}[{RI}]))",
            "{{instance}} {{reason}}")], unit="ops"),
    panel("TLS handshake failures by instance and reason", "timeseries",
          [(f"sum by (instance, reason) (rate(tpm_tls_handshake_failures_total{{{SC}}}[{RI}]))",
            "{{instance}} {{reason}}")], unit="ops"),
    panel("Refused requests by outcome", "timeseries",
          [(f'sum by (direction, outcome) (rate(tpm_requests_total{{{SC}, outcome=~"refused_.*"}}[{RI}]))',
            "{{direction}} {{outcome}}")], unit="reqps"),
    panel("Policy denials by plugin", "timeseries",
          [(f'sum by (plugin, shadow) (rate(tpm_policy_evaluations_total{{{SC}, outcome="deny"}}[{RI}]))',
            "{{plugin}} (shadow {{shadow}})")], unit="ops"),
    panel("Policy plugin errors (trap, deadline, memory)", "timeseries",
          [(f'sum by (instance, plugin) (rate(tpm_policy_evaluations_total{{{SC}, outcome="error"}}[{RI}]))',
            "{{instance}} {{plugin}}")], unit="ops"),
    panel("Peer certificates refused on egress", "timeseries",
          [(f'sum by (instance) (rate(tpm_upstream_errors_total{{{SC}, kind="peer_certificate"}}[{RI}]))',
            "{{instance}}")], unit="ops"),
    panel("Enrollments refused", "timeseries",
          [(f'sum by (result) (increase(tpm_authority_enrollments_total{{{AUTH}, result=~"refused|error"}}[{RI}]))',
            "{{result}}")]),
    panel("Registered nodes by status", "table",
          [(f"tpm_nodes{{{AUTH}}}", "")]),
    panel("Requests with no one reading (400) by reason", "timeseries",
          [(f'sum by (instance, reason) (rate(tpm_bad_requests_total{{{SC}}}[{RI}]))',
            "{{instance}} {{reason}}")], unit="ops"),
    panel("Identity headers from outside removed", "timeseries",
          [(f'sum by (instance) (rate(tpm_identity_headers_removed_total{{{SC}}}[{RI}]))',
            "{{instance}}")], unit="ops"),
    panel("Certificates of the selected nodes expiring within 7 days", "table",
          [(f"tpm_certificate_expiry_seconds{{{NODE}}} < 7 * 86400", "")], unit="s",
          width=24),
]

DASHBOARDS = [
    ("trust-verification.json", "tpm-trust-verification", "Trust proxy: Trust and Verification",
     TRUST_VERIFICATION),
    ("certificate-lifecycle.json", "tpm-certificate-lifecycle",
     "Trust proxy: Certificate Lifecycle", CERTIFICATE_LIFECYCLE),
    ("security-events.json", "tpm-security-events", "Trust proxy: Security Events",
     SECURITY_EVENTS),
]


def field_config(p):
    defaults = {"unit": p["unit"]}
    if p["min"] is not None:
        defaults["min"] = p["min"]
    if p["max"] is not None:
        defaults["max"] = p["max"]
    if p["thresholds"]:
        steps = [{"color": p["thresholds"][0][1], "value": None}]
        steps += [{"color": colour, "value": value} for value, colour in p["thresholds"][1:]]
        defaults["thresholds"] = {"mode": "absolute", "steps": steps}
        if p["type"] == "timeseries":
            defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
        else:
            defaults["color"] = {"mode": "thresholds"}
    return {"defaults": defaults, "overrides": []}


def options(kind):
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if kind == "stat":
        return {"colorMode": "value", "graphMode": "area", "justifyMode": "auto",
                "orientation": "auto", "reduceOptions": reduce, "textMode": "auto"}
    if kind == "gauge":
        return {"orientation": "auto", "reduceOptions": reduce, "showThresholdLabels": False,
                "showThresholdMarkers": True}
    if kind == "table":
        return {"cellHeight": "sm", "showHeader": True}
    return {"legend": {"calcs": [], "displayMode": "list", "placement": "bottom",
                       "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"}}


def build_panel(p, panel_id, x, y):
    table = p["type"] == "table"
    targets = []
    for i, (expr, legend) in enumerate(p["queries"]):
        target = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend,
                  "refId": chr(ord("A") + i)}
        if table:
            target.update({"format": "table", "instant": True, "range": False})
        targets.append(target)
    out = {
        "id": panel_id,
        "type": p["type"],
        "title": p["title"],
        "datasource": DATASOURCE,
        "gridPos": {"h": p["height"], "w": p["width"], "x": x, "y": y},
        "fieldConfig": field_config(p),
        "options": options(p["type"]),
        "targets": targets,
    }
    if p["description"]:
        out["description"] = p["description"]
    if table:
        out["transformations"] = [{"id": "organize", "options": {
            "excludeByName": {"Time": True, "__name__": True}, "renameByName": {}}}]
    return out


def layout(panels):
    """Places panels left to right in rows 24 units wide."""
    out, x, y, row_height = [], 0, 0, 0
    for panel_id, p in enumerate(panels, start=1):
        if x + p["width"] > 24:
            x, y, row_height = 0, y + row_height, 0
        out.append(build_panel(p, panel_id, x, y))
        x += p["width"]
        row_height = max(row_height, p["height"])
    return out


def variable(v):
    return {
        "name": v["name"],
        "label": v["label"],
        "type": "query",
        "datasource": DATASOURCE,
        "definition": v["query"],
        "query": v["query"],
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "regex": "",
        "sort": 3,
        "hide": 0,
        "skipUrlSync": False,
    }


def dashboard(uid, title, panels):
    return {
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }]},
        "description": "Generated by monitoring/grafana/generate.py; edit that, not this file.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": layout(panels),
        "refresh": "10s",
        "schemaVersion": 39,
        "tags": ["trust-proxy"],
        "templating": {"list": [variable(v) for v in TEMPLATING]},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


def render(panels, uid, title):
    return json.dumps(dashboard(uid, title, panels), indent=2) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed files instead of writing them")
    args = parser.parse_args()
    stale = []
    for filename, uid, title, panels in DASHBOARDS:
        path = OUT_DIR / filename
        text = render(panels, uid, title)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
            else:
                print(f"ok      {path.name}: {len(panels)} panels")
        else:
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote   {path.name}: {len(panels)} panels")
    if stale:
        for path in stale:
            print(f"STALE   {path}: run python3 monitoring/grafana/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
