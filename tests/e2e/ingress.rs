//! The sidecar's inbound path, in process on 127.0.0.1: a verified peer's request reaches
//! the app with identity headers it set (spoofed ones removed); a peer revoked while its
//! keep-alive connection is open is refused on its next request; signatures are required
//! where configured and bound to the TLS peer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use rustls::pki_types::{PrivateKeyDer, ServerName, UnixTime};
use serde_json::Value;
use sidecar::ingress::{Ingress, IngressSettings};
use sidecar::metrics::Metrics;
use sidecar::policy::AllowAll;
use tokio_util::sync::CancellationToken;
use trust_core::testing::{TestNode, TestPki};
use trust_core::{
    CacheSettings, CertificateVerifier, MessageSigner, NodeKey, RequestParts, TrustCache,
    VerifySettings,
};

pub(crate) static PKI: LazyLock<TestPki> = LazyLock::new(TestPki::new);

pub(crate) fn crl(revoked: &[&trust_core::Serial], number: u64) -> trust_core::RevocationList {
    let now = UnixTime::now();
    let signed = PKI.signed_crl(revoked, number, now, Duration::from_secs(3600));
    trust_core::RevocationList::from_der(&signed.der, PKI.ca.root(), now).unwrap()
}

pub(crate) struct Node {
    pub(crate) authority: String,
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) cache: Arc<TrustCache>,
    pub(crate) app_hits: Arc<AtomicUsize>,
    pub(crate) metrics: Metrics,
    pub(crate) stop: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An echo app: answers with the request's headers as JSON, counting requests.
async fn start_app(hits: Arc<AtomicUsize>, stop: CancellationToken) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! { _ = stop.cancelled() => return, a = listener.accept() => a.unwrap() };
            let hits = Arc::clone(&hits);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let headers: serde_json::Map<String, Value> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.to_string(),
                                    Value::String(v.to_str().unwrap_or("").into()),
                                )
                            })
                            .collect();
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(Value::Object(headers).to_string()),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A fixed server certificate for `node`.
fn serving(node: &TestNode) -> Arc<dyn rustls::server::ResolvesServerCert> {
    let signing = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(node.key.pkcs8_der()))
        .unwrap();
    let certified = rustls::sign::CertifiedKey::new(vec![node.cert.der.clone()], signing);
    Arc::new(rustls::sign::SingleCertAndKey::from(certified))
}

async fn start_node() -> Node {
    start_node_with(|_| {}).await
}

/// A node whose ingress settings `customise` may change (limits, timeouts, the upstream).
pub(crate) async fn start_node_with(customise: impl FnOnce(&mut IngressSettings)) -> Node {
    start(customise, None).await.0
}

/// A node whose ingress runs on `threads` threads as `trust-proxy run` does; also returns
/// the ingress task, which ends once the node is stopped and every thread has drained.
async fn start_node_on_threads(
    threads: usize,
) -> (Node, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (node, task) = start(|_| {}, Some(threads)).await;
    (node, task.unwrap())
}

async fn start(
    customise: impl FnOnce(&mut IngressSettings),
    threads: Option<usize>,
) -> (Node, Option<tokio::task::JoinHandle<std::io::Result<()>>>) {
    let stop = CancellationToken::new();
    let app_hits = Arc::new(AtomicUsize::new(0));
    let upstream = start_app(Arc::clone(&app_hits), stop.clone()).await;
    start_in_front_of(
        upstream,
        app_hits,
        stop,
        Arc::new(AllowAll),
        customise,
        threads,
    )
    .await
}

