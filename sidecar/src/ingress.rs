//! The sidecar's inbound path: mutual TLS with [`TrustClientVerifier`], then per request
//! re-check the peer against the current CRL, read the request once ([`crate::request_view`]:
//! canonical path, one authority, identity headers from outside removed in every spelling),
//! verify the message signature (when present, or when the route requires one), ask the
//! [`Admission`] policy, set the identity headers from what was verified, and forward to the
//! local app.
//!
//! Limits: connections are counted before `accept` (a full house waits in the kernel's
//! backlog instead of costing memory), handshakes and request heads have deadlines, heads
//! and HTTP/2 streams are bounded, and bodies are buffered (bounded) only where the
//! signature's body digest needs them; otherwise they stream with a size cap.
//!
//! Threads: [`serve_on_threads`] runs one event loop per core; every thread accepts, and
//! [`crate::placement`] gives each new connection to the thread serving the fewest.
//!
//! One reading serves every decision and the forwarded request: the canonical path
//! ([`request_path::canonical_path`]) is what the route prefixes match, what the plugins see
//! and what the app receives; the checked authority is the signature's destination and the
//! app's `Host`. What a check approved is what the app receives.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use first_byte::FirstByteWithin;
use http::header::{HOST, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use request_path::{RoutePrefix, canonical_path};
use rustls::ServerConfig;
use rustls::server::ResolvesServerCert;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use trust_core::signature::{self, verify_request};
use trust_core::{
    PeerIdentity, ReceivedHeaders, RequestParts, SignatureWindow, TrustCache, UnixTime,
};

use crate::log_sampling::Event;
use crate::metrics::Metrics;
use crate::placement::{Arrival, Counted, Placement};
use crate::policy::{Admission, AdmissionRequest, Decision, SignatureFacts};
use crate::refusal::{Direction, Refusal};
use crate::request_view::{
    AuthorityRejection, checked_authority, remove_owned_headers, spells, strip_hop_by_hop,
};
use crate::tls::TrustClientVerifier;
use crate::upstream::UpstreamPool;

pub use crate::body::{BoxError, ResponseBody, UpstreamBody, full};

/// Identity headers the sidecar sets; any that arrive from outside are removed first.
pub const VERIFIED_NODE_ID: &str = "x-verified-node-id";
/// The peer's SPIFFE id.
pub const VERIFIED_SPIFFE_ID: &str = "x-verified-spiffe-id";
/// The peer's roles, comma-separated.
pub const VERIFIED_ROLES: &str = "x-verified-roles";
/// `true` when the request carried a verified message signature.
pub const VERIFIED_SIGNATURE: &str = "x-verified-signature";

/// How far over the body limit a declared body is still read (and discarded) so the
/// client gets its 413 on a usable connection.
const DRAIN_LIMIT: u64 = 1024 * 1024;

/// Inbound settings.
#[derive(Debug, Clone)]
pub struct IngressSettings {
    /// The local app (plain HTTP, loopback).
    pub upstream: SocketAddr,
    /// Names this node answers to (`host` or `host:port`), for the signature's
    /// destination check.
    pub local_authorities: Vec<String>,
    /// Route prefixes where a message signature is required (segment-wise, on the
    /// canonical path).
    pub signed_prefixes: Vec<RoutePrefix>,
    /// Route prefixes reachable without a client certificate (segment-wise, on the
    /// canonical path).
    pub anonymous_prefixes: Vec<RoutePrefix>,
    /// Largest request body.
    pub max_body: usize,
    /// Time the app gets to answer.
    pub upstream_timeout: Duration,
    /// Time a client gets to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a client gets to send a request head.
    pub header_read_timeout: Duration,
    /// Time a client gets to send a body read whole (signed requests), after its head.
    pub body_read_timeout: Duration,
    /// Largest request head, bytes.
    pub max_header_bytes: usize,
    /// Open connections at most.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub http2_max_streams: u32,
    /// Time in-flight requests get after shutdown is asked for.
    pub drain: Duration,
    /// Accepted signature age and skew.
    pub window: SignatureWindow,
}

impl IngressSettings {
    /// Defaults for everything but the app's address.
    pub fn new(upstream: SocketAddr) -> Self {
        Self {
            upstream,
            local_authorities: Vec::new(),
            signed_prefixes: Vec::new(),
            anonymous_prefixes: Vec::new(),
            max_body: 8 * 1024 * 1024,
            upstream_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_connections: 4096,
            http2_max_streams: 256,
            drain: Duration::from_secs(25),
            window: SignatureWindow::default(),
        }
    }
}

/// The inbound path: TLS config, trust cache, policy, upstream client.
pub struct Ingress {
    cache: Arc<TrustCache>,
    acceptor: TlsAcceptor,
    settings: IngressSettings,
    upstream: Arc<UpstreamPool>,
    admission: Arc<dyn Admission>,
    metrics: Metrics,
    connections: Arc<Semaphore>,
}

impl Ingress {
    /// Builds the inbound path serving the certificate `server_cert` resolves (which may
    /// change: rotation) and trusting what `cache` trusts.
    pub fn new(
        cache: Arc<TrustCache>,
        server_cert: Arc<dyn ResolvesServerCert>,
        settings: IngressSettings,
        admission: Arc<dyn Admission>,
        metrics: Metrics,
    ) -> crate::Result<Self> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = TrustClientVerifier::new(Arc::clone(&cache))
            .allow_anonymous(!settings.anonymous_prefixes.is_empty());
        let mut tls = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| crate::SidecarError::Config(format!("TLS versions: {e}")))?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(server_cert);
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            cache,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            upstream: upstream_client(&settings),
            connections: Arc::new(Semaphore::new(settings.max_connections)),
            settings,
            admission,
            metrics,
        })
    }
}

