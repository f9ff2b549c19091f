//! The sidecar's inbound path, in process on 127.0.0.1: a verified peer's request reaches
//! the app with identity headers it set (spoofed ones removed); a peer revoked while its
//! keep-alive connection is open is refused on its next request, which ends the connection
//! (HTTP/1 and HTTP/2); signatures are required
//! where configured and bound to the TLS peer; connections spread over ingress threads are
//! served, revoked and drained alike; an oversized body is 413 and a dead app 502. The
//! harness is `support::ingress`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sidecar::ingress::{Ingress, IngressSettings};
use sidecar::metrics::Metrics;
use sidecar::policy::AllowAll;
use tokio_util::sync::CancellationToken;

use crate::support::ingress::{
    Node, PKI, connect, crl, send, serving, signed, start_node, start_node_on_threads,
};
use crate::support::net::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_peer_reaches_the_app_with_identity_headers_and_spoofed_ones_never_do() {
    let node = start_node().await;
    let peer = PKI.node(1);
    let mut conn = connect(&node, &peer).await;
    let spoof = [
        ("x-verified-node-id", "99".to_string()),
        ("X-Verified-Roles", "admin".to_string()),
        ("x-verified-anything", "x".to_string()),
    ];
    let (code, seen) = send(&mut conn, &node, "/status", b"", &spoof).await;
    assert_eq!(code, 200, "{seen}");
    assert_eq!(seen["x-verified-node-id"], "1");
    assert_eq!(
        seen["x-verified-spiffe-id"],
        "spiffe://test.sovereign/node/1"
    );
    assert_eq!(seen["x-verified-roles"], "node");
    assert_eq!(seen["x-verified-signature"], "false");
    assert!(seen.get("x-verified-anything").is_none(), "{seen}");
    assert_eq!(node.app_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_revoked_during_a_keep_alive_connection_is_refused_once_and_loses_it() {
    let node = start_node().await;
    let peer = PKI.node(2);
    let mut conn = connect(&node, &peer).await;
    assert_eq!(send(&mut conn, &node, "/a", b"", &[]).await.0, 200);
    node.cache
        .install_crl(crl(&[&peer.cert.serial], 2))
        .unwrap();
    let (code, body) = send(&mut conn, &node, "/b", b"", &[]).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        node.app_hits.load(Ordering::SeqCst),
        1,
        "the app never saw the refused request"
    );
    // The answer ends the connection: looping on it would cost the revoked peer nothing.
    eventually(Duration::from_secs(5), "the connection closed", || {
        let closed = conn.is_closed();
        async move { closed }
    })
    .await;
    assert!(conn.ready().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_a_revoked_peer_gets_goaway_after_its_refusal() {
    let node = start_node().await;
    let peer = PKI.node(3);
    let tls = crate::support::connect_h2_tls(&node, &peer).await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    async fn get(client: &mut h2::client::SendRequest<bytes::Bytes>, url: String) -> u16 {
        let request = http::Request::get(url).body(()).unwrap();
        let (answer, _) = client.send_request(request, true).unwrap();
        let answer = answer.await.unwrap();
        let status = answer.status().as_u16();
        let mut body = answer.into_body();
        while let Some(chunk) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.unwrap().len());
        }
        status
    }
    let url = |path: &str| format!("https://{}{path}", node.authority);
    assert_eq!(get(&mut client, url("/a")).await, 200);
    node.cache
        .install_crl(crl(&[&peer.cert.serial], 2))
        .unwrap();
    assert_eq!(get(&mut client, url("/b")).await, 403);
    // GOAWAY, then the server closes: the client's connection task ends.
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the server ended the HTTP/2 connection")
        .unwrap()
        .ok();
    assert_eq!(node.app_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spread_over_ingress_threads_are_served_revoked_and_drained_like_any() {
    // Three threads, twelve connections: whichever thread accepts one, it is served by
    // the thread serving the fewest, often another thread's event loop, and must work
    // there as if accepted there, see revocation through the shared trust cache, and
    // drain on stop.
    let (node, ingress) = start_node_on_threads(3).await;
    let (good, revoked) = (PKI.node(5), PKI.node(6));
    let mut conns = Vec::new();
    for i in 0..12 {
        let who = if i % 2 == 0 { &good } else { &revoked };
        conns.push((i % 2 == 0, connect(&node, who).await));
    }
    assert_eq!(node.metrics.connections.get(), 12);
    let per_thread = |node: &Node| -> Vec<i64> {
        (0..3)
            .map(|t| {
                node.metrics
                    .thread_connections
                    .with_label_values(&[t.to_string()])
                    .get()
            })
            .collect()
    };
    // Each connection is placed when accepted, before its handshake, so by now the
    // twelve are spread exactly, whichever threads happened to accept them.
    assert_eq!(per_thread(&node), [4, 4, 4]);
    for (_, conn) in &mut conns {
        for path in ["/a", "/b"] {
            let (code, body) = send(conn, &node, path, b"", &[]).await;
            assert_eq!(code, 200, "{body}");
        }
    }
    assert_eq!(node.app_hits.load(Ordering::SeqCst), 24);
    node.cache
        .install_crl(crl(&[&revoked.cert.serial], 2))
        .unwrap();
    for (is_good, conn) in &mut conns {
        let (code, body) = send(conn, &node, "/c", b"", &[]).await;
        assert_eq!(code, if *is_good { 200 } else { 403 }, "{body}");
    }
    assert_eq!(node.app_hits.load(Ordering::SeqCst), 30);
    drop(conns);
    node.stop.cancel();
    let drained = tokio::time::timeout(Duration::from_secs(30), ingress)
        .await
        .expect("every ingress thread drains once its connections close");
    drained.unwrap().unwrap();
    assert_eq!(node.metrics.connections.get(), 0);
    assert_eq!(per_thread(&node), [0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_required_where_configured_and_bound_to_the_tls_peer() {
    let node = start_node().await;
    let (a, m) = (PKI.node(3), PKI.node(4));
    let body = br#"{"round":1,"weights":[0.5]}"#;
    let mut conn_a = connect(&node, &a).await;
    assert_eq!(
        send(&mut conn_a, &node, "/fl/update", body, &[]).await.0,
        401,
        "unsigned on a signed route"
    );
    let (code, seen) = send(
        &mut conn_a,
        &node,
        "/fl/update",
        body,
        &signed(&node, &a, "/fl/update", body),
    )
    .await;
    assert_eq!(code, 200, "{seen}");
    assert_eq!(seen["x-verified-signature"], "true");
    assert_eq!(
        seen["x-from-node"], "3",
        "the signature headers reach the app for its own records"
    );
    // Body altered after signing.
    let headers = signed(&node, &a, "/fl/update", body);
    assert_eq!(
        send(
            &mut conn_a,
            &node,
            "/fl/update",
            br#"{"round":1,"weights":[9.9]}"#,
            &headers
        )
        .await
        .0,
        401
    );
    // A's signature carried over M's connection.
    let mut conn_m = connect(&node, &m).await;
    assert_eq!(
        send(
            &mut conn_m,
            &node,
            "/fl/update",
            body,
            &signed(&node, &a, "/fl/update", body)
        )
        .await
        .0,
        401
    );
    // Duplicated signature headers are refused outright.
    let mut dup = signed(&node, &a, "/fl/update", body);
    dup.push(("x-nonce", "AAAAAAAAAAAAAAAAAAAAAA".into()));
    assert_eq!(
        send(&mut conn_a, &node, "/fl/update", body, &dup).await.0,
        400
    );
    assert_eq!(
        node.app_hits.load(Ordering::SeqCst),
        1,
        "only the good request reached the app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_413_and_a_dead_app_is_502_and_the_next_request_still_works() {
    let node = start_node().await;
    let peer = PKI.node(5);
    let mut conn = connect(&node, &peer).await;
    let huge = vec![b'x'; (1 << 20) + 1];
    let (code, _) = send(&mut conn, &node, "/upload", &huge, &[]).await;
    assert_eq!(code, 413);
    assert_eq!(node.app_hits.load(Ordering::SeqCst), 0);
    let mut conn = connect(&node, &peer).await;
    assert_eq!(send(&mut conn, &node, "/ok", b"", &[]).await.0, 200);

    // The app goes away: a clear 502, not a hang or a panic.
    let dead = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let cache = Arc::clone(&node.cache);
    let me = PKI.node(51);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = IngressSettings {
        local_authorities: vec![format!("localhost:{}", addr.port())],
        max_body: 1024,
        upstream_timeout: Duration::from_secs(5),
        ..IngressSettings::new(dead)
    };
    let ingress = Ingress::new(
        cache,
        serving(&me),
        settings,
        Arc::new(AllowAll),
        Metrics::new(),
    )
    .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(sidecar::ingress::serve(
        listener,
        Arc::new(ingress),
        stop.clone(),
    ));
    let broken = Node {
        authority: format!("localhost:{}", addr.port()),
        addr,
        cache: Arc::clone(&node.cache),
        app_hits: Arc::new(AtomicUsize::new(0)),
        metrics: Metrics::new(),
        stop,
    };
    let mut conn = connect(&broken, &peer).await;
    let (code, body) = send(&mut conn, &broken, "/x", b"", &[]).await;
    assert_eq!(code, 502, "{body}");
    assert!(body["error"].is_string());
}
