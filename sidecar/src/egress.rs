//! The sidecar's outbound path: an HTTP forward proxy on loopback that the app reaches
//! through the standard `HTTP_PROXY` variable. For each request (absolute-form,
//! `GET http://aggregator/fl/round HTTP/1.1`) it
//!
//! 1. maps the host to a peer sidecar's TLS address ([`Route`]);
//! 2. signs the request with the node's current key ([`MessageSigner`]), naming the
//!    peer as the destination, so the signature cannot be replayed to another node;
//! 3. opens (or reuses) mutual TLS to the peer with the node's current certificate and
//!    checks the peer's certificate chains to the root, is not revoked, is good for
//!    serverAuth and names the node the URL names;
//! 4. relays the answer.
//!
//! Fail closed: an unknown host, `CONNECT` (end-to-end TLS the sidecar could not sign)
//! and origin-form requests are refused; nothing leaves unsigned or in plaintext.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use trust_core::signature::header as sig_header;
use trust_core::verify::{Usage, VerifySettings};
use trust_core::{CertificateVerifier, RequestParts, SignatureHeaders, TrustCache};

use crate::body::ResponseBody;
use crate::credentials::{CredentialStore, Credentials};
use crate::metrics::Metrics;
use crate::refusal::{Direction, Refusal};
use crate::request_view::strip_hop_by_hop;

/// Where a host the app names goes, and who must answer there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The peer sidecar's TLS address, `host:port`.
    pub address: String,
    /// Who the peer's certificate must name.
    pub expect: Expect,
}

/// The identity a peer's certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// `spiffe://<domain>/node/<id>`.
    Node(u32),
    /// A DNS name among its subject alternative names.
    DnsName(String),
}

/// Outbound settings.
#[derive(Debug, Clone)]
pub struct EgressSettings {
    /// Peers by the host name the app uses.
    pub peers: HashMap<String, Route>,
    /// Port of the peer sidecar for hosts not in `peers` (their certificate must carry the
    /// host as a DNS name); `None` refuses unknown hosts.
    pub default_peer_port: Option<u16>,
    /// Largest request body.
    pub max_body: usize,
    /// Time a peer gets to answer.
    pub timeout: Duration,
    /// Time in-flight requests get after shutdown is asked for.
    pub drain: Duration,
}

type PeerClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The outbound proxy.
pub struct Egress {
    credentials: Arc<CredentialStore>,
    cache: Arc<TrustCache>,
    settings: EgressSettings,
    metrics: Metrics,
    /// Per peer name: the credentials generation the pool's connections were made with.
    clients: Mutex<HashMap<String, (u64, PeerClient)>>,
}

impl Egress {
    /// An egress signing with `credentials` and checking peers against `cache`'s root and
    /// current CRL.
    pub fn new(
        credentials: Arc<CredentialStore>,
        cache: Arc<TrustCache>,
        settings: EgressSettings,
        metrics: Metrics,
    ) -> Self {
        Self {
            credentials,
            cache,
            settings,
            metrics,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Where `host` goes, if anywhere.
    pub fn route(&self, host: &str) -> Option<Route> {
        let host = host.to_ascii_lowercase();
        self.settings.peers.get(&host).cloned().or_else(|| {
            self.settings.default_peer_port.map(|port| Route {
                address: format!("{host}:{port}"),
                expect: Expect::DnsName(host.clone()),
            })
        })
    }

    /// One pooled client per peer name and credentials generation: its TLS config carries
    /// that peer's expectation, and its connections present the certificate of the
    /// credentials that sign the requests sent on them (after a rotation, new requests go
    /// on new connections; requests in flight finish on the old ones).
    fn client(
        &self,
        name: &str,
        route: &Route,
        credentials: &Credentials,
    ) -> Result<PeerClient, String> {
        let generation = credentials.generation;
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((g, c)) = clients.get(name)
            && *g == generation
        {
            return Ok(c.clone());
        }
        let verifier = PeerVerifier {
            cache: Arc::clone(&self.cache),
            chain: CertificateVerifier::new(
                self.cache.verifier().root().clone(),
                VerifySettings {
                    usage: Usage::ServerAuth,
                    ..*self.cache.verifier().settings()
                },
            ),
            expect: route.expect.clone(),
            algorithms: rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms,
        };
        let tls = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
            (*credentials.certified).clone(),
        )));
        let server_name =
            ServerName::try_from(name.to_owned()).map_err(|e| format!("peer name {name}: {e}"))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(self.settings.timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(server_name))
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        clients.insert(name.to_owned(), (generation, client.clone()));
        Ok(client)
    }
}

/// Serves the forward proxy until `shutdown`, then drains.
pub async fn serve(listener: TcpListener, egress: Arc<Egress>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "egress accept failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let egress = Arc::clone(&egress);
        let service = service_fn(move |req| {
            let egress = Arc::clone(&egress);
            async move { Ok::<_, Infallible>(handle(&egress, req).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, "egress connection ended");
            }
        });
    }
    drop(listener);
    let drain = egress.settings.drain;
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain) => tracing::warn!("egress drain timed out"),
    }
}

/// One request from the app. The steps run in order and the first refusal ends the request
/// ([`Refusal::respond`] answers, counts and logs).
pub async fn handle(egress: &Egress, req: Request<Incoming>) -> Response<ResponseBody> {
    match sign_and_relay(egress, req).await {
        Ok(response) => response,
        Err(refusal) => refusal.respond(Direction::Egress, &egress.metrics, None),
    }
}

