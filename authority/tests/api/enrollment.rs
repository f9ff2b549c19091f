//! Enrollment: ids, idempotence, conflicts, and 100 nodes at once.

use std::collections::BTreeSet;

use serde_json::json;

use crate::server::{Server, key_and_csr, signer_for};

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

/// Posts a renewal for `csr`, signed by `signer` as `from`, with `tamper` applied to the
/// body after signing.
async fn renew(
    s: &Server,
    signer: &trust_core::MessageSigner,
    csr: &str,
    tamper: bool,
) -> (u16, serde_json::Value) {
    let body = serde_json::to_vec(&json!({"csr": csr})).unwrap();
    let host = s.url.trim_start_matches("http://").to_owned();
    let parts = trust_core::RequestParts::new("POST", &host, "/trust/renew", &body);
    let headers = signer.sign(&parts, crate::server::now()).unwrap();
    let mut sent = body.clone();
    if tamper {
        // Still valid JSON, but not the bytes that were signed.
        sent.push(b' ');
    }
    let mut req = s.client.post(format!("{}/trust/renew", s.url)).body(sent);
    for (name, value) in headers.pairs() {
        req = req.header(name, value);
    }
    let r = req.send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_renews_for_a_new_key_only_when_signed_with_its_current_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (_, a, signer_a) = s.enrolled_node().await;
    let (key_m, m, signer_m) = s.enrolled_node().await;
    let (_, new_csr) = key_and_csr().await;

    // Unsigned, tampered after signing, or signed by another node: refused.
    let unsigned = s
        .client
        .post(format!("{}/trust/renew", s.url))
        .json(&json!({"csr": new_csr}))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    assert_eq!(renew(&s, &signer_a, &new_csr, true).await.0, 401);
    let (code, _) = renew(&s, &signer_m, &new_csr, false).await;
    assert_eq!(code, 200, "node 2 may renew itself");
    let (_, newer_csr) = key_and_csr().await;
    // Node 2's signature claiming to be node 1 fails: X-From-Node must match the signer.
    let mut req = s.client.post(format!("{}/trust/renew", s.url));
    let body = serde_json::to_vec(&json!({"csr": newer_csr})).unwrap();
    let host = s.url.trim_start_matches("http://").to_owned();
    let mut h = signer_m
        .sign(
            &trust_core::RequestParts::new("POST", &host, "/trust/renew", &body),
            crate::server::now(),
        )
        .unwrap();
    h.from_node = "1".into();
    for (name, value) in h.pairs() {
        req = req.header(name, value);
    }
    assert_eq!(req.body(body).send().await.unwrap().status(), 401);

    // The real node 1 renews: same id, new serial, new certificate current.
    let (code, renewed) = renew(&s, &signer_a, &newer_csr, false).await;
    assert_eq!(code, 200, "{renewed}");
    assert_eq!(renewed["node_id"], "1");
    assert_ne!(renewed["serial"], a["serial"]);
    assert_eq!(
        s.get("/trust/certificate/1").await.1["certificate"],
        renewed["certificate"]
    );
    assert_eq!(s.status().await["verified_nodes"], 2);

    // A revoked node cannot renew.
    assert_eq!(s.post("/trust/revoke/2", None).await.0, 200);
    let (_, late_csr) = key_and_csr().await;
    let signer_m2 = signer_for(&key_m, 2, m["certificate"].as_str().unwrap());
    let (code, body) = renew(&s, &signer_m2, &late_csr, false).await;
    assert_eq!(code, 403, "{body}");

    // Revoking node 1 revokes the certificate it held before renewing too: a stolen copy
    // of the old one must not outlive the revocation.
    assert_eq!(s.post("/trust/revoke/1", None).await.0, 200);
    let pem = s.text("/trust/crl").await;
    let root = trust_core::RootCertificate::from_pem(
        &std::fs::read_to_string(dir.path().join("ca-cert.pem")).unwrap(),
    )
    .unwrap();
    let crl = trust_core::RevocationList::from_pem(&pem, &root, crate::server::now()).unwrap();
    for serial in [&a["serial"], &renewed["serial"], &m["serial"]] {
        let serial = trust_core::Serial::from_hex(serial.as_str().unwrap()).unwrap();
        assert!(crl.is_revoked(&serial), "{serial} is not in the CRL");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_asked_again_with_the_replaced_key_gets_the_recorded_certificate_and_nothing_more()
 {
    // The node crashed after the authority recorded its renewal and before saving the
    // answer: it still holds only the replaced key, and asks again for the same new key.
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (_, a, signer_a) = s.enrolled_node().await;
    let (_, _, signer_m) = s.enrolled_node().await;
    let (_, new_csr) = key_and_csr().await;
    let (code, renewed) = renew(&s, &signer_a, &new_csr, false).await;
    assert_eq!(code, 200, "{renewed}");
    let (code, again) = renew(&s, &signer_a, &new_csr, false).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(
        again["certificate"], renewed["certificate"],
        "nothing new issued"
    );
    assert_eq!(again["existing"], true);
    assert_eq!(
        s.get("/trust/certificate/1").await.1["certificate"],
        renewed["certificate"]
    );
    // Only for the key of the node's current certificate: a fresh key signed with the
    // replaced one is refused, saying what the request lacks.
    let (_, other_csr) = key_and_csr().await;
    let (code, refused) = renew(&s, &signer_a, &other_csr, false).await;
    assert_eq!(code, 401, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("node's current key"),
        "{refused}"
    );
    // Another node presenting node 1's renewal CSR is answered as node 1's holder would
    // be only if it names node 1; naming itself it is a conflict, never a certificate.
    let (code, taken) = renew(&s, &signer_m, &new_csr, false).await;
    assert_eq!(code, 409, "{taken}");
    // A revoked node gets nothing, not even its recorded certificate.
    assert_eq!(s.post("/trust/revoke/1", None).await.0, 200);
    let (code, revoked) = renew(&s, &signer_a, &new_csr, false).await;
    assert_ne!(code, 200, "{revoked}");
    assert_ne!(a["serial"], renewed["serial"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_with_a_duplicated_signature_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (key, csr) = key_and_csr().await;
    let (_, enrolled) = s.enroll(&csr, None).await;
    let signer = signer_for(&key, 1, enrolled["certificate"].as_str().unwrap());
    let (_, new_csr) = key_and_csr().await;
    let body = serde_json::to_vec(&json!({"csr": new_csr})).unwrap();
    let host = s.url.trim_start_matches("http://").to_owned();
    let headers = signer
        .sign(
            &trust_core::RequestParts::new("POST", &host, "/trust/renew", &body),
            crate::server::now(),
        )
        .unwrap();
    let mut req = s.client.post(format!("{}/trust/renew", s.url));
    for (name, value) in headers.pairs() {
        req = req.header(name, value);
    }
    // A second X-Nonce: which one the signature covers would be ambiguous.
    let r = req
        .header("x-nonce", "AAAAAAAAAAAAAAAAAAAAAA")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (_, current) = s.get("/trust/certificate/1").await;
    assert_eq!(
        current["certificate"], enrolled["certificate"],
        "nothing was renewed"
    );
    s.stop().await;
}
