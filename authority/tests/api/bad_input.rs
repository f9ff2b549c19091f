//! Every bad request gets a clear 4xx and changes nothing.

use serde_json::{Value, json};
use trust_core::NodeKey;

use crate::server::{Server, TOKEN, key_and_csr};

/// Posts a bad enrollment and checks the refusal: the status, and a message that names the
/// problem without telling the caller anything of the inside (the bootstrap token, the
/// state directory, OS or library error text, source paths, a panic, key material).
async fn assert_refused(s: &Server, body: Value, want: u16, what: &str) {
    let (code, answer) = s.post("/trust/enroll", Some(body)).await;
    assert_eq!(code, want, "{what}: {answer}");
    let message = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {answer}"));
    assert!(
        !message.is_empty() && message.len() <= 300,
        "{what}: {message:?}"
    );
    for inside in [
        TOKEN, "/tmp", "os error", "panicked", "src/", "BEGIN", "Error {",
    ] {
        assert!(
            !message.contains(inside),
            "{what}: the refusal {message:?} tells the caller {inside:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_enrollments_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (key, csr) = key_and_csr().await;

    let raw = s
        .client
        .post(format!("{}/trust/enroll", s.url))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    assert_refused(
        &s,
        json!({"csr": csr, "token": "wrong-token-wrong-token"}),
        401,
        "bad token",
    )
    .await;
    assert_refused(&s, json!({"csr": csr}), 400, "no token").await;
    assert_refused(
        &s,
        json!({"csr": "garbage", "token": TOKEN}),
        400,
        "garbage CSR",
    )
    .await;
    let mut tampered = pem::parse(&csr).unwrap().into_contents();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", tampered));
    assert_refused(
        &s,
        json!({"csr": tampered, "token": TOKEN}),
        400,
        "CSR with a broken signature",
    )
    .await;
    let weak = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/trust-core/tests/fixtures/csr-rsa1024.pem"
    ))
    .unwrap();
    assert_refused(
        &s,
        json!({"csr": weak, "token": TOKEN}),
        400,
        "1024-bit key",
    )
    .await;
    let forged = key
        .certificate_request("n", &["evil.example.com".into()], &[])
        .unwrap();
    assert_refused(
        &s,
        json!({"csr": forged, "token": TOKEN}),
        400,
        "SAN outside the policy",
    )
    .await;
    let other = NodeKey::generate()
        .unwrap()
        .certificate_request("n", &[], &["10.1.2.3".parse().unwrap()])
        .unwrap();
    assert_refused(
        &s,
        json!({"csr": other, "token": TOKEN}),
        400,
        "IP outside the policy",
    )
    .await;
    for id in [
        json!("abc"),
        json!(0),
        json!("007"),
        json!(-1),
        json!(1.5),
        json!([1]),
    ] {
        assert_refused(
            &s,
            json!({"csr": csr, "token": TOKEN, "node_id": id}),
            400,
            "bad node id",
        )
        .await;
    }
    assert_refused(
        &s,
        json!({"csr": csr, "token": TOKEN, "extra": 1}),
        400,
        "unknown field",
    )
    .await;
    let huge = "A".repeat(200 * 1024);
    let r = s
        .client
        .post(format!("{}/trust/enroll", s.url))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // The unread rest of the body makes the connection unusable: the answer says so, and
    // the next request (below) gets a fresh connection instead of a broken one.
    assert_eq!(
        r.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );

    for (path, want) in [
        ("/trust/verify/99", 404),
        ("/trust/revoke/99", 404),
        ("/trust/verify/abc", 400),
        ("/trust/revoke/1e3", 400),
        ("/trust/revoke/%31", 400),
        ("/trust/revoke/1/", 404),
    ] {
        let (code, body) = s.post(path, None).await;
        assert_eq!(code, want, "{path}: {body}");
    }
    assert_eq!(s.get("/trust/certificate/-1").await.0, 400);
    assert_eq!(s.get("/trust/crl?wait=soon").await.0, 400);

    let status = s.status().await;
    assert_eq!(
        (
            status["total_nodes"].as_u64(),
            status["revoked_certificates"].as_u64()
        ),
        (Some(0), Some(0))
    );
    // And the next good request still succeeds.
    let (code, body) = s.enroll(&csr, None).await;
    assert_eq!(code, 200, "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_sends_a_byte_is_closed_at_the_header_deadline() {
    // hyper's HTTP/1-or-2 detection read has no timer of its own: without the first-byte
    // deadline a silent connection held one of the listener's slots for ever.
    use tokio::io::AsyncReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(
        authority::http::HEADER_READ_TIMEOUT * 2,
        silent.read(&mut [0u8; 16]),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "still open {:?} after connecting: {closed:?}",
        started.elapsed()
    );
    assert!(started.elapsed() >= authority::http::HEADER_READ_TIMEOUT);
    s.stop().await;
}