fn upstream_client(settings: &IngressSettings) -> Arc<UpstreamPool> {
    UpstreamPool::new(
        settings.upstream,
        settings.upstream_timeout,
        Duration::from_secs(60),
    )
}

impl Ingress {
    /// A copy for another worker thread: the same TLS config (and session cache), trust
    /// cache, policy, metrics and connection limit, with its own pool of connections to
    /// the app (so a request and its upstream connection live on one thread).
    pub fn worker(&self) -> Self {
        Self {
            cache: Arc::clone(&self.cache),
            acceptor: self.acceptor.clone(),
            settings: self.settings.clone(),
            upstream: upstream_client(&self.settings),
            admission: Arc::clone(&self.admission),
            metrics: self.metrics.clone(),
            connections: Arc::clone(&self.connections),
        }
    }
}

/// Serves `listener` on `threads` OS threads, each with its own single-threaded runtime
/// and its own [`Ingress::worker`] (thread per core, as nginx runs a worker per core: a
/// connection, its requests and their upstream connections never cross threads). Every
/// thread accepts, and [`Placement`] hands each new connection to the thread serving the
/// fewest, so connections opened in a burst still spread over the cores. Returns when
/// every thread has drained after `shutdown`.
pub async fn serve_on_threads(
    listener: TcpListener,
    ingress: Arc<Ingress>,
    shutdown: CancellationToken,
    threads: usize,
) -> std::io::Result<()> {
    let std_listener = listener.into_std()?;
    let mut handles = Vec::new();
    for (i, placed) in Placement::for_threads(threads).into_iter().enumerate() {
        let listener = std_listener.try_clone()?;
        let worker = Arc::new(ingress.worker());
        let shutdown = shutdown.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        handles.push(
            std::thread::Builder::new()
                .name(format!("ingress-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        match TcpListener::from_std(listener) {
                            Ok(l) => serve_placed(l, worker, shutdown, Some(placed)).await,
                            Err(e) => tracing::error!(error = %e, "ingress worker cannot listen"),
                        }
                    });
                })?,
        );
    }
    drop(std_listener);
    tokio::task::spawn_blocking(move || {
        for h in handles {
            let _ = h.join();
        }
    })
    .await
    .map_err(std::io::Error::other)
}

/// Accepts mTLS connections until `shutdown`, serving each with [`handle`]; then stops
/// accepting and lets in-flight requests finish for up to `settings.drain`.
pub async fn serve(listener: TcpListener, ingress: Arc<Ingress>, shutdown: CancellationToken) {
    serve_placed(listener, ingress, shutdown, None).await;
}

