//! The bad-input catalogue against the real ingress, byte by byte: TLS (plaintext, garbage
//! and truncated hellos, an old protocol version, idle connections holding every slot) and
//! HTTP (ambiguous framing, huge and slow heads, slow bodies, odd request targets) and the
//! app misbehaving (hanging, resetting). Each test asserts the refusal, its reason where
//! the sidecar counts one, that the app was not called, and that the next good request
//! still succeeds; one reads every refusal's body for what it must not tell a client.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::ingress::{Node, PKI, connect, connect_tls, crl, send, signed, start_node_with};

/// Reads until the peer closes (or `limit` passes, which fails the test): what a refused
/// client sees.
async fn read_to_close(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the sidecar kept the connection open");
    out
}

/// The status code of the first response in `raw` (0 when there is none).
fn status_of(raw: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(raw);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn handshake_failures(node: &Node, reason: &str) -> u64 {
    node.metrics
        .handshake_failures
        .with_label_values(&[reason])
        .get()
}

/// Waits until the `reason` count reaches `want` (the sidecar closes the socket a moment
/// before it counts), failing after 10 s.
async fn expect_handshake_failures(node: &Node, reason: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handshake_failures(node, reason) < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{reason} handshake failures stayed at {}, expected {want}",
            handshake_failures(node, reason)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handshake_failures(node, reason), want);
}

/// A good mTLS request after the bad input: the sidecar still serves.
async fn still_serves(node: &Node) {
    let peer = PKI.node(60);
    let mut conn = connect(node, &peer).await;
    let before = node.app_hits.load(Ordering::SeqCst);
    assert_eq!(send(&mut conn, node, "/after", b"", &[]).await.0, 200);
    assert_eq!(node.app_hits.load(Ordering::SeqCst), before + 1);
}

/// Every connection the test opened, the bad ones included, is closed and released by the
/// sidecar: nothing leaks (the open-connection gauge is back to zero), so repeated bad
/// input cannot grow its memory. Call it once the test has dropped its own streams.
async fn all_connections_released(node: &Node) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.metrics.connections.get() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} connections still held by the sidecar",
            node.metrics.connections.get()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

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

