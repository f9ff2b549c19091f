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
