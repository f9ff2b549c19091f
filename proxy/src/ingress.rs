//! The sidecar's inbound path: mutual TLS with [`TrustClientVerifier`], then per request
//! re-check the peer against the current CRL, verify the message signature (when present,
//! or when the route requires one), strip any `X-Verified-*` headers that came from
//! outside, set them from what was verified, and forward to the local app.
//!
//! Not yet here (issue 4 continues): the Wasm policy chain (issue 5), HTTP/2 flood limits,
//! streaming of bodies that need no digest, the admin listener and metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CONNECTION, HOST, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use trust_core::signature::{self, verify_request};
use trust_core::{
    PeerIdentity, ReceivedHeaders, RequestParts, SignatureWindow, TrustCache, UnixTime,
};

use crate::tls::TrustClientVerifier;

/// Identity headers the sidecar sets; any that arrive from outside are removed first.
pub const VERIFIED_NODE_ID: &str = "x-verified-node-id";
/// The peer's SPIFFE id.
pub const VERIFIED_SPIFFE_ID: &str = "x-verified-spiffe-id";
/// The peer's roles, comma-separated.
pub const VERIFIED_ROLES: &str = "x-verified-roles";
/// `true` when the request carried a verified message signature.
pub const VERIFIED_SIGNATURE: &str = "x-verified-signature";

/// Hop-by-hop headers (RFC 9110 7.6.1) never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Inbound settings.
#[derive(Debug, Clone)]
pub struct IngressSettings {
    /// The local app (plain HTTP, loopback).
    pub upstream: SocketAddr,
    /// Names this node answers to (`host:port`), for the signature's destination check.
    pub local_authorities: Vec<String>,
    /// Path prefixes where a message signature is required.
    pub signed_prefixes: Vec<String>,
    /// Largest request body (bodies are buffered to digest them).
    pub max_body: usize,
    /// Time the app gets to answer.
    pub upstream_timeout: Duration,
    /// Time a client gets to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Accepted signature age and skew.
    pub window: SignatureWindow,
}

/// The inbound path: TLS config, trust cache, upstream client.
pub struct Ingress {
    cache: Arc<TrustCache>,
    acceptor: TlsAcceptor,
    settings: IngressSettings,
    upstream: Client<HttpConnector, Full<Bytes>>,
}

impl Ingress {
    /// Builds the inbound path serving `cert_chain`/`key` and trusting what `cache` trusts.
    pub fn new(
        cache: Arc<TrustCache>,
        cert_chain: Vec<rustls_pki_types::CertificateDer<'static>>,
        key: rustls_pki_types::PrivateKeyDer<'static>,
        settings: IngressSettings,
    ) -> crate::Result<Self> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_client_cert_verifier(Arc::new(TrustClientVerifier::new(Arc::clone(&cache))))
                    .with_single_cert(cert_chain, key)
            })
            .map_err(|e| crate::Error::Usage(format!("node certificate or key: {e}")))?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.upstream_timeout));
        Ok(Self {
            cache,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            upstream: Client::builder(TokioExecutor::new()).build(connector),
            settings,
        })
    }
}

