"""Checks the Kubernetes manifests in deploy/k8s without a cluster.

Structure: every workload runs as non-root with a RuntimeDefault seccomp profile; every
container drops all capabilities, forbids privilege escalation, has a read-only root file
system, resource limits and probes; app pods carry the trust proxy as a *native* sidecar
(an init container with restartPolicy: Always and a startup probe) so the app starts after
its sidecar serves; the authority is a StatefulSet with a volume claim; every workload has
a Service; the bootstrap token comes from a Secret; kustomization lists every file.
Content: every sidecar.toml in a ConfigMap is validated by the real binary
(`trust-proxy run --check`), and every policy set it names exists in policies/.

Usage: python3 check_k8s.py <repo-root> <trust-proxy binary> <plugin dir>
(exit 1 with the problems). The container paths of the policy set and plugins are
overridden, as an operator would, with TRUST_PROXY_POLICY_SET / _PLUGIN_DIR.
"""

import pathlib
import subprocess
import sys
import tempfile

import yaml

import os

root, binary, plugin_dir = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
k8s = root / "deploy" / "k8s"
problems = []
docs = []
for path in sorted(k8s.glob("*.yaml")):
    if path.name == "kustomization.yaml":
        continue
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            docs.append((path.name, doc))

kinds = {}
for name, doc in docs:
    kinds.setdefault(doc["kind"], []).append(doc)

kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
listed = set(kustomization["resources"])
for path in k8s.glob("*.yaml"):
    if path.name != "kustomization.yaml" and path.name not in listed:
        problems.append(f"kustomization.yaml does not list {path.name}")

services = {d["metadata"]["name"] for d in kinds.get("Service", [])}
workloads = kinds.get("Deployment", []) + kinds.get("StatefulSet", [])
if not any(w["kind"] == "StatefulSet" and w["spec"].get("volumeClaimTemplates") for w in workloads):
    problems.append("the authority must be a StatefulSet with a volume claim")
for w in workloads:
    name = w["metadata"]["name"]
    pod = w["spec"]["template"]["spec"]
    if name not in services:
        problems.append(f"{name}: no Service")
    sc = pod.get("securityContext", {})
    if not sc.get("runAsNonRoot") or sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: pod must run as non-root with seccomp RuntimeDefault")
    containers = pod.get("containers", []) + pod.get("initContainers", [])
    for c in containers:
        where = f"{name}/{c['name']}"
        csc = c.get("securityContext", {})
        if csc.get("allowPrivilegeEscalation") is not False or csc.get("capabilities", {}).get("drop") != ["ALL"] or not csc.get("readOnlyRootFilesystem"):
            problems.append(f"{where}: must drop ALL capabilities, forbid escalation, read-only root")
        if "limits" not in c.get("resources", {}):
            problems.append(f"{where}: no resource limits")
        if "readinessProbe" not in c:
            problems.append(f"{where}: no readiness probe")
    sidecars = [c for c in pod.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    has_proxy = any("run" in c.get("args", []) for c in containers)
    if not has_proxy:
        problems.append(f"{name}: no trust-proxy sidecar")
    if w["kind"] == "Deployment":
        if not sidecars or "startupProbe" not in sidecars[0]:
            problems.append(f"{name}: the trust proxy must be a native sidecar with a startup probe")
        for c in pod["containers"]:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if env.get("HTTP_PROXY") != "http://127.0.0.1:8080" or not env.get("LISTEN", "").startswith("127.0.0.1:"):
                problems.append(f"{name}/{c['name']}: the app must listen on loopback and use the sidecar as HTTP_PROXY")
    secrets = [v for v in pod.get("volumes", []) if "secret" in v]
    if not secrets:
        problems.append(f"{name}: the bootstrap token must come from a Secret")

with tempfile.TemporaryDirectory() as tmp:
    for cm in kinds.get("ConfigMap", []):
        text = cm.get("data", {}).get("sidecar.toml")
        if text is None:
            continue
        file = pathlib.Path(tmp) / f"{cm['metadata']['name']}.toml"
        file.write_text(text)
        sets = [l.split("=", 1)[1].strip().strip('"').rsplit("/", 1)[1] for l in text.splitlines() if l.strip().startswith("set = ")]
        env = dict(os.environ)
        for k in [k for k in env if k.startswith("TRUST_PROXY_")]:
            del env[k]
        if sets:
            env["TRUST_PROXY_POLICY_SET"] = str(root / "policies" / sets[0])
            env["TRUST_PROXY_POLICY_PLUGIN_DIR"] = plugin_dir
        out = subprocess.run([binary, "run", "--check", "--config", str(file)], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            problems.append(f"ConfigMap {cm['metadata']['name']}: {out.stderr.strip()}")

if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"{len(docs)} manifests, {len(workloads)} workloads: ok")