/// Reads one response: up to its end (headers + Content-Length) or until the sidecar
/// closes; fails the test if neither happens within 20 s.
async fn read_response(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !response_complete(&out) {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
            .await
            .expect("the sidecar neither answered nor closed")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// A request head for `target`, signed by `by` for this node's `/fl/update` (what the
/// signature covers), with the Content-Length of `body` (sent separately).
fn signed_head(
    node: &Node,
    by: &trust_core::testing::TestNode,
    target: &str,
    body: &[u8],
) -> String {
    let mut head = format!(
        "POST {target} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
        node.authority,
        body.len()
    );
    for (name, value) in signed(node, by, "/fl/update", body) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head + "\r\n"
}

fn response_complete(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= length
}

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
    let config = Arc::new(crate::ingress::client_config(&PKI.node(62)));
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

/// An mTLS connection as `client` that negotiated HTTP/2 by ALPN.
pub(crate) async fn connect_h2_tls(
    node: &Node,
    client: &trust_core::testing::TestNode,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut config = crate::ingress::client_config(client);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(node.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_rapid_reset_flood_is_cut_off_and_other_clients_are_served() {
    // CVE-2023-44487: open streams and reset them at once, as fast as the socket takes them.
    let node = start_node_with(|_| {}).await;
    let tls = connect_h2_tls(&node, &PKI.node(67)).await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut sent = 0u32;
    let mut cut = None;
    let mut client = Some(client);
    while let Some(c) = client.take() {
        let mut ready = match c.ready().await {
            Ok(ready) => ready,
            Err(e) => {
                cut = Some(e);
                break;
            }
        };
        let request = http::Request::get(format!("https://{}/flood", node.authority))
            .body(())
            .unwrap();
        let (response, mut stream) = match ready.send_request(request, false) {
            Ok(pair) => pair,
            Err(e) => {
                cut = Some(e);
                break;
            }
        };
        stream.send_reset(h2::Reason::CANCEL);
        drop(response);
        sent += 1;
        if sent < 20_000 {
            client = Some(ready);
        }
    }
    // The sidecar ends the connection (GOAWAY ENHANCE_YOUR_CALM, then close) instead of
    // serving on. The client sees it as the GOAWAY's reason, or, when it is still writing,
    // as a broken pipe (no reason).
    let ended = tokio::time::timeout(Duration::from_secs(20), connection)
        .await
        .expect("the flooding connection was never closed")
        .unwrap();
    let error = cut.expect("the sidecar never stopped the flood");
    // docs/SECURITY.md quotes this figure (`-- --nocapture` shows it).
    eprintln!("rapid reset: the sidecar ended the connection after {sent} reset streams");
    let reason = error
        .reason()
        .or_else(|| ended.err().and_then(|e| e.reason()));
    assert!(
        reason.is_none_or(|r| r == h2::Reason::ENHANCE_YOUR_CALM),
        "after {sent} reset streams: {error}"
    );
    assert!(sent < 20_000, "the flood was never cut off");
    assert!(
        node.app_hits.load(Ordering::SeqCst) < sent as usize,
        "every reset stream reached the app"
    );
    still_serves(&node).await;
    all_connections_released(&node).await;
}

/// Waits until the app has accepted `want` connections (it counts them a moment after the
/// sidecar connects), failing after 10 s, and checks it got no more.
async fn connections_reach(accepted: &std::sync::atomic::AtomicUsize, want: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while accepted.load(Ordering::SeqCst) < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the app accepted {} connections, expected {want}",
            accepted.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), want);
}

/// One HTTP/2 frame as read off the wire.
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Writes one HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = length[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// A complete GET (HEADERS with END_STREAM and END_HEADERS) on `stream`, its header block
/// HPACK-coded by hand: the static table's `:method GET` and `:scheme https`, the path and
/// authority as literals that are never indexed, so every frame decodes on its own.
fn get_frame(stream: u32, path: &str, authority: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x87];
    for (index, value) in [(0x04u8, path), (0x01, authority)] {
        block.push(index);
        block.push(u8::try_from(value.len()).unwrap());
        block.extend(value.as_bytes());
    }
    frame(0x1, 0x1 | 0x4, stream, &block)
}

async fn read_frame(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Frame {
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut head))
        .await
        .expect("the sidecar sent no frame for 20 s")
        .expect("the sidecar closed the connection");
    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.unwrap();
    Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_past_the_limit_are_refused_and_never_reach_the_app() {
    // A client that ignores the advertised SETTINGS_MAX_CONCURRENT_STREAMS (h2's own client
    // would queue) and opens three times as many streams at once, on an app that holds
    // every request it gets until the upstream deadline.
    const LIMIT: u32 = 4;
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    let reached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let held = tokio::spawn({
        let reached = reached.clone();
        async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = app.accept().await {
                reached.fetch_add(1, Ordering::SeqCst);
                open.push(stream);
            }
        }
    });
    let node = start_node_with(|s| {
        s.upstream = app_addr;
        s.http2_max_streams = LIMIT;
        s.upstream_timeout = Duration::from_secs(2);
    })
    .await;
    let mut tls = connect_h2_tls(&node, &PKI.node(71)).await;

    // The preface, empty SETTINGS and every stream in one write: the sidecar reads them
    // before its first answer from the app could free a stream.
    let opened: Vec<u32> = (0..3 * LIMIT).map(|i| 2 * i + 1).collect();
    let mut burst = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    burst.extend(frame(0x4, 0, 0, &[]));
    for &id in &opened {
        burst.extend(get_frame(id, "/held", &node.authority));
    }
    tls.write_all(&burst).await.unwrap();

    // Every stream past the limit is reset with REFUSED_STREAM (RFC 9113 5.1.2: the client
    // may retry it elsewhere); the first LIMIT are answered, 504 when the app never does.
    let (mut refused, mut answered) = (Vec::new(), Vec::new());
    while refused.len() + answered.len() < opened.len() {
        let f = read_frame(&mut tls).await;
        match f.kind {
            // RST_STREAM
            0x3 => {
                let code = u32::from_be_bytes(f.payload[..4].try_into().unwrap());
                assert_eq!(code, 0x7, "stream {} reset with code {code}", f.stream);
                refused.push(f.stream);
            }
            // HEADERS: a response
            0x1 => answered.push(f.stream),
            // SETTINGS from the server: acknowledge it as a client must
            0x4 if f.flags & 0x1 == 0 => tls.write_all(&frame(0x4, 0x1, 0, &[])).await.unwrap(),
            // GOAWAY
            0x7 => panic!("the sidecar ended the connection: {:?}", f.payload),
            _ => {}
        }
    }
    refused.sort_unstable();
    answered.sort_unstable();
    assert_eq!(
        answered,
        opened[..LIMIT as usize],
        "the first {LIMIT} were served"
    );
    assert_eq!(refused, opened[LIMIT as usize..], "the rest were refused");
    // Each admitted stream took its own connection to the app (the app never answered,
    // so none could be reused); the refused ones took none.
    connections_reach(&reached, LIMIT as usize).await;

    // The limit is on streams open at once, not in all: with the first ones ended, the same
    // connection opens new streams and they reach the app.
    let next = opened.last().unwrap() + 2;
    tls.write_all(&get_frame(next, "/held", &node.authority))
        .await
        .unwrap();
    loop {
        let f = read_frame(&mut tls).await;
        assert_ne!(f.kind, 0x3, "a stream under the limit was refused");
        if f.kind == 0x1 && f.stream == next {
            break;
        }
    }
    connections_reach(&reached, LIMIT as usize + 1).await;
    drop(tls);
    all_connections_released(&node).await;
    held.abort();
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