/// Accepts mTLS connections until `shutdown`, serving each with [`handle`].
pub async fn serve(listener: TcpListener, ingress: Arc<Ingress>, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let ingress = Arc::clone(&ingress);
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(
                ingress.settings.handshake_timeout,
                ingress.acceptor.accept(stream),
            );
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // A resumed session skips the verifier: verify the restored certificate here.
            let Some(cert) = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .cloned()
            else {
                return;
            };
            let identity = match ingress.cache.verify(&cert, now()) {
                Ok(identity) => identity,
                Err(e) => {
                    tracing::info!(%peer, reason = %e, "peer refused after handshake");
                    return;
                }
            };
            let service = service_fn(move |req| {
                let (ingress, identity) = (Arc::clone(&ingress), Arc::clone(&identity));
                async move { Ok::<_, Infallible>(handle(&ingress, &identity, req).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

fn now() -> UnixTime {
    UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

fn refuse(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": reason }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// One inbound request from a verified peer.
pub async fn handle(
    ingress: &Ingress,
    identity: &PeerIdentity,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let time = now();
    if let Err(e) = ingress.cache.check_still_trusted(identity, time) {
        tracing::warn!(peer = %identity.spiffe_id, reason = %e, "request from a peer no longer trusted");
        return refuse(
            StatusCode::FORBIDDEN,
            "peer certificate is no longer trusted",
        );
    }
    let (mut parts, body) = req.into_parts();
    let body = match Limited::new(body, ingress.settings.max_body)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();

    let received = match signature_headers(&parts.headers) {
        Ok(r) => r,
        Err(reason) => return refuse(StatusCode::BAD_REQUEST, &reason),
    };
    let required = ingress
        .settings
        .signed_prefixes
        .iter()
        .any(|p| parts.uri.path().starts_with(p.as_str()));
    let mut signed = false;
    if received.any_present() || required {
        let request_parts = RequestParts::new(parts.method.as_str(), &authority, &path, &body);
        if let Err(r) = verify_request(
            &received,
            &request_parts,
            identity,
            &ingress.settings.local_authorities,
            ingress.settings.window,
            time,
        ) {
            tracing::warn!(peer = %identity.spiffe_id, reason = r.label(), path = %path, "message signature refused");
            return refuse(StatusCode::UNAUTHORIZED, "message signature refused");
        }
        signed = true;
    }

    strip_hop_by_hop(&mut parts.headers);
    let spoofed: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-verified-"))
        .cloned()
        .collect();
    for name in spoofed {
        parts.headers.remove(name);
    }
    let roles = identity
        .roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",");
    for (name, value) in [
        (VERIFIED_NODE_ID, identity.id_string()),
        (VERIFIED_SPIFFE_ID, identity.spiffe_id.clone()),
        (VERIFIED_ROLES, roles),
        (VERIFIED_SIGNATURE, signed.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            parts.headers.insert(HeaderName::from_static(name), v);
        }
    }
    if !parts.headers.contains_key(HOST)
        && let Ok(v) = HeaderValue::from_str(&authority)
    {
        parts.headers.insert(HOST, v);
    }
    let Ok(uri) = format!("http://{}{path}", ingress.settings.upstream).parse::<Uri>() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "request target cannot be forwarded",
        );
    };
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    let upstream_req = Request::from_parts(parts, Full::new(body));
    let answer = tokio::time::timeout(
        ingress.settings.upstream_timeout,
        ingress.upstream.request(upstream_req),
    )
    .await;
    match answer {
        Err(_) => refuse(
            StatusCode::GATEWAY_TIMEOUT,
            "the app did not answer in time",
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "upstream request failed");
            refuse(StatusCode::BAD_GATEWAY, "the app could not be reached")
        }
        Ok(Ok(response)) => {
            let (mut head, body) = response.into_parts();
            match Limited::new(body, 64 * 1024 * 1024).collect().await {
                Ok(bytes) => {
                    strip_hop_by_hop(&mut head.headers);
                    head.headers.remove(http::header::TRANSFER_ENCODING);
                    Response::from_parts(head, Full::new(bytes.to_bytes()))
                }
                Err(_) => refuse(
                    StatusCode::BAD_GATEWAY,
                    "the app's answer could not be read",
                ),
            }
        }
    }
}

/// The five signature headers; a duplicated one is refused (two values could be read
/// differently by the signer and the verifier).
fn signature_headers(headers: &HeaderMap) -> Result<ReceivedHeaders<'_>, String> {
    let one = |name: &'static str| -> Result<Option<&str>, String> {
        let mut values = headers.get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(format!("header {name} appears more than once"));
        }
        first
            .map(|v| {
                v.to_str()
                    .map_err(|_| format!("header {name} is not ASCII"))
            })
            .transpose()
    };
    Ok(ReceivedHeaders {
        from_node: one(signature::header::FROM_NODE)?,
        timestamp: one(signature::header::TIMESTAMP)?,
        nonce: one(signature::header::NONCE)?,
        node_auth: one(signature::header::NODE_AUTH)?,
        signature: one(signature::header::SIGNATURE)?,
    })
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}