/// The outbound path: which peer, the canonical target, the body, the signature, the
/// headers the peer owns, then mTLS to the peer.
async fn sign_and_relay(
    egress: &Egress,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Refusal> {
    if req.method() == Method::CONNECT {
        return Err(Refusal::Connect);
    }
    let (mut parts, body) = req.into_parts();
    if parts.uri.scheme_str() != Some("http") {
        return Err(Refusal::NotAbsoluteHttp);
    }
    let host = parts.uri.host().map(str::to_owned).ok_or(Refusal::NoHost)?;
    let route = egress.route(&host).ok_or(Refusal::UnknownPeer)?;
    // The same canonical form the peer's ingress reads: what is signed and sent is what
    // the peer's app will route, and a path the peer would refuse is refused here, where
    // the app can be told why.
    let path_and_query = match request_path::canonical_path(parts.uri.path()) {
        Ok(path) => match parts.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.into_owned(),
        },
        Err(e) => {
            return Err(Refusal::Unreadable {
                label: e.label(),
                reason: format!("the request path cannot be sent: {e}"),
            });
        }
    };
    let body = Limited::new(body, egress.settings.max_body)
        .collect()
        .await
        .map_err(|_| Refusal::BodyTooLarge { close: false })?
        .to_bytes();
    // The destination named in the signature is the peer's name as the app wrote it,
    // without a port: the peer lists that name among those it answers to.
    let destination = host.to_ascii_lowercase();
    let credentials = egress.credentials.current();
    let signed = credentials
        .signer
        .sign(
            &RequestParts::new(parts.method.as_str(), &destination, &path_and_query, &body),
            UnixTime::now(),
        )
        .map_err(|e| Refusal::SigningFailed(e.to_string()))?;
    peer_headers(&mut parts.headers, &signed, &destination);
    parts.uri = format!("https://{}{path_and_query}", route.address)
        .parse::<Uri>()
        .map_err(|_| Refusal::TargetNotForwardable)?;
    parts.version = http::Version::HTTP_11;
    let client = egress
        .client(&destination, &route, &credentials)
        .map_err(|e| Refusal::PeerNameNotUsable(format!("{destination}: {e}")))?;
    let answer = tokio::time::timeout(
        egress.settings.timeout,
        client.request(Request::from_parts(parts, Full::new(body))),
    )
    .await;
    match answer {
        Err(_) => Err(Refusal::PeerTimeout),
        Ok(Err(e)) => {
            let error = format!("{destination} at {}: {e:?}", route.address);
            Err(if error_chain_has_certificate_error(&e) {
                Refusal::PeerCertificate(error)
            } else {
                Refusal::PeerUnreachable(error)
            })
        }
        Ok(Ok(response)) => {
            egress.metrics.request("egress", "forwarded");
            let (mut head, body) = response.into_parts();
            strip_hop_by_hop(&mut head.headers);
            head.headers.remove(http::header::TRANSFER_ENCODING);
            Ok(Response::from_parts(
                head,
                body.map_err(|e| Box::new(e) as crate::body::BoxError)
                    .boxed(),
            ))
        }
    }
}

/// The headers the peer receives: hop-by-hop ones and those the peer owns removed (its
/// identity headers, and the app's own signature headers however spelled, which give way
/// to the sidecar's), the signature set, `Host` the destination.
fn peer_headers(headers: &mut HeaderMap, signed: &SignatureHeaders, destination: &str) {
    strip_hop_by_hop(headers);
    crate::request_view::remove_owned_headers(headers);
    let theirs: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            sig_header::ALL
                .iter()
                .any(|h| crate::request_view::spells(k.as_str(), h))
        })
        .cloned()
        .collect();
    for name in theirs {
        headers.remove(name);
    }
    for (name, value) in signed.pairs() {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(destination) {
        headers.insert(HOST, v);
    }
}

fn error_chain_has_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(rustls::Error::InvalidCertificate(_)) = err.downcast_ref::<rustls::Error>() {
            return true;
        }
        // An io::Error's source() skips the error it wraps (and connectors nest them):
        // walk into the wrapped one.
        current = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

/// Checks a peer sidecar's certificate: our chain rules for serverAuth, the current CRL,
/// and the identity the URL names.
struct PeerVerifier {
    cache: Arc<TrustCache>,
    chain: CertificateVerifier,
    expect: Expect,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("expect", &self.expect)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let crl = self.cache.crl();
        let identity = match self.chain.verify(end_entity, crl.as_deref(), now) {
            Ok(identity) => identity,
            Err(trust_core::Error::CertificateRejected(r)) => {
                tracing::warn!(reason = r.label(), expect = ?self.expect, "peer certificate refused");
                return Err(crate::tls::tls_error(&r));
            }
            Err(e) => {
                tracing::warn!(error = %e, "peer certificate check failed");
                return Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ));
            }
        };
        let named = match &self.expect {
            Expect::Node(id) => {
                matches!(identity.subject, trust_core::Subject::Node(node) if node.get() == *id)
            }
            // DNS names only: a URL by IP text is not vouched for by an IP SAN here.
            Expect::DnsName(name) => trust_core::certificate_names(end_entity)
                .dns
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name)),
        };
        if named {
            Ok(ServerCertVerified::assertion())
        } else {
            tracing::warn!(expect = ?self.expect, got = %identity.spiffe_id, "peer certificate names another node");
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The address a test or the CLI prints for the proxy.
pub fn proxy_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
