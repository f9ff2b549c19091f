//! The in-process ingress harness: the sidecar's `Ingress` on 127.0.0.1 in front of an echo
//! app that counts its requests, trusting a test PKI ([`PKI`], a fresh CRL from [`crl`]);
//! clients connect over mTLS as any of the PKI's nodes, send requests and sign them.

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

/// The test PKI every in-process node trusts and every test client comes from.
pub static PKI: LazyLock<TestPki> = LazyLock::new(TestPki::new);

/// A CRL signed by [`PKI`]'s root revoking `revoked`, numbered `number`, valid for an hour.
pub fn crl(revoked: &[&trust_core::Serial], number: u64) -> trust_core::RevocationList {
    let now = UnixTime::now();
    let signed = PKI.signed_crl(revoked, number, now, Duration::from_secs(3600));
    trust_core::RevocationList::from_der(&signed.der, PKI.ca.root(), now).unwrap()
}

/// An in-process ingress in front of an app; stopped when dropped.
pub struct Node {
    /// `localhost:<port>`, the authority requests must name.
    pub authority: String,
    /// Where the ingress listens.
    pub addr: std::net::SocketAddr,
    /// Its trust cache (install a CRL here to revoke).
    pub cache: Arc<TrustCache>,
    /// How many requests reached the app.
    pub app_hits: Arc<AtomicUsize>,
    /// The ingress's metrics.
    pub metrics: Metrics,
    /// Stops the ingress (and the echo app).
    pub stop: CancellationToken,
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
pub fn serving(node: &TestNode) -> Arc<dyn rustls::server::ResolvesServerCert> {
    let signing = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(node.key.pkcs8_der()))
        .unwrap();
    let certified = rustls::sign::CertifiedKey::new(vec![node.cert.der.clone()], signing);
    Arc::new(rustls::sign::SingleCertAndKey::from(certified))
}

/// A node with the default settings in front of an echo app.
pub async fn start_node() -> Node {
    start_node_with(|_| {}).await
}

/// A node whose ingress settings `customise` may change (limits, timeouts, the upstream).
pub async fn start_node_with(customise: impl FnOnce(&mut IngressSettings)) -> Node {
    start(customise, None).await.0
}

/// A node whose ingress runs on `threads` threads as `trust-proxy run` does; also returns
/// the ingress task, which ends once the node is stopped and every thread has drained.
pub async fn start_node_on_threads(
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
pub async fn start_in_front_of(
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
pub fn client_config(client: &TestNode) -> rustls::ClientConfig {
    trusting_the_test_root()
        .with_client_auth_cert(
            vec![client.cert.der.clone()],
            PrivateKeyDer::Pkcs8(client.key.pkcs8_der()),
        )
        .unwrap()
}

/// A rustls client configuration with no client certificate, trusting the test root.
pub fn anonymous_client_config() -> rustls::ClientConfig {
    trusting_the_test_root().with_no_client_auth()
}

/// An mTLS stream to `node` as `client`, for raw bytes.
pub async fn connect_tls(
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
pub async fn connect(node: &Node, client: &TestNode) -> SendRequest<Full<Bytes>> {
    let tls = connect_tls(node, client).await;
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// Sends a POST of `body` to `path` with `headers` over `conn`; returns the status and
/// the JSON body (`null` when it is not JSON).
pub async fn send(
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

/// Signature headers as `by` signs a POST of `body` to `path` on `node`.
pub fn signed(node: &Node, by: &TestNode, path: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let h = signer(by)
        .sign(
            &RequestParts::new("POST", &node.authority, path, body),
            UnixTime::now(),
        )
        .unwrap();
    h.pairs().iter().map(|(k, v)| (*k, v.to_string())).collect()
}