/// What woke the accept loop.
enum Next {
    /// This thread accepted a connection (holding its slot under the limit).
    Accepted(OwnedSemaphorePermit, tokio::net::TcpStream, SocketAddr),
    /// Another thread accepted one for this thread to serve.
    HandedOver(Arrival),
    /// No other thread can hand connections over any more.
    InboxClosed,
}

/// [`serve`], and with `placed` one of [`serve_on_threads`]'s threads: connections it
/// accepts may be handed to a less busy thread, and connections other threads hand over
/// arrive in its inbox.
async fn serve_placed(
    listener: TcpListener,
    ingress: Arc<Ingress>,
    shutdown: CancellationToken,
    placed: Option<(Placement, UnboundedReceiver<Arrival>)>,
) {
    let connections = TaskTracker::new();
    let (placement, mut inbox) = match placed {
        Some((placement, inbox)) => (Some(placement), Some(inbox)),
        None => (None, None),
    };
    // Connections to the app left idle by a burst are closed once stale, traffic or not.
    tokio::spawn({
        let (pool, stop) = (Arc::clone(&ingress.upstream), shutdown.clone());
        async move { pool.close_stale_until(stop.cancelled_owned()).await }
    });
    // This thread's share of the open connections, when it is one of several.
    let on_thread = placement.as_ref().map(|p| {
        ingress
            .metrics
            .thread_connections
            .with_label_values(&[p.me().to_string()])
    });
    loop {
        // Both branches are cancel-safe: a slot taken by a losing branch is returned, and
        // `accept` and `recv` lose nothing when dropped. The slot is taken before
        // accepting: at the limit, clients wait in the kernel's backlog and cost nothing.
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            arrival = next_arrival(&mut inbox) => match arrival {
                Some(arrival) => Next::HandedOver(arrival),
                None => Next::InboxClosed,
            },
            accepted = accept_with_slot(&listener, &ingress.connections) => match accepted {
                Ok(Some((permit, stream, peer))) => Next::Accepted(permit, stream, peer),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let (permit, stream, peer, counted) = match next {
            Next::InboxClosed => {
                inbox = None;
                continue;
            }
            Next::HandedOver(a) => match tokio::net::TcpStream::from_std(a.stream) {
                Ok(stream) => (a.permit, stream, a.peer, Some(a.counted)),
                Err(e) => {
                    tracing::warn!(error = %e, peer = %a.peer, "cannot take over a connection from another ingress thread");
                    continue;
                }
            },
            Next::Accepted(permit, stream, peer) => match &placement {
                None => (permit, stream, peer, None),
                Some(placement) => match place(placement, permit, stream, peer) {
                    Some((permit, stream, peer, counted)) => (permit, stream, peer, Some(counted)),
                    None => continue,
                },
            },
        };
        let _ = stream.set_nodelay(true);
        let held = (permit, counted);
        connections.spawn(serve_counted(
            Arc::clone(&ingress),
            stream,
            peer,
            shutdown.child_token(),
            on_thread.clone(),
            held,
        ));
    }
    drop(listener);
    // Threads still accepting now serve their connections themselves.
    drop(inbox);
    connections.close();
    tokio::select! {
        () = connections.wait() => tracing::info!("ingress drained"),
        _ = tokio::time::sleep(ingress.settings.drain) => {
            tracing::warn!(grace = ?ingress.settings.drain, "ingress drain timed out; closing the remaining connections");
        }
    }
}

/// A connection this thread accepted, placed on the thread serving the fewest: handed over
/// (`None`) or kept, with its place in this thread's count (handed back when the other
/// thread's inbox is gone).
fn place(
    placement: &Placement,
    permit: OwnedSemaphorePermit,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) -> Option<(
    OwnedSemaphorePermit,
    tokio::net::TcpStream,
    SocketAddr,
    Counted,
)> {
    let (thread, counted) = placement.claim();
    if thread == placement.me() {
        return Some((permit, stream, peer, counted));
    }
    match hand_over(placement, thread, permit, stream, peer, counted) {
        Ok(()) => None,
        Err(back) => Some((back.permit, back.stream, back.peer, back.counted)),
    }
}

/// Serves one connection, counted in the open-connection gauges (the sidecar's and this
/// thread's) while it lasts; `held` (its slot under the limit and its place in the
/// thread's count) is released when it ends. Cancelling `close` (a child of the ingress's
/// shutdown) ends it gracefully.
async fn serve_counted(
    ingress: Arc<Ingress>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    close: CancellationToken,
    on_thread: Option<prometheus::IntGauge>,
    held: (OwnedSemaphorePermit, Option<Counted>),
) {
    let _held = held;
    ingress.metrics.connections.inc();
    if let Some(g) = &on_thread {
        g.inc();
    }
    serve_connection(&ingress, stream, peer, close).await;
    if let Some(g) = &on_thread {
        g.dec();
    }
    ingress.metrics.connections.dec();
}

/// The next connection another thread handed over; `None` once none can come. Without
/// an inbox (a lone [`serve`]), never ready.
async fn next_arrival(inbox: &mut Option<UnboundedReceiver<Arrival>>) -> Option<Arrival> {
    match inbox {
        Some(inbox) => inbox.recv().await,
        None => std::future::pending().await,
    }
}

/// A slot under the connection limit, then a connection; `Ok(None)` when the limit's
/// semaphore is closed (never, in practice: nothing closes it).
async fn accept_with_slot(
    listener: &TcpListener,
    connections: &Arc<Semaphore>,
) -> std::io::Result<Option<(OwnedSemaphorePermit, tokio::net::TcpStream, SocketAddr)>> {
    let Ok(permit) = Arc::clone(connections).acquire_owned().await else {
        return Ok(None);
    };
    let (stream, peer) = listener.accept().await?;
    Ok(Some((permit, stream, peer)))
}

/// Moves a connection this thread accepted to `thread`'s reactor and inbox; gives it back
/// (as a stream of this thread again) when that fails, for this thread to serve.
fn hand_over(
    placement: &Placement,
    thread: usize,
    permit: OwnedSemaphorePermit,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    counted: Counted,
) -> Result<(), Returned> {
    let std_stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            // Deregistering failed; the socket is gone with the error.
            tracing::warn!(error = %e, %peer, "cannot hand a connection to another ingress thread");
            return Ok(());
        }
    };
    let arrival = Arrival {
        stream: std_stream,
        peer,
        permit,
        counted,
    };
    match placement.hand_over(thread, arrival) {
        Ok(()) => Ok(()),
        Err(back) => match tokio::net::TcpStream::from_std(back.stream) {
            Ok(stream) => Err(Returned {
                permit: back.permit,
                stream,
                peer: back.peer,
                counted: back.counted,
            }),
            Err(e) => {
                tracing::warn!(error = %e, %peer, "cannot serve a connection another ingress thread refused");
                Ok(())
            }
        },
    }
}

