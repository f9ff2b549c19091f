//! The bad-input catalogue against the real ingress, byte by byte. Each test asserts the
//! refusal, its reason where the sidecar counts one, that the app was not called, and that
//! the next good request still succeeds.
//!
//! - [`tls`]: plaintext, garbage and truncated hellos on the TLS port, an old protocol
//!   version, a client chain padded with junk.
//! - [`http1`]: idle connections holding every slot, ambiguous framing, huge and slow heads,
//!   slow bodies, odd request targets, the app misbehaving (hanging, resetting).
//! - [`http2`]: a rapid-reset flood, streams past the limit.
//! - [`signature`]: what a refused request is told (every refusal's body read for what it
//!   must not tell a client) and its reason in the real sidecar's metrics.
//!
//! The helpers here are what these tests share: reading what a refused client sees,
//! waiting for the handshake-failure counts, checking the sidecar still serves and released
//! every connection.

mod http1;
mod http2;
mod signature;
mod tls;

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;

use crate::support::ingress::{Node, PKI, connect, send, signed};

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
