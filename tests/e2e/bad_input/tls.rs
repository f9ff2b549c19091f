//! Bad input at the TLS layer: plaintext HTTP and garbage on the TLS port, a truncated
//! hello, an old protocol version, and client chains padded with junk or too large.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{
    all_connections_released, expect_handshake_failures, handshake_failures, read_to_close,
    status_of, still_serves,
};
use crate::support::ingress::{PKI, client_config, start_node_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_http_and_garbage_on_the_tls_port_are_refused_as_protocol_errors() {
    let node = start_node_with(|_| {}).await;
    for bytes in [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        (0..=255u8).cycle().take(3000).collect(),
        b"\x16\x03\x01\xff\xff garbage after a record header".to_vec(),
    ] {
        let before = handshake_failures(&node, "protocol");
        let mut tcp = TcpStream::connect(node.addr).await.unwrap();
        tcp.write_all(&bytes).await.unwrap();
        let answer = read_to_close(&mut tcp).await;
        assert!(
            !String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"),
            "plaintext must never be served"
        );
        expect_handshake_failures(&node, "protocol", before + 1).await;
    }
    assert_eq!(node.app_hits.load(Ordering::SeqCst), 0);
    still_serves(&node).await;
    all_connections_released(&node).await;
}

/// The first flight a real rustls client sends (its ClientHello record).
fn client_hello() -> Vec<u8> {
    let config = Arc::new(client_config(&PKI.node(62)));
    let mut client = rustls::ClientConnection::new(
        config,
        rustls::pki_types::ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    hello
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_hello_is_dropped_at_the_handshake_deadline() {
    let node = start_node_with(|s| s.handshake_timeout = Duration::from_secs(1)).await;
    let hello = client_hello();
    let mut tcp = TcpStream::connect(node.addr).await.unwrap();
    tcp.write_all(&hello[..hello.len() / 2]).await.unwrap();
    // Then silence: the sidecar must close at its handshake deadline, not wait for ever.
    read_to_close(&mut tcp).await;
    expect_handshake_failures(&node, "timeout", 1).await;
    still_serves(&node).await;
    drop(tcp);
    all_connections_released(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_protocol_version_gets_a_fatal_alert() {
    let node = start_node_with(|_| {}).await;
    // A TLS 1.0 ClientHello (client_version 3.1, one RSA-AES-CBC suite, no extensions),
    // what a client that cannot do TLS 1.2 sends.
    let mut body = vec![0x03, 0x01];
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);

    let mut tcp = TcpStream::connect(node.addr).await.unwrap();
    tcp.write_all(&record).await.unwrap();
    let answer = read_to_close(&mut tcp).await;
    // An alert record (21), fatal (2): rustls answers handshake_failure (40) to a hello
    // that offers nothing it speaks, protocol_version (70) to some others.
    assert!(
        answer.len() >= 7 && answer[0] == 0x15 && answer[5] == 2 && [40, 70].contains(&answer[6]),
        "expected a fatal alert, got {answer:02x?}"
    );
    expect_handshake_failures(&node, "protocol", 1).await;
    still_serves(&node).await;
    drop(tcp);
    all_connections_released(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_chain_padded_with_junk_or_loops_is_judged_by_its_leaf_and_a_huge_one_refused() {
    let node = start_node_with(|_| {}).await;
    let peer = PKI.node(68);
    let foreign = trust_core::testing::TestPki::with_name("Test Root");
    let other = foreign.node(69);
    let handshake = |chain: Vec<rustls::pki_types::CertificateDer<'static>>,
                     key: rustls::pki_types::PrivatePkcs8KeyDer<'static>| {
        let node_addr = node.addr;
        async move {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(PKI.ca.root().der().clone()).unwrap();
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, rustls::pki_types::PrivateKeyDer::Pkcs8(key))
            .unwrap();
            let tcp = TcpStream::connect(node_addr).await.unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(
                    rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                    tcp,
                )
                .await
                .ok()?;
            // TLS 1.3: the server judges the client's certificate after the client's
            // Finished, so ask for something to learn the verdict.
            tls.write_all(b"GET /chain HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut answer = Vec::new();
            let _ = tls.read_to_end(&mut answer).await;
            Some(status_of(&answer))
        }
    };
    let leaf = peer.cert.der.clone();
    // The leaf, then junk: the root itself, a foreign node, the same foreign node again (a
    // loop of nothing). Intermediates are never trusted; the leaf alone decides.
    let padded = vec![
        leaf.clone(),
        PKI.ca.root().der().clone(),
        other.cert.der.clone(),
        other.cert.der.clone(),
        foreign.ca.root().der().clone(),
    ];
    assert_eq!(handshake(padded, peer.key.pkcs8_der()).await, Some(200));
    // A foreign leaf padded with our root is still foreign.
    let mut disguised = vec![other.cert.der.clone(), PKI.ca.root().der().clone()];
    disguised.extend(std::iter::repeat_n(leaf.clone(), 3));
    assert_ne!(handshake(disguised, other.key.pkcs8_der()).await, Some(200));
    // Two hundred certificates (~300 KiB): refused without effort, the sidecar unharmed.
    let huge: Vec<_> = std::iter::once(leaf)
        .chain(std::iter::repeat_n(PKI.ca.root().der().clone(), 200))
        .collect();
    assert_ne!(handshake(huge, peer.key.pkcs8_der()).await, Some(200));
    assert_eq!(
        node.app_hits.load(Ordering::SeqCst),
        1,
        "only the padded good leaf got through"
    );
    still_serves(&node).await;
    all_connections_released(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_after_its_handshake_is_dropped_at_the_header_deadline() {
    // Found by the flood study of issue #30: a connection that finished its handshake and
    // then sent nothing was held for ever (hyper's HTTP/1-or-2 detection waits without a
    // timer), a slot and ~16 KiB each, up to the connection limit.
    let node = start_node_with(|s| s.header_read_timeout = Duration::from_secs(1)).await;
    for alpn in [vec![], vec![b"http/1.1".to_vec()], vec![b"h2".to_vec()]] {
        let mut config = client_config(&PKI.node(7));
        config.alpn_protocols = alpn.clone();
        let tcp = TcpStream::connect(node.addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        // The handshake is done; the client says nothing more and reads until closed.
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 1024];
            while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await;
        assert!(
            closed.is_ok(),
            "ALPN {alpn:?}: still open 10 s after the handshake"
        );
    }
    still_serves(&node).await;
    all_connections_released(&node).await;
}
