//! Bad input at the HTTP/1.1 layer and from the app: idle connections holding every slot,
//! ambiguous framing, huge and slow heads, a slow signed body, odd request targets, and an
//! app that hangs or resets.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::{
    all_connections_released, expect_handshake_failures, handshake_failures, read_response,
    read_to_close, signed_head, status_of, still_serves,
};
use crate::support::ingress::{Node, PKI, connect, connect_tls, send, start_node_with};

/// Sends `head` (and `body`) over mTLS as a fresh client and returns everything the sidecar
/// answered before closing or, for a kept-alive connection, the first response.
async fn raw_exchange(node: &Node, bytes: &[u8]) -> Vec<u8> {
    let peer = PKI.node(61);
    let mut tls = connect_tls(node, &peer).await;
    // The sidecar may close before it has read everything (a head too large): that is a
    // refusal too, and what it answered before closing is still there to read.
    let _ = tls.write_all(bytes).await;
    read_response(&mut tls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_holding_every_slot_are_dropped_and_the_next_client_is_served() {
    let node = start_node_with(|s| {
        s.max_connections = 4;
        s.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(node.addr).await.unwrap());
    }
    // A fifth client waits in the backlog while the idle four hold every slot; once their
    // handshake deadline passes it is served.
    still_serves(&node).await;
    assert!(handshake_failures(&node, "timeout") >= 1);
    for mut tcp in idle {
        read_to_close(&mut tcp).await;
    }
    expect_handshake_failures(&node, "timeout", 4).await;
    all_connections_released(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_and_never_smuggles_a_request() {
    let node = start_node_with(|_| {}).await;
    let host = node.authority.clone();
    // Content-Length with Transfer-Encoding, the body hiding a second request.
    let smuggle = format!(
        "POST /a HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
         0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    let answer = raw_exchange(&node, smuggle.as_bytes()).await;
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    // RFC 9112 6.3: Transfer-Encoding wins, the Content-Length is dropped, and the
    // connection closes after the answer, so the bytes after the chunked end are never
    // read as a request.
    assert_eq!(status_of(&answer), 200, "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(
        !text.contains("\"content-length\""),
        "the app must not see the dropped Content-Length: {text}"
    );
    assert_eq!(
        node.app_hits.load(Ordering::SeqCst),
        1,
        "a smuggled second request reached the app"
    );
    // Two different Content-Lengths.
    let before = node.app_hits.load(Ordering::SeqCst);
    let dup = format!(
        "POST /a HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"
    );
    let answer = raw_exchange(&node, dup.as_bytes()).await;
    assert_eq!(
        status_of(&answer),
        400,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(node.app_hits.load(Ordering::SeqCst), before);
    still_serves(&node).await;
    all_connections_released(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_head_is_refused_and_a_slow_one_is_dropped_at_the_header_deadline() {
    let node = start_node_with(|s| {
        s.max_header_bytes = 16 * 1024;
        s.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let huge = format!(
        "GET /a HTTP/1.1\r\nHost: {}\r\nX-Big: {}\r\n\r\n",
        node.authority,
        "a".repeat(100 * 1024)
    );
    let answer = raw_exchange(&node, huge.as_bytes()).await;
    let status = status_of(&answer);
    assert!(
        status == 431 || status == 400 || answer.is_empty(),
        "a 100 KiB header must be refused: {status}"
    );
    // Half a head, then silence.
    let peer = PKI.node(63);
    let mut tls = connect_tls(&node, &peer).await;
    tls.write_all(format!("GET /slow HTTP/1.1\r\nHost: {}\r\nX-A: ", node.authority).as_bytes())
        .await
        .unwrap();
    let answer = read_to_close(&mut tls).await;
    assert!(!String::from_utf8_lossy(&answer).contains(" 200 "));
    assert_eq!(node.app_hits.load(Ordering::SeqCst), 0);
    still_serves(&node).await;
    drop(tls);
    all_connections_released(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_body_sent_too_slowly_is_408_and_never_reaches_the_app() {
    let node = start_node_with(|s| s.body_read_timeout = Duration::from_secs(1)).await;
    let peer = PKI.node(64);
    let body = br#"{"round":1,"weights":[0.5]}"#;
    let head = signed_head(&node, &peer, "/fl/update", body);
    let mut tls = connect_tls(&node, &peer).await;
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body[..5]).await.unwrap();
    // The rest never comes.
    let answer = read_response(&mut tls).await;
    assert_eq!(
        status_of(&answer),
        408,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(node.app_hits.load(Ordering::SeqCst), 0);
    still_serves(&node).await;
    drop(tls);
    all_connections_released(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_request_targets_are_refused_and_absolute_form_cannot_redirect_a_signature() {
    let node = start_node_with(|_| {}).await;
    let host = node.authority.clone();
    for target in [
        format!("OPTIONS * HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n".to_string(),
        format!("GET fl/update HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    ] {
        let answer = raw_exchange(&node, target.as_bytes()).await;
        let status = status_of(&answer);
        assert!(
            (400..500).contains(&status),
            "{target:?} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert_eq!(node.app_hits.load(Ordering::SeqCst), 0);

    // A request signed for this node, sent in absolute form naming another host than its
    // Host: two authorities, so it is refused before its signature is even read.
    let peer = PKI.node(65);
    let body = b"{}";
    let head = signed_head(&node, &peer, "https://evil.example/fl/update", body) + "{}";
    let answer = raw_exchange(&node, head.as_bytes()).await;
    assert_eq!(
        status_of(&answer),
        400,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let conflicting = node
        .metrics
        .bad_requests
        .with_label_values(&["host_conflicting"])
        .get();
    assert_eq!(conflicting, 1);
    assert_eq!(node.app_hits.load(Ordering::SeqCst), 0);
    still_serves(&node).await;
    all_connections_released(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_hangs_is_504_and_one_that_resets_is_502() {
    // An app that accepts and never answers.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hanging.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = hanging.accept().await {
            open.push(stream);
        }
    });
    let node = start_node_with(|s| {
        s.upstream = hang_addr;
        s.upstream_timeout = Duration::from_secs(1);
    })
    .await;
    let peer = PKI.node(66);
    let mut conn = connect(&node, &peer).await;
    let (code, body) = send(&mut conn, &node, "/slow", b"", &[]).await;
    assert_eq!(code, 504, "{body}");
    assert!(body["error"].is_string());
    drop(conn);
    all_connections_released(&node).await;
    held.abort();

    // An app that accepts and closes at once.
    let resetting = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset_addr = resetting.local_addr().unwrap();
    let closer = tokio::spawn(async move {
        while let Ok((stream, _)) = resetting.accept().await {
            drop(stream);
        }
    });
    let node = start_node_with(|s| s.upstream = reset_addr).await;
    let mut conn = connect(&node, &peer).await;
    let (code, body) = send(&mut conn, &node, "/reset", b"", &[]).await;
    assert_eq!(code, 502, "{body}");
    // The same connection keeps working for the next request (no leak of a broken state).
    let (code, _) = send(&mut conn, &node, "/reset-again", b"", &[]).await;
    assert_eq!(code, 502);
    drop(conn);
    all_connections_released(&node).await;
    closer.abort();
}
