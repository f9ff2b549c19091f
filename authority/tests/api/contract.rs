//! Status codes and JSON shapes as in the design's API table.

use serde_json::Value;

use crate::server::{Server, key_and_csr};

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_with_the_contracted_shape() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;

    let status = s.status().await;
    assert_eq!(
        keys(&status),
        [
            "by_role",
            "ca_certificate",
            "live_nodes",
            "live_window_seconds",
            "node_id",
            "revoked_certificates",
            "timestamp",
            "total_nodes",
            "verified_nodes"
        ]
    );
    assert_eq!(status["total_nodes"], 0);
    assert_eq!(status["by_role"], serde_json::json!({}));
    let (code, ca) = s.get("/trust/ca-certificate").await;
    assert_eq!(code, 200);
    assert_eq!(keys(&ca), ["certificate"]);
    assert!(
        ca["certificate"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----\n")
    );
    assert_eq!(ca["certificate"], status["ca_certificate"]);

    let (code, body) = s.get("/trust/certificate/1").await;
    assert_eq!((code, keys(&body)), (404, vec!["error".to_string()]));
    let (_, csr) = key_and_csr().await;
    let (code, enrolled) = s.enroll(&csr, None).await;
    assert_eq!(code, 200, "{enrolled}");
    assert_eq!(
        keys(&enrolled),
        [
            "ca_certificate",
            "certificate",
            "existing",
            "node_id",
            "not_after",
            "serial",
            "spiffe_id"
        ]
    );
    assert_eq!(enrolled["node_id"], "1");
    assert_eq!(enrolled["spiffe_id"], "spiffe://sovereign.local/node/1");
    let (code, cert) = s.get("/trust/certificate/1").await;
    assert_eq!(code, 200);
    assert_eq!(cert["certificate"], enrolled["certificate"]);

    let (code, verify) = s.post("/trust/verify/1", None).await;
    assert_eq!(code, 200);
    assert_eq!(
        verify,
        serde_json::json!({"node_id": "1", "verified": true})
    );
    let (code, revoke) = s.post("/trust/revoke/1", None).await;
    assert_eq!(code, 200);
    assert_eq!(
        keys(&revoke),
        ["already", "crl_number", "node_id", "revoked"]
    );
    assert_eq!(revoke["revoked"], true);

    let (code, nodes) = s.get("/trust/nodes").await;
    assert_eq!(code, 200);
    let row = &nodes["nodes"][0];
    assert_eq!(
        keys(row),
        [
            "enrolled_at",
            "host",
            "issued_at",
            "last_seen",
            "live",
            "names",
            "node_id",
            "not_after",
            "role",
            "serial",
            "status"
        ]
    );
    assert_eq!(
        (row["node_id"].as_str(), row["status"].as_str()),
        (Some("1"), Some("revoked"))
    );
    assert!(
        row["last_seen"].as_u64().is_some(),
        "enrolling counts as being seen"
    );

    for path in ["/healthz", "/readyz"] {
        assert_eq!(s.get(path).await.0, 200, "{path}");
    }
    let (code, summary) = s.get("/metrics/summary").await;
    assert_eq!(code, 200);
    for k in [
        "nodes_verified",
        "crl_size",
        "cache_hits",
        "cache_misses",
        "crl_number",
    ] {
        assert!(summary.get(k).is_some(), "summary lacks {k}: {summary}");
    }
    let metrics = s.text("/metrics").await;
    for name in [
        "sovereignmap_verified_nodes_count 0",
        "tpm_authority_enrollments_total{result=\"issued\"} 1",
        "tpm_authority_revocations_total 1",
        "tpm_crl_size 1",
        "tpm_nodes{status=\"revoked\"} 1",
        "tpm_certificate_expiry_seconds{node_id=\"1\"}",
        "tpm_trust_verification_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_wrong_methods_405_and_errors_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    for path in [
        "/",
        "/trust",
        "/trust/node",
        "/trust/status/extra",
        "/trust/certificate/1/x",
    ] {
        let (code, body) = s.get(path).await;
        assert_eq!(code, 404, "{path}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    for (path, post) in [
        ("/trust/status", true),
        ("/trust/enroll", false),
        ("/trust/revoke/1", false),
        ("/trust/verify/1", false),
        ("/trust/crl", true),
    ] {
        let code = if post {
            s.post(path, None).await.0
        } else {
            s.get(path).await.0
        };
        assert_eq!(code, 405, "{path}");
    }
    s.stop().await;
}

#[tokio::test]
async fn the_enrollment_listener_serves_what_a_new_node_needs_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_scoped(dir.path(), authority::Scope::Enrollment).await;
    let (csr_key, csr) = key_and_csr().await;
    drop(csr_key);
    let (code, body) = server.enroll(&csr, Some(serde_json::json!(4))).await;
    assert_eq!(code, 200, "{body}");
    for path in [
        "/trust/ca-certificate",
        "/trust/crl",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        let r = server
            .client
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    // Revocation, verification and the registry stay behind the authority's sidecar,
    // however the request is dressed up.
    for (method, path) in [
        ("POST", "/trust/revoke/4"),
        ("POST", "/trust/verify/4"),
        ("GET", "/trust/status"),
        ("GET", "/trust/certificate/4"),
        ("GET", "/trust/nodes"),
        ("POST", "/trust//revoke/4"),
        ("POST", "/trust/enroll/../revoke/4"),
        ("GET", "/metrics/summary"),
    ] {
        let r = server
            .client
            .request(method.parse().unwrap(), format!("{}{path}", server.url))
            .header("x-verified-node-id", "4")
            .header("x-verified-roles", "admin")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{method} {path}");
    }
    server.stop().await;
    // The node is still enrolled and not revoked.
    let server = Server::start(dir.path()).await;
    let status = server.status().await;
    assert_eq!(status["verified_nodes"], 1, "{status}");
    assert_eq!(status["revoked_certificates"], 0, "{status}");
    server.stop().await;
}
