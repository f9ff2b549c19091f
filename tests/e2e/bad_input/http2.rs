//! Bad input at the HTTP/2 layer: a rapid-reset flood is cut off while other clients are
//! served, and streams past the advertised limit are refused and never reach the app.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{all_connections_released, still_serves};
use crate::support::connect_h2_tls;
use crate::support::ingress::{PKI, start_node_with};

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