/// A connection [`hand_over`] could not place, back on this thread.
struct Returned {
    permit: OwnedSemaphorePermit,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    counted: Counted,
}

/// The TLS handshake under its deadline, then the peer's certificate verified again
/// through the trust cache (a resumed session skips the verifier). `None` if refused, the
/// refusal counted and logged; else the stream and the peer, if it presented a certificate.
async fn handshake(
    ingress: &Ingress,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    Option<Arc<ConnectionPeer>>,
)> {
    let handshake = tokio::time::timeout(
        ingress.settings.handshake_timeout,
        ingress.acceptor.accept(stream),
    );
    let tls = match handshake.await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = if e.get_ref().is_some_and(|inner| {
                inner.downcast_ref::<rustls::Error>().is_some_and(|r| {
                    matches!(
                        r,
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::NoCertificatesPresented
                    )
                })
            }) {
                "certificate"
            } else {
                "protocol"
            };
            ingress
                .metrics
                .handshake_failures
                .with_label_values(&[reason])
                .inc();
            if ingress
                .metrics
                .log
                .admit(Event::TlsHandshakeRefused, Some(peer.ip()))
            {
                tracing::info!(%peer, error = %e, "TLS handshake refused");
            }
            return None;
        }
        Err(_) => {
            ingress
                .metrics
                .handshake_failures
                .with_label_values(&["timeout"])
                .inc();
            if ingress
                .metrics
                .log
                .admit(Event::TlsHandshakeTimeout, Some(peer.ip()))
            {
                tracing::info!(%peer, "TLS handshake timed out");
            }
            return None;
        }
    };
    // A resumed session skips the verifier: verify the restored certificate here.
    let identity = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        Some(cert) => match ingress.cache.verify(cert, UnixTime::now()) {
            Ok(identity) => Some(identity),
            Err(e) => {
                ingress
                    .metrics
                    .handshake_failures
                    .with_label_values(&["certificate"])
                    .inc();
                if ingress
                    .metrics
                    .log
                    .admit(Event::PeerRefusedAfterHandshake, Some(peer.ip()))
                {
                    tracing::info!(%peer, reason = %e, "peer refused after handshake");
                }
                return None;
            }
        },
        None => None,
    };
    Some((
        tls,
        identity.map(|identity| Arc::new(ConnectionPeer::new(identity))),
    ))
}