/// A node in front of the app at `upstream` (whose requests `app_hits` counts, if the
/// caller counts them), admitting by `admission`, stopped by `stop`.
pub(crate) async fn start_in_front_of(
    upstream: std::net::SocketAddr,
    app_hits: Arc<AtomicUsize>,
    stop: CancellationToken,
    admission: Arc<dyn sidecar::policy::Admission>,
    customise: impl FnOnce(&mut IngressSettings),
    threads: Option<usize>,
) -> (Node, Option<tokio::task::JoinHandle<std::io::Result<()>>>) {
    let cache = Arc::new(TrustCache::new(
        CertificateVerifier::new(PKI.ca.root().clone(), VerifySettings::default()),
        CacheSettings::default(),
    ));
    cache.install_crl(crl(&[], 1)).unwrap();
    let me = PKI.node(50);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let authority = format!("localhost:{}", addr.port());
    let mut settings = IngressSettings {
        local_authorities: vec![authority.clone()],
        signed_prefixes: vec![request_path::RoutePrefix::new("/fl/").unwrap()],
        max_body: 1 << 20,
        ..IngressSettings::new(upstream)
    };
    customise(&mut settings);
    let metrics = Metrics::new();
    let ingress = Ingress::new(
        Arc::clone(&cache),
        serving(&me),
        settings,
        admission,
        metrics.clone(),
    )
    .unwrap();
    let ingress = Arc::new(ingress);
    let task = match threads {
        None => {
            tokio::spawn(sidecar::ingress::serve(listener, ingress, stop.clone()));
            None
        }
        Some(n) => Some(tokio::spawn(sidecar::ingress::serve_on_threads(
            listener,
            ingress,
            stop.clone(),
            n,
        ))),
    };
    let node = Node {
        authority,
        addr,
        cache,
        app_hits,
        metrics,
        stop,
    };
    (node, task)
}

/// A rustls client configuration trusting the test root, before its client certificate.
fn trusting_the_test_root()
-> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(PKI.ca.root().der().clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
}

/// A rustls client configuration presenting `client`'s certificate, trusting the test root.
pub(crate) fn client_config(client: &TestNode) -> rustls::ClientConfig {
    trusting_the_test_root()
        .with_client_auth_cert(
            vec![client.cert.der.clone()],
            PrivateKeyDer::Pkcs8(client.key.pkcs8_der()),
        )
        .unwrap()
}

/// A rustls client configuration with no client certificate, trusting the test root.
pub(crate) fn anonymous_client_config() -> rustls::ClientConfig {
    trusting_the_test_root().with_no_client_auth()
}

/// An mTLS stream to `node` as `client`, for raw bytes.
pub(crate) async fn connect_tls(
    node: &Node,
    client: &TestNode,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(client_config(client)))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// An HTTP/1.1 keep-alive connection over mTLS as `client`.
pub(crate) async fn connect(node: &Node, client: &TestNode) -> SendRequest<Full<Bytes>> {
    let tls = connect_tls(node, client).await;
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

pub(crate) async fn send(
    conn: &mut SendRequest<Full<Bytes>>,
    node: &Node,
    path: &str,
    body: &[u8],
    headers: &[(&str, String)],
) -> (u16, Value) {
    let mut req = http::Request::post(path).header("host", &node.authority);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    // A keep-alive connection takes the next request only once it has
    // finished the previous exchange; asking earlier is a client error.
    conn.ready().await.unwrap();
    let response = conn
        .send_request(req.body(Full::new(Bytes::copy_from_slice(body))).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn signer(node: &TestNode) -> MessageSigner {
    let key = NodeKey::from_pkcs8_der(node.key.pkcs8_der().secret_pkcs8_der()).unwrap();
    MessageSigner::new(key, &node.subject, &node.cert.der)
}

pub(crate) fn signed(
    node: &Node,
    by: &TestNode,
    path: &str,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let h = signer(by)
        .sign(
            &RequestParts::new("POST", &node.authority, path, body),
            UnixTime::now(),
        )
        .unwrap();
    h.pairs().iter().map(|(k, v)| (*k, v.to_string())).collect()
}

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
async fn a_peer_revoked_during_a_keep_alive_connection_is_refused_on_its_next_request() {
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
