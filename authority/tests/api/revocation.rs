//! Revocation: counts, CRL number, the serial in the CRL as openssl prints it, verify says
//! why, idempotence, and the long poll that wakes sidecars.

use std::process::Command;

use serde_json::Value;

use crate::server::{Server, key_and_csr};

async fn enroll_n(s: &Server, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (_, csr) = key_and_csr().await;
        let (code, body) = s.enroll(&csr, None).await;
        assert_eq!(code, 200, "{body}");
        out.push(body);
    }
    out
}

async fn crl(s: &Server, etag: Option<&str>, wait: u64) -> reqwest::Response {
    let mut req = s.client.get(format!("{}/trust/crl?wait={wait}", s.url));
    if let Some(etag) = etag {
        req = req.header("If-None-Match", etag);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_updates_counts_the_crl_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let nodes = enroll_n(&s, 3).await;
    let before = s.status().await;
    assert_eq!(
        (
            before["verified_nodes"].as_u64(),
            before["revoked_certificates"].as_u64()
        ),
        (Some(3), Some(0))
    );
    let first = crl(&s, None, 0).await;
    let etag_before = first.headers()["etag"].to_str().unwrap().to_owned();

    let (code, revoked) = s.post("/trust/revoke/2", None).await;
    assert_eq!(code, 200, "{revoked}");
    assert_eq!(revoked["already"], false);
    let after = s.status().await;
    assert_eq!(
        (
            after["verified_nodes"].as_u64(),
            after["revoked_certificates"].as_u64()
        ),
        (Some(2), Some(1))
    );
    let (_, verify) = s.post("/trust/verify/2", None).await;
    assert_eq!(
        verify,
        serde_json::json!({"node_id": "2", "verified": false, "reason": "revoked"})
    );

    let current = crl(&s, None, 0).await;
    let etag_after = current.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(etag_before, etag_after);
    let number = |e: &str| {
        e.trim_matches('"')
            .trim_start_matches("crl-")
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(number(&etag_after), number(&etag_before) + 1);
    assert_eq!(revoked["crl_number"].as_u64(), Some(number(&etag_after)));

    // openssl, an independent reader, sees the revoked serial and checks the signature.
    let pem = current.text().await.unwrap();
    let file = dir.path().join("served-crl.pem");
    std::fs::write(&file, pem).unwrap();
    let ca = dir.path().join("ca-cert.pem");
    let out = Command::new("openssl")
        .args(["crl", "-noout", "-text", "-CAfile"])
        .arg(&ca)
        .arg("-in")
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("verify OK"), "{text}");
    let serial = nodes[1]["serial"].as_str().unwrap().to_uppercase();
    assert!(text.contains(&serial), "serial {serial} not in:\n{text}");
    assert!(!text.contains(&nodes[0]["serial"].as_str().unwrap().to_uppercase()));

    // Again: idempotent, no new revocation counted, and no new CRL published (a new
    // number would wake every sidecar's long poll for nothing).
    let etag_after = crl(&s, None, 0).await.headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let (code, again) = s.post("/trust/revoke/2", None).await;
    assert_eq!((code, again["already"].as_bool()), (200, Some(true)));
    assert_eq!(s.status().await["revoked_certificates"], 1);
    assert_eq!(again["crl_number"], revoked["crl_number"], "{again}");
    assert_eq!(crl(&s, Some(&etag_after), 0).await.status(), 304);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_on_the_next_crl_and_times_out_with_304() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    enroll_n(&s, 1).await;
    let etag = crl(&s, None, 0).await.headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();

    // Nothing changes: 304 after the (short) wait, and at once without one.
    assert_eq!(crl(&s, Some(&etag), 1).await.status(), 304);
    assert_eq!(crl(&s, Some(&etag), 0).await.status(), 304);

    // A sidecar waits; a revocation wakes it with the new CRL.
    let waiter = {
        let client = s.client.clone();
        let url = format!("{}/trust/crl?wait=60", s.url);
        let etag = etag.clone();
        tokio::spawn(async move {
            let r = client
                .get(url)
                .header("If-None-Match", etag)
                .header("Accept", "application/pkix-crl")
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.headers()["etag"].to_str().unwrap().to_owned(),
                r.bytes().await.unwrap(),
            )
        })
    };
    let (code, _) = s.post("/trust/revoke/1", None).await;
    assert_eq!(code, 200);
    let (code, new_etag, der) = waiter.await.unwrap();
    assert_eq!(code, 200);
    assert_ne!(new_etag, etag);
    assert_eq!(der[0], 0x30, "DER was asked for");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revocations_all_succeed_and_the_last_crl_lists_every_one() {
    // Each revocation publishes a CRL; two at once must not install them out of order
    // (the older one would be refused as a rollback and its client told 500).
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let n = 12;
    enroll_n(&s, n).await;
    let first = crl(&s, None, 0).await;
    let number = |r: &reqwest::Response| {
        r.headers()["etag"]
            .to_str()
            .unwrap()
            .trim_matches('"')
            .trim_start_matches("crl-")
            .parse::<u64>()
            .unwrap()
    };
    let start = number(&first);
    let mut tasks = tokio::task::JoinSet::new();
    for id in 1..=n {
        let (client, url) = (s.client.clone(), s.url.clone());
        tasks.spawn(async move {
            let r = client
                .post(format!("{url}/trust/revoke/{id}"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (code, body) = done.unwrap();
        assert_eq!(code, 200, "a concurrent revocation failed: {body}");
    }
    let last = crl(&s, None, 0).await;
    assert_eq!(number(&last), start + n as u64, "one CRL per revocation");
    let root = trust_core::RootCertificate::from_pem(
        &std::fs::read_to_string(dir.path().join("ca-cert.pem")).unwrap(),
    )
    .unwrap();
    let list = trust_core::RevocationList::from_pem(
        &last.text().await.unwrap(),
        &root,
        crate::server::now(),
    )
    .unwrap();
    assert_eq!(list.len(), n, "the last CRL lists every revoked node");
    let status = s.status().await;
    assert_eq!(status["revoked_certificates"].as_u64(), Some(n as u64));
    assert_eq!(status["verified_nodes"].as_u64(), Some(0));
    s.stop().await;
}
