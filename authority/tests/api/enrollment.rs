//! Enrollment: ids, idempotence, conflicts, and 100 nodes at once.

use std::collections::BTreeSet;

use serde_json::json;

use crate::server::{Server, key_and_csr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_nodes_enrolling_at_once_get_distinct_ids_and_all_verify() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let mut keygen = Vec::new();
    for _ in 0..100 {
        keygen.push(tokio::spawn(key_and_csr()));
    }
    let mut enrolls = Vec::new();
    for k in keygen {
        let (_, csr) = k.await.unwrap();
        let client = s.client.clone();
        let url = format!("{}/trust/enroll", s.url);
        enrolls.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&json!({"csr": csr, "token": crate::server::TOKEN}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()
        }));
    }
    let mut ids = BTreeSet::new();
    for e in enrolls {
        let body = e.await.unwrap();
        ids.insert(body["node_id"].as_str().unwrap().parse::<u32>().unwrap());
    }
    assert_eq!(ids, (1..=100).collect::<BTreeSet<_>>());
    let status = s.status().await;
    assert_eq!(status["total_nodes"], 100);
    assert_eq!(status["verified_nodes"], 100);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_keeps_its_identity_and_a_taken_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (_, csr_a) = key_and_csr().await;
    let (_, csr_b) = key_and_csr().await;
    let (code, first) = s.enroll(&csr_a, Some(json!(7))).await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(
        (first["node_id"].as_str(), first["existing"].as_bool()),
        (Some("7"), Some(false))
    );

    // A restarted node re-enrolls with the same key: same id, same certificate.
    let (code, again) = s.enroll(&csr_a, None).await;
    assert_eq!(code, 200);
    assert_eq!(again["node_id"], "7");
    assert_eq!(again["existing"], true);
    assert_eq!(again["serial"], first["serial"]);

    // Another key asking for id 7.
    let (code, body) = s.enroll(&csr_b, Some(json!("7"))).await;
    assert_eq!(code, 409, "{body}");
    // The first key asking to become node 8.
    let (code, body) = s.enroll(&csr_a, Some(json!(8))).await;
    assert_eq!(code, 409, "{body}");
    // A new key without a request gets the smallest free id.
    let (code, body) = s.enroll(&csr_b, None).await;
    assert_eq!((code, body["node_id"].as_str()), (200, Some("1")));

    // A revoked identity cannot come back with its old key.
    assert_eq!(s.post("/trust/revoke/7", None).await.0, 200);
    let (code, body) = s.enroll(&csr_a, None).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(s.status().await["total_nodes"], 2);
    s.stop().await;
}
