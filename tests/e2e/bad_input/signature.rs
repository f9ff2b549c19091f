//! Refused requests say what was wrong and nothing of the inside, and the real sidecar
//! counts each refusal's reason: unsigned, forged, altered, stale and future signatures, a
//! signature carried over another peer's connection, path spellings that dodge the
//! signed-route rule, no client certificate, a look-alike CA's certificate.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use super::{all_connections_released, read_response, signed_head, status_of};
use crate::support::ingress::{PKI, connect_tls, crl, start_node_with};
use crate::support::net::Net;
use crate::support::{issue_dev, mtls, post, trust_proxy};

/// The message of a refusal in `raw` (a whole HTTP/1.1 response): checks that it is the
/// sidecar's JSON shape, `{"error": "..."}` and nothing else, and that the message tells a
/// client what was wrong without telling it anything of the inside: no addresses of the
/// app, no OS or library error text, no source paths, no panic, no certificate serial.
fn refusal_message(raw: &[u8], case: &str, secrets: &[&str]) -> String {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{case}: no complete response: {text}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ncontent-type: application/json"),
        "{case}: {head}"
    );
    let value: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{case}: body is not JSON ({e}): {body}"));
    let object = value.as_object().expect("a JSON object");
    assert_eq!(object.len(), 1, "{case}: only the error field: {body}");
    let message = object["error"]
        .as_str()
        .expect("a string message")
        .to_owned();
    assert!(
        !message.is_empty() && message.len() <= 120,
        "{case}: {message:?}"
    );
    let internal = [
        "os error",
        "Error",
        "error:",
        "::",
        "src/",
        "/tmp",
        "panicked",
        "127.0.0.1",
        "{",
        "Os {",
    ];
    for word in internal.iter().chain(secrets) {
        assert!(
            !message.contains(word),
            "{case}: the message {message:?} tells a client {word:?}"
        );
    }
    message
}