/// One connection: the handshake, then HTTP until the client leaves, the connection fails,
/// or `close` is cancelled (the sidecar shuts down, or a refusal ended the connection:
/// [`Refusal::ends_connection`]), which ends it gracefully (HTTP/1: after the answer in
/// flight; HTTP/2: GOAWAY, streams in flight finish).
async fn serve_connection(
    ingress: &Arc<Ingress>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    close: CancellationToken,
) {
    let Some((tls, verified)) = handshake(ingress, stream, peer).await else {
        return;
    };
    let client = Client {
        peer: verified,
        address: peer.ip(),
        close: close.clone(),
    };
    let service = {
        let ingress = Arc::clone(ingress);
        service_fn(move |req| {
            let (ingress, client) = (Arc::clone(&ingress), client.clone());
            async move { Ok::<_, Infallible>(handle(&ingress, &client, req).await) }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ingress.settings.header_read_timeout)
        .max_buf_size(ingress.settings.max_header_bytes.max(8192))
        .writev(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(ingress.settings.http2_max_streams)
        .max_header_list_size(u32::try_from(ingress.settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(64))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    // The first byte has a deadline too: the protocol detection before hyper's own timers
    // would wait for it for ever.
    let tls = FirstByteWithin::new(tls, ingress.settings.header_read_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(tls), service)
        .into_owned();
    let mut connection = std::pin::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = close.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// Who is on a connection, for each of its requests.
#[derive(Clone)]
pub struct Client {
    /// The verified peer; `None` for an anonymous client.
    pub peer: Option<Arc<ConnectionPeer>>,
    /// The remote address (the key of log sampling).
    pub address: std::net::IpAddr,
    /// Cancelled to end the connection after the answer.
    pub close: CancellationToken,
}

fn covered(prefixes: &[RoutePrefix], path: &str) -> bool {
    prefixes.iter().any(|p| p.covers(path))
}

/// A connection's verified peer, with the identity headers the app receives rendered once
/// per connection rather than per request.
pub struct ConnectionPeer {
    identity: Arc<PeerIdentity>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ConnectionPeer {
    /// The peer `identity` and its `X-Verified-*` headers.
    pub fn new(identity: Arc<PeerIdentity>) -> Self {
        let roles = identity
            .roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let headers = [
            (VERIFIED_NODE_ID, identity.id_string()),
            (VERIFIED_SPIFFE_ID, identity.spiffe_id.clone()),
            (VERIFIED_ROLES, roles),
        ]
        .into_iter()
        .filter_map(|(name, value)| {
            HeaderValue::from_str(&value)
                .ok()
                .map(|v| (HeaderName::from_static(name), v))
        })
        .collect();
        Self { identity, headers }
    }
}

/// One inbound request from `client`. The steps run in order and the first refusal ends
/// the request ([`Refusal::respond`] answers, counts and logs), and the connection too
/// when the client can never be admitted on it.
pub async fn handle(
    ingress: &Ingress,
    client: &Client,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    match admit_and_forward(ingress, client, req).await {
        Ok(response) => response,
        Err(refusal) => {
            if refusal.ends_connection() {
                client.close.cancel();
            }
            refusal.respond(Direction::Ingress, &ingress.metrics, Some(client.address))
        }
    }
}

/// The request path: re-check the peer, limits, the one reading, signature, policy,
/// identity headers, forward.
async fn admit_and_forward(
    ingress: &Ingress,
    client: &Client,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Refusal> {
    let peer = client.peer.as_deref();
    let identity = peer.map(|p| &*p.identity);
    let time = UnixTime::now();
    let started = Instant::now();
    if let Some(identity) = identity {
        ingress
            .cache
            .check_still_trusted(identity, time)
            .map_err(|e| Refusal::PeerNoLongerTrusted(format!("{}: {e}", identity.spiffe_id)))?;
    }
    let (mut parts, body) = req.into_parts();
    let body = within_declared_limit(ingress, &parts.headers, body).await?;
    // The one reading: every check below, the plugins and the app use it.
    let uri = std::mem::take(&mut parts.uri);
    let view = RequestView::read(&uri, &mut parts.headers, &ingress.metrics)?;
    if identity.is_none() && !covered(&ingress.settings.anonymous_prefixes, &view.path) {
        return Err(Refusal::CertificateRequired);
    }
    let (body, verified) =
        check_signature(ingress, identity, &parts, &uri, &view, body, time).await?;
    ingress
        .metrics
        .verification
        .observe(started.elapsed().as_secs_f64());
    strip_hop_by_hop(&mut parts.headers);
    ask_policy(ingress, client, &parts, &view, verified.as_ref(), time)?;
    set_identity_headers(&mut parts.headers, peer, verified.is_some(), &view);
    parts.uri = view.origin_form(&uri)?;
    parts.version = http::Version::HTTP_11;
    forward(ingress, Request::from_parts(parts, body)).await
}

/// The body, unless its declared length is over the limit. A body not much over is read
/// and discarded first, so the client reads the 413 instead of a reset and the connection
/// stays usable (nginx's lingering close does the same); a far larger one closes it.
async fn within_declared_limit(
    ingress: &Ingress,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Incoming, Refusal> {
    let max = ingress.settings.max_body as u64;
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(n) = declared.filter(|n| *n > max) else {
        return Ok(body);
    };
    let drained = n <= max + DRAIN_LIMIT
        && tokio::time::timeout(
            ingress.settings.upstream_timeout,
            Limited::new(body, DRAIN_LIMIT as usize + ingress.settings.max_body).collect(),
        )
        .await
        .is_ok_and(|r| r.is_ok());
    Err(Refusal::BodyTooLarge { close: !drained })
}

/// The request's one reading (see [`crate::request_view`]): its canonical path and query,
/// and the authority the signature is checked against and the app receives. Identity
/// headers from outside are removed here, before anything reads the headers.
struct RequestView<'u> {
    path: Cow<'u, str>,
    query: Option<&'u str>,
    host: HeaderValue,
}

impl<'u> RequestView<'u> {
    fn read(uri: &'u Uri, headers: &mut HeaderMap, metrics: &Metrics) -> Result<Self, Refusal> {
        let path = canonical_path(uri.path()).map_err(|e| Refusal::Unreadable {
            label: e.label(),
            reason: format!("request path refused: {e}"),
        })?;
        let host = checked_authority(uri, headers).map_err(|e| Refusal::Unreadable {
            label: e.label(),
            reason: e.reason().to_owned(),
        })?;
        if host.to_str().is_err() {
            // `checked_authority` gives only visible ASCII; refused rather than assumed.
            return Err(Refusal::Unreadable {
                label: AuthorityRejection::Malformed.label(),
                reason: AuthorityRejection::Malformed.reason().to_owned(),
            });
        }
        let removed = remove_owned_headers(headers);
        if removed > 0 {
            metrics.identity_headers_removed.inc_by(removed as u64);
            tracing::debug!(removed, "identity headers from outside removed");
        }
        Ok(Self {
            path,
            query: uri.query(),
            host,
        })
    }

    /// The checked authority as text (visible ASCII, checked in [`Self::read`]).
    fn authority(&self) -> &str {
        self.host.to_str().unwrap_or_default()
    }

    /// Origin form for the app: the request's own path and query when the path was
    /// already canonical (no copy), otherwise the canonical path with the query as sent.
    fn origin_form(&self, uri: &Uri) -> Result<Uri, Refusal> {
        match (&self.path, uri.path_and_query()) {
            (Cow::Borrowed(_), Some(pq)) => Ok(Uri::from(pq.clone())),
            _ => {
                let target = match self.query {
                    Some(q) => format!("{}?{q}", self.path),
                    None => self.path.clone().into_owned(),
                };
                target
                    .parse::<Uri>()
                    .map_err(|_| Refusal::TargetNotForwardable)
            }
        }
    }
}

/// Verifies the message signature when any of its headers is present or the route
/// requires one, reading the body whole (bounded in size and in time) for its digest;
/// otherwise the body streams to the app under the size cap.
async fn check_signature(
    ingress: &Ingress,
    identity: Option<&PeerIdentity>,
    parts: &http::request::Parts,
    uri: &Uri,
    view: &RequestView<'_>,
    body: Incoming,
    time: UnixTime,
) -> Result<(UpstreamBody, Option<trust_core::VerifiedSignature>), Refusal> {
    let received = signature_headers(&parts.headers).map_err(Refusal::SignatureHeaders)?;
    let required = covered(&ingress.settings.signed_prefixes, &view.path);
    if !received.any_present() && !required {
        return Ok((Limited::new(body, ingress.settings.max_body).boxed(), None));
    }
    // Bounded in size and in time: a client trickling a body must not hold the connection
    // (and the buffer) for ever.
    let read = tokio::time::timeout(
        ingress.settings.body_read_timeout,
        Limited::new(body, ingress.settings.max_body).collect(),
    );
    let bytes = match read.await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => return Err(Refusal::BodyTooLarge { close: false }),
        Err(_) => return Err(Refusal::BodyTooSlow),
    };
    let signer = identity.ok_or(Refusal::SignatureWithoutCertificate)?;
    // The signature covers the target as the client sent it; the app receives its
    // canonical form, a function of those very bytes.
    let raw_target = uri.path_and_query().map_or("/", |p| p.as_str());
    let request_parts =
        RequestParts::new(parts.method.as_str(), view.authority(), raw_target, &bytes);
    let verified = verify_request(
        &received,
        &request_parts,
        signer,
        &ingress.settings.local_authorities,
        ingress.settings.window,
        time,
    )
    .map_err(|rejection| Refusal::Signature {
        rejection,
        peer: signer.spiffe_id.clone(),
    })?;
    Ok((full(bytes), Some(verified)))
}

/// The admission step. A denial is logged here as the decision record (who, what, which
/// plugin and version, why) and returned as a [`Refusal::Policy`].
fn ask_policy(
    ingress: &Ingress,
    client: &Client,
    parts: &http::request::Parts,
    view: &RequestView<'_>,
    verified: Option<&trust_core::VerifiedSignature>,
    time: UnixTime,
) -> Result<(), Refusal> {
    let identity = client.peer.as_deref().map(|p| &*p.identity);
    let decision = ingress.admission.decide(&AdmissionRequest {
        method: parts.method.as_str(),
        path: &view.path,
        query: view.query,
        headers: &parts.headers,
        peer: identity,
        signature: verified.map(|v| SignatureFacts {
            node: &v.node,
            timestamp: v.timestamp,
            nonce: &v.nonce,
        }),
        received_at: time,
    });
    let Decision::Deny {
        status,
        reason,
        by,
        signature,
    } = decision
    else {
        return Ok(());
    };
    if ingress
        .metrics
        .log
        .admit(Event::PolicyDenied, Some(client.address))
    {
        tracing::info!(
            peer = identity.map_or("anonymous", |i| i.spiffe_id.as_str()),
            method = %parts.method,
            path = %view.path,
            plugin = %by,
            %reason,
            "request denied by policy"
        );
    }
    Err(Refusal::Policy {
        status,
        reason,
        by,
        signature,
    })
}

/// The identity headers from what was verified, and the checked authority as `Host`.
fn set_identity_headers(
    headers: &mut HeaderMap,
    peer: Option<&ConnectionPeer>,
    signed: bool,
    view: &RequestView<'_>,
) {
    if let Some(peer) = peer {
        for (name, value) in &peer.headers {
            headers.insert(name.clone(), value.clone());
        }
    }
    headers.insert(
        HeaderName::from_static(VERIFIED_SIGNATURE),
        HeaderValue::from_static(if signed { "true" } else { "false" }),
    );
    // The authority the signature was checked against is the one the app receives.
    headers.insert(HOST, view.host.clone());
}

/// Sends the request to the app and streams its answer back.
async fn forward(
    ingress: &Ingress,
    request: Request<UpstreamBody>,
) -> Result<Response<ResponseBody>, Refusal> {
    let answer = within(
        ingress.settings.upstream_timeout,
        ingress.settings.header_read_timeout,
        ingress.upstream.send(request),
    )
    .await;
    match answer {
        None => Err(Refusal::AppTimeout),
        Some(Err(refusal)) => Err(refusal),
        Some(Ok(response)) => {
            ingress.metrics.request("ingress", "forwarded");
            let (mut head, body) = response.into_parts();
            strip_hop_by_hop(&mut head.headers);
            head.headers.remove(http::header::TRANSFER_ENCODING);
            Ok(Response::from_parts(
                head,
                body.map_err(|e| Box::new(e) as BoxError).boxed(),
            ))
        }
    }
}

/// `future` under a deadline `limit` from now, armed as timers of at most `step` each;
/// `None` when the deadline passed first.
///
/// Why in steps: tokio's timer driver is woken (an eventfd write, then one more epoll event)
/// whenever a timer is armed earlier than the earliest one it last went to sleep with.
/// hyper arms the next request's header-read timer as each answer is written; with the
/// upstream timer longer than that, every request paid that wake-up (seen with strace: one
/// `write` to the eventfd per request). With `step` the header-read timeout, neither timer is
/// ever armed earlier than the one before it.
pub async fn within<F: std::future::Future>(
    limit: Duration,
    step: Duration,
    future: F,
) -> Option<F::Output> {
    let deadline = tokio::time::Instant::now() + limit;
    let step = step.max(Duration::from_millis(1));
    let mut future = std::pin::pin!(future);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        if let Ok(out) = tokio::time::timeout(left.min(step), future.as_mut()).await {
            return Some(out);
        }
    }
}

/// The five signature headers. A duplicated one is refused, and so is one spelled with `_`
/// (`X_From_Node`), which CGI-style servers read as the same header: two values could be
/// read differently by the verifier and the app.
fn signature_headers(headers: &HeaderMap) -> Result<ReceivedHeaders<'_>, String> {
    // One pass over the headers (most requests carry a handful) instead of five lookups.
    let mut found: [Option<&str>; 5] = [None; 5];
    for (name, value) in headers {
        let name = name.as_str();
        if !(name.starts_with("x-") || name.starts_with("x_")) {
            continue;
        }
        let Some(i) = signature::header::ALL.iter().position(|h| spells(name, h)) else {
            continue;
        };
        if name != signature::header::ALL[i] {
            return Err(format!(
                "header {name} spells a signature header with '_': send {}",
                signature::header::ALL[i]
            ));
        }
        if found[i].is_some() {
            return Err(format!("header {name} appears more than once"));
        }
        found[i] = Some(
            value
                .to_str()
                .map_err(|_| format!("header {name} is not ASCII"))?,
        );
    }
    let [from_node, timestamp, nonce, node_auth, signature] = found;
    Ok(ReceivedHeaders {
        from_node,
        timestamp,
        nonce,
        node_auth,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::within;

    #[tokio::test(start_paused = true)]
    async fn a_deadline_armed_in_steps_ends_at_the_limit_not_at_a_step() {
        // A limit over several steps, and a step longer than the limit (one timer).
        for (limit, step) in [(25, 10), (3, 10)] {
            let started = tokio::time::Instant::now();
            let never = std::future::pending::<()>();
            let limit = Duration::from_secs(limit);
            assert_eq!(within(limit, Duration::from_secs(step), never).await, None);
            assert_eq!(started.elapsed(), limit);
        }

        // An answer after the first step is still taken.
        let started = tokio::time::Instant::now();
        let late = async {
            tokio::time::sleep(Duration::from_secs(15)).await;
            "answer"
        };
        assert_eq!(
            within(Duration::from_secs(25), Duration::from_secs(10), late).await,
            Some("answer")
        );
        assert_eq!(started.elapsed(), Duration::from_secs(15));
    }
}
