//! The Kubernetes manifests without a cluster: `tests/python/check_k8s.py` checks their
//! structure (native sidecars, non-root, probes, limits, Services, the token from a Secret)
//! and runs every sidecar config in them through `trust-proxy run --check`.

use crate::support::{python, repo_root};

#[test]
fn the_kubernetes_manifests_hold_together_and_their_sidecar_configs_validate() {
    let out = python()
        .arg(repo_root().join("tests/python/check_k8s.py"))
        .arg(repo_root())
        .arg(env!("CARGO_BIN_EXE_trust-proxy"))
        .arg(policy_host::BUILT_PLUGIN_DIR)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