/// Writes `request` over `conn`, reads one response and checks its status is `want`
/// (the whole answer is shown when it is not); returns the raw response.
async fn answered(
    conn: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    request: &str,
    want: u16,
    case: &str,
) -> Vec<u8> {
    conn.write_all(request.as_bytes()).await.unwrap();
    let answer = read_response(conn).await;
    assert_eq!(
        status_of(&answer),
        want,
        "{case}: {}",
        String::from_utf8_lossy(&answer)
    );
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_what_was_wrong_and_nothing_of_the_inside() {
    let node = start_node_with(|s| s.max_body = 1024).await;
    let peer = PKI.node(69);
    let serial = peer.cert.serial.to_string();
    let host = node.authority.clone();
    let body = b"{}";
    let signature = trust_core::signature::header::SIGNATURE;
    let duplicated = {
        let head = signed_head(&node, &peer, "/fl/update", body);
        let again = head
            .lines()
            .find(|l| l.starts_with(signature))
            .expect("a signature line")
            .to_owned();
        head.trim_end().to_owned() + "\r\n" + &again + "\r\n\r\n{}"
    };
    let cases = [
        (
            "unsigned where required",
            format!("POST /fl/update HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\n{{}}"),
            401,
            "requires a message signature",
        ),
        (
            "body altered",
            signed_head(&node, &peer, "/fl/update", body) + "[]",
            401,
            // Which check failed would help a forger: the label and the log have it.
            "message signature refused",
        ),
        (
            "signature header twice",
            duplicated,
            400,
            "x-signature appears more than once",
        ),
        (
            "ambiguous path",
            format!("GET /fl/%2e%2e/whoami HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            400,
            "path",
        ),
        (
            "body over the limit",
            format!(
                "POST /big HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2048\r\n\r\n{}",
                "x".repeat(2048)
            ),
            413,
            "too large",
        ),
    ];
    for (case, request, status, says) in cases {
        // A fresh connection each: a refusal sent before the body was read may close it.
        let mut conn = connect_tls(&node, &peer).await;
        let answer = answered(&mut conn, &request, status, case).await;
        let message = refusal_message(&answer, case, &[&serial]);
        assert!(
            message.contains(says),
            "{case}: {message:?} should say {says:?}"
        );
    }
    assert_eq!(node.app_hits.load(Ordering::SeqCst), 0);

    // Revoked while its connection is open: the peer learns it is no longer trusted, not
    // which serial, list or time did it.
    let mut conn = connect_tls(&node, &peer).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    answered(
        &mut conn,
        &get("/before-revocation"),
        200,
        "before revocation",
    )
    .await;
    node.cache
        .install_crl(crl(&[&peer.cert.serial], 2))
        .unwrap();
    let answer = answered(
        &mut conn,
        &get("/after-revocation"),
        403,
        "after revocation",
    )
    .await;
    refusal_message(
        &answer,
        "revoked on an open connection",
        &[&serial, "revoked at", "CRL"],
    );
    assert_eq!(
        node.app_hits.load(Ordering::SeqCst),
        1,
        "only the request before it"
    );
    drop(conn);
    all_connections_released(&node).await;

    // The app is down: the client learns that, not where the app listens or why the
    // connect failed.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app_addr = gone.local_addr().unwrap();
    drop(gone);
    let down = start_node_with(|s| s.upstream = app_addr).await;
    let peer = PKI.node(70);
    let mut conn = connect_tls(&down, &peer).await;
    let request = format!("GET /x HTTP/1.1\r\nHost: {}\r\n\r\n", down.authority);
    let answer = answered(&mut conn, &request, 502, "app down").await;
    let port = app_addr.port().to_string();
    refusal_message(&answer, "app down", &[&port, "refused", "connect"]);
    drop(conn);
    all_connections_released(&down).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_ingress_refuses_each_bad_request_with_its_reason_in_the_metrics() {
    use trust_core::{MessageSigner, NodeKey, RequestParts, UnixTime};
    // No process boundary is under test: node 1's sidecar runs in-process.
    let net = Net::start(&[]);
    let app_b = net.app("b", None);
    let b = net.in_process(1, app_b.addr(""), &[]).await;
    let ingress = b.addr("ingress").to_owned();
    let ca = net.tmp.path().join("node-1/state/ca-cert.pem");
    let authority_state = net.tmp.path().join("authority");
    let (a_key, a_cert) = issue_dev(
        &authority_state,
        &net.tmp.path().join("a"),
        &["--node-id", "7"],
    );
    let (m_key, m_cert) = issue_dev(
        &authority_state,
        &net.tmp.path().join("m"),
        &["--node-id", "8"],
    );
    let signer = |key: &PathBuf, cert: &PathBuf, id: u32| {
        let key = NodeKey::from_pkcs8_pem(&std::fs::read_to_string(key).unwrap()).unwrap();
        let der = pem::parse(std::fs::read_to_string(cert).unwrap())
            .unwrap()
            .into_contents();
        MessageSigner::new(
            key,
            &trust_core::Subject::Node(trust_core::NodeId::new(id).unwrap()),
            &der,
        )
    };
    let a = signer(&a_key, &a_cert, 7);
    let host = "localhost";
    let body = br#"{"round":3}"#;
    let sign_at = |s: &MessageSigner, body: &[u8], at: u64| -> Vec<(&'static str, String)> {
        s.sign(
            &RequestParts::new("POST", host, "/fl/update", body),
            UnixTime::since_unix_epoch(Duration::from_secs(at)),
        )
        .unwrap()
        .pairs()
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .collect()
    };
    let now = UnixTime::now().as_secs();
    let mut conn = mtls(&ingress, &ca, &a_key, &a_cert).await.unwrap();
    assert_eq!(
        post(&mut conn, host, "/fl/update", body, &sign_at(&a, body, now)).await,
        Ok(200)
    );
    let forwarded = "tpm_requests_total{direction=\"ingress\",outcome=\"forwarded\"}";
    assert_eq!(b.metric(forwarded).await, 1.0);

    let mut forged = sign_at(&a, body, now);
    let sig = forged
        .iter_mut()
        .find(|(k, _)| *k == trust_core::signature::header::SIGNATURE)
        .unwrap();
    {
        use base64::Engine as _;
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(&sig.1)
            .unwrap();
        raw[10] ^= 0x01;
        sig.1 = base64::engine::general_purpose::STANDARD.encode(raw);
    }
    let m = signer(&m_key, &m_cert, 8);
    let mut m_conn = mtls(&ingress, &ca, &m_key, &m_cert).await.unwrap();
    type Headers = Vec<(&'static str, String)>;
    let cases: Vec<(&str, u16, &str, Headers, &[u8])> = vec![
        (
            "unsigned where required",
            401,
            "missing_header",
            vec![],
            body,
        ),
        ("forged signature", 401, "bad_signature", forged, body),
        (
            "body altered",
            401,
            "bad_signature",
            sign_at(&a, body, now),
            br#"{"round":4}"#,
        ),
        ("stale", 401, "stale", sign_at(&a, body, now - 3600), body),
        ("future", 401, "future", sign_at(&a, body, now + 3600), body),
    ];
    for (what, status, reason, headers, sent) in cases {
        assert_eq!(
            post(&mut conn, host, "/fl/update", sent, &headers).await,
            Ok(status),
            "{what}"
        );
        let series = format!("tpm_signature_verification_failures_total{{reason=\"{reason}\"}}");
        assert!(b.metric(&series).await >= 1.0, "{what}: {series}");
    }
    // The signed-route rule cannot be dodged by spelling the path differently: the
    // path is normalised once, before routing, policy and forwarding.
    for (path, status) in [
        ("//fl/update", 401),
        ("/x/../fl/update", 401),
        ("/./fl//update", 401),
        ("/fl/%2e%2e/whoami", 400),
        ("/x%2F..%2Ffl/update", 400),
        ("/../fl/update", 400),
    ] {
        assert_eq!(
            post(&mut conn, host, path, body, &[]).await,
            Ok(status),
            "{path}"
        );
    }
    // Signed by A, carried over M's connection.
    assert_eq!(
        post(
            &mut m_conn,
            host,
            "/fl/update",
            body,
            &sign_at(&a, body, now)
        )
        .await,
        Ok(401)
    );
    assert!(
        b.metric("tpm_signature_verification_failures_total{reason=\"unknown_node\"}")
            .await
            >= 1.0
    );
    // M signing for itself is fine: the refusals were about the requests, not the peers.
    assert_eq!(
        post(
            &mut m_conn,
            host,
            "/fl/update",
            body,
            &sign_at(&m, body, now)
        )
        .await,
        Ok(200)
    );
    assert_eq!(
        b.metric(forwarded).await,
        2.0,
        "no refused request reached the app"
    );

    // No client certificate at all.
    let bare = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&ca)
        .arg(format!(
            "https://localhost:{}/whoami",
            ingress.rsplit(':').next().unwrap()
        ))
        .output()
        .unwrap();
    assert!(!bare.status.success(), "no client certificate, no answer");
    // A certificate from another CA with the same name and trust domain.
    let other = net.tmp.path().join("other-ca");
    let init = trust_proxy()
        .args(["ca", "init", "--state-dir"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(init.status.success());
    let (o_key, o_cert) = issue_dev(&other, &net.tmp.path().join("o"), &["--node-id", "7"]);
    let refused = match mtls(&ingress, &ca, &o_key, &o_cert).await {
        Err(_) => true,
        Ok(mut c) => post(&mut c, host, "/fl/update", body, &[]).await.is_err(),
    };
    assert!(refused, "a look-alike CA's certificate gets no answer");
    assert!(
        b.metric("tpm_tls_handshake_failures_total{reason=\"certificate\"}")
            .await
            >= 1.0
    );
    assert_eq!(b.metric(forwarded).await, 2.0);
    // Cancelling the token stops the library sidecar cleanly, as SIGTERM stops the process.
    b.stop().await.expect("sidecar::run returns Ok on shutdown");
}
