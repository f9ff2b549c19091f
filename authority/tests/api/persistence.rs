//! What the authority acknowledged is there after a restart; a damaged state refuses.

use authority::{Authority, AuthorityConfig, Secret};

use crate::server::{Server, TOKEN, key_and_csr, now};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_nodes_revocations_and_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let ca = s.get("/trust/ca-certificate").await.1;
    for _ in 0..3 {
        let (_, csr) = key_and_csr().await;
        assert_eq!(s.enroll(&csr, None).await.0, 200);
    }
    assert_eq!(s.post("/trust/revoke/3", None).await.0, 200);
    let crl_before = s.get("/metrics/summary").await.1["crl_number"]
        .as_u64()
        .unwrap();
    s.stop().await;

    let s = Server::start(dir.path()).await;
    assert_eq!(
        s.get("/trust/ca-certificate").await.1,
        ca,
        "the root is reused"
    );
    let status = s.status().await;
    assert_eq!(status["total_nodes"], 3, "{status}");
    assert_eq!(status["verified_nodes"], 2, "{status}");
    assert_eq!(status["revoked_certificates"], 1, "{status}");
    assert_eq!(s.post("/trust/verify/3", None).await.1["reason"], "revoked");
    assert!(
        s.get("/metrics/summary").await.1["crl_number"]
            .as_u64()
            .unwrap()
            > crl_before,
        "CRL numbers never go back"
    );
    s.stop().await;
}

#[test]
fn a_corrupt_registry_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuthorityConfig::new(dir.path().to_owned(), Secret::new(TOKEN));
    Authority::open(config.clone(), now()).unwrap();
    std::fs::write(
        dir.path().join("nodes.jsonl"),
        b"{\"node_id\":1}\ngarbage\n",
    )
    .unwrap();
    let err = Authority::open(config, now()).err().unwrap();
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[test]
fn a_short_bootstrap_token_is_a_configuration_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuthorityConfig::new(dir.path().to_owned(), Secret::new("short"));
    let err = Authority::open(config, now()).err().unwrap();
    assert!(err.to_string().contains("bootstrap_token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_certificate_ran_out_is_listed_as_expired_and_not_counted_verified() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuthorityConfig::new(dir.path().to_owned(), Secret::new(TOKEN));
    let (authority, _) = Authority::open(config, now()).unwrap();
    let (_, csr) = key_and_csr().await;
    let request: authority::service::EnrollRequest =
        serde_json::from_value(serde_json::json!({"csr": csr, "token": TOKEN})).unwrap();
    authority.enroll(&request, now()).unwrap();
    assert_eq!(authority.nodes(now())[0].status, "verified");
    // Two years on, with a CRL published then (the authority re-publishes as time passes):
    // the one-year certificate has run out.
    let later = trust_core::unix_time(now().as_secs() + 2 * 365 * 86_400);
    assert!(authority.refresh_crl_if_due(later).unwrap());
    let nodes = authority.nodes(later);
    assert_eq!(nodes[0].status, "expired", "{nodes:?}");
    let status = authority.status(later);
    assert_eq!((status.total_nodes, status.verified_nodes), (1, 0));
}
