//! The HTTP API (`/trust/*`, `/metrics`, `/healthz`, `/readyz`) over hyper 1, and the
//! accept loop: a connection permit before accept, header-read timeout, graceful drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use trust_core::UnixTime;

use crate::error::{Error, Result};
use crate::service::{Authority, EnrollRequest};

/// Most connections served at once; further clients wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time a client gets to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time in-flight requests get to finish after shutdown is asked.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

type Body = Full<Bytes>;

/// Serves the API on `listener` until `shutdown` is cancelled, then drains in-flight
/// requests for up to [`DRAIN_GRACE`]. Also re-publishes the CRL when it is half-way
/// through its validity.
pub async fn run(
    listener: TcpListener,
    authority: Arc<Authority>,
    shutdown: CancellationToken,
) -> Result<()> {
    run_scoped(listener, authority, shutdown, Scope::Full).await
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole API. Bind it to loopback: the authority's own sidecar fronts it and its
    /// policy decides who may revoke.
    Full,
    /// What a node needs before it can reach the authority's sidecar, for a listener on
    /// the network: `/trust/enroll` (bootstrap token), `/trust/renew` (signed by the node's
    /// current key), `/trust/crl`, `/trust/ca-certificate`, `/metrics`, `/healthz`,
    /// `/readyz`. Everything else answers 404, and `X-Verified-*` headers are ignored.
    Enrollment,
}

impl Scope {
    fn serves(self, path: &str) -> bool {
        match self {
            Self::Full => true,
            Self::Enrollment => matches!(
                path,
                "/trust/enroll"
                    | "/trust/renew"
                    | "/trust/crl"
                    | "/trust/ca-certificate"
                    | "/metrics"
                    | "/healthz"
                    | "/readyz"
            ),
        }
    }
}

/// As [`run`], serving only the routes `scope` allows. The CRL re-publisher runs with the
/// [`Scope::Full`] listener only.
pub async fn run_scoped(
    listener: TcpListener,
    authority: Arc<Authority>,
    shutdown: CancellationToken,
    scope: Scope,
) -> Result<()> {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let refresher = (scope == Scope::Full)
        .then(|| tokio::spawn(refresh_crl(Arc::clone(&authority), shutdown.clone())));
    // The sampler is shared by both listeners; the full one writes its summaries.
    let summaries = (scope == Scope::Full).then(|| {
        let (app, stop) = (Arc::clone(&authority), shutdown.clone());
        tokio::spawn(async move {
            app.metrics()
                .log
                .summarise_until(stop.cancelled_owned())
                .await;
        })
    });
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let app = Arc::clone(&authority);
        let service = service_fn(move |req| {
            let app = Arc::clone(&app);
            async move { Ok::<_, Infallible>(handle(app, req, peer, scope).await) }
        });
        // The first byte has a deadline: hyper's protocol detection has none.
        let stream = first_byte::FirstByteWithin::new(stream, HEADER_READ_TIMEOUT);
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    if let Some(refresher) = refresher {
        refresher.abort();
    }
    if let Some(summaries) = summaries {
        let _ = summaries.await;
    }
    authority.closing().cancel();
    if tokio::time::timeout(DRAIN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some requests did not finish within the drain grace period");
    }
    Ok(())
}

async fn refresh_crl(authority: Arc<Authority>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let app = Arc::clone(&authority);
        match tokio::task::spawn_blocking(move || app.refresh_crl_if_due(UnixTime::now())).await {
            Ok(Ok(true)) => tracing::info!(crl_number = authority.crl().number, "CRL re-published"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "CRL re-publication failed"),
            Err(e) => tracing::error!(error = %e, "CRL re-publication task failed"),
        }
    }
}

async fn handle(
    app: Arc<Authority>,
    req: Request<Incoming>,
    peer: SocketAddr,
    scope: Scope,
) -> Response<Body> {
    let started = Instant::now();
    if !scope.serves(req.uri().path()) {
        app.metrics()
            .observe_request("not_served", StatusCode::NOT_FOUND.as_u16(), started);
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "this listener serves enrollment only; the rest of /trust/* is behind the authority's sidecar"}),
        );
    }
    // The authority's own sidecar strips X-Verified-* from outside and sets them from the
    // verified client certificate; on loopback that is the only writer.
    if let Some(id) = (scope == Scope::Full)
        .then(|| req.headers().get("x-verified-node-id"))
        .flatten()
        .and_then(|v| v.to_str().ok())
    {
        let (a, id) = (Arc::clone(&app), id.to_owned());
        let _ = tokio::task::spawn_blocking(move || a.seen(&id, UnixTime::now())).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let (route, result) = route(&app, req).await;
    let response = result.unwrap_or_else(|e| {
        if e.status().is_server_error() {
            tracing::error!(%peer, %method, %path, error = %e, blame = e.blame(), "request failed");
        } else if app
            .metrics()
            .log
            .admit(crate::metrics::Event::RequestRefused, Some(peer.ip()))
        {
            tracing::info!(%peer, %method, %path, reason = %e, blame = e.blame(), "request refused");
        }
        let mut answer = json(e.status(), &serde_json::json!({ "error": e.public_reason() }));
        if matches!(e, Error::TooLarge(_)) {
            // The rest of the body was not read, so this connection cannot carry another
            // request: say so, or a client reuses it and its next request fails.
            answer.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        answer
    });
    app.metrics()
        .observe_request(route, response.status().as_u16(), started);
    response
}

/// Dispatches on method and path; returns the route label for metrics.
async fn route(
    app: &Arc<Authority>,
    req: Request<Incoming>,
) -> (&'static str, Result<Response<Body>>) {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    let allowed =
        |ok: bool, f: Result<Response<Body>>| if ok { f } else { Err(Error::MethodNotAllowed) };
    match segments.as_slice() {
        ["healthz"] => (
            "healthz",
            allowed(
                get,
                Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
            ),
        ),
        ["readyz"] => ("readyz", allowed(get, Ok(ready(app)))),
        ["metrics"] => ("metrics", allowed(get, Ok(metrics(app).await))),
        ["metrics", "summary"] => (
            "metrics_summary",
            allowed(
                get,
                blocking(app, |a| {
                    Ok(json(StatusCode::OK, &a.summary(UnixTime::now())))
                })
                .await,
            ),
        ),
        ["trust", "status"] => (
            "status",
            allowed(
                get,
                blocking(app, |a| {
                    Ok(json(StatusCode::OK, &a.status(UnixTime::now())))
                })
                .await,
            ),
        ),
        ["trust", "nodes"] => (
            "nodes",
            allowed(
                get,
                blocking(app, |a| {
                    Ok(json(
                        StatusCode::OK,
                        &trust_api::NodesResponse {
                            nodes: a.nodes(UnixTime::now()),
                        },
                    ))
                })
                .await,
            ),
        ),
        ["trust", "ca-certificate"] => (
            "ca_certificate",
            allowed(
                get,
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({"certificate": app.ca_certificate()}),
                )),
            ),
        ),
        ["trust", "crl"] => (
            "crl",
            if get {
                crl(app, &req).await
            } else {
                Err(Error::MethodNotAllowed)
            },
        ),
        ["trust", "certificate", id] => {
            let id = (*id).to_owned();
            (
                "certificate",
                if get {
                    blocking(app, move |a| {
                        Ok(json(
                            StatusCode::OK,
                            &serde_json::json!({"certificate": a.certificate(&id)?}),
                        ))
                    })
                    .await
                } else {
                    Err(Error::MethodNotAllowed)
                },
            )
        }
        ["trust", "verify", id] => {
            let id = (*id).to_owned();
            (
                "verify",
                if post {
                    blocking(app, move |a| {
                        Ok(json(StatusCode::OK, &a.verify(&id, UnixTime::now())?))
                    })
                    .await
                } else {
                    Err(Error::MethodNotAllowed)
                },
            )
        }
        ["trust", "revoke", id] => {
            let id = (*id).to_owned();
            (
                "revoke",
                if post {
                    blocking(app, move |a| {
                        Ok(json(StatusCode::OK, &a.revoke(&id, UnixTime::now())?))
                    })
                    .await
                } else {
                    Err(Error::MethodNotAllowed)
                },
            )
        }
        ["trust", "renew"] => (
            "renew",
            if post {
                renew(app, req).await
            } else {
                Err(Error::MethodNotAllowed)
            },
        ),
        ["trust", "enroll"] => (
            "enroll",
            if post {
                enroll(app, req).await
            } else {
                Err(Error::MethodNotAllowed)
            },
        ),
        _ => ("unknown", Err(Error::NotFound(format!("no route {path}")))),
    }
}

/// Runs authority logic (which signs and fsyncs) on the blocking pool.
async fn blocking(
    app: &Arc<Authority>,
    f: impl FnOnce(&Authority) -> Result<Response<Body>> + Send + 'static,
) -> Result<Response<Body>> {
    let app = Arc::clone(app);
    tokio::task::spawn_blocking(move || f(&app))
        .await
        .map_err(|e| Error::Internal(format!("task failed: {e}")))
        .and_then(|r| r)
}

async fn renew(app: &Arc<Authority>, req: Request<Incoming>) -> Result<Response<Body>> {
    let signed = Signed::of(&req)?;
    let body = read_body(app, req).await?;
    blocking(app, move |a| {
        let request = signed.request(&body);
        Ok(json(StatusCode::OK, &a.renew(&request, UnixTime::now())?))
    })
    .await
}

/// What a node's signature covers, owned so it can move to the blocking pool.
struct Signed {
    headers: Vec<Option<String>>,
    host: String,
    path: String,
}

impl Signed {
    /// The signature headers (each at most once, ASCII), `Host`, and the path and query.
    fn of(req: &Request<Incoming>) -> Result<Self> {
        let mut headers = Vec::with_capacity(5);
        for name in trust_core::signature::header::ALL {
            let mut values = req.headers().get_all(name).iter();
            let value = values
                .next()
                .map(|v| v.to_str().map(str::to_owned))
                .transpose()
                .map_err(|_| Error::BadRequest(format!("header {name} is not ASCII")))?;
            if values.next().is_some() {
                return Err(Error::BadRequest(format!("header {name} appears twice")));
            }
            headers.push(value);
        }
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| Error::BadRequest("a Host header is required".into()))?;
        let path = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
        Ok(Self {
            headers,
            host,
            path,
        })
    }

    /// Whether the request carries a signature at all (an anonymous CRL poll does not).
    fn present(&self) -> bool {
        self.headers.iter().any(Option::is_some)
    }

    fn request<'a>(&'a self, body: &'a [u8]) -> crate::service::SignedRequest<'a> {
        let header = |i: usize| self.headers.get(i).and_then(|h| h.as_deref());
        crate::service::SignedRequest {
            headers: trust_core::ReceivedHeaders {
                from_node: header(0),
                timestamp: header(1),
                nonce: header(2),
                node_auth: header(3),
                signature: header(4),
            },
            host: &self.host,
            path: &self.path,
            body,
        }
    }
}

/// A signed CRL poll says the node is running and what it is; a poll whose signature
/// or declaration is refused still gets the CRL (it is public), but counts for nothing.
async fn announce(app: &Arc<Authority>, req: &Request<Incoming>) {
    let signed = match Signed::of(req) {
        Ok(s) if s.present() => s,
        Ok(_) => return,
        Err(e) => {
            tracing::debug!(error = %e, "CRL poll with unusable signature headers");
            return;
        }
    };
    let a = Arc::clone(app);
    let announced =
        tokio::task::spawn_blocking(move || a.announce(&signed.request(&[]), UnixTime::now()))
            .await;
    if let Ok(Err(e)) = announced {
        tracing::debug!(error = %e, "CRL poll announcement refused");
    }
}

/// Time a client gets to send a request body after its head: a body trickled byte by byte
/// must not hold one of the listener's connections for ever.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

async fn read_body(app: &Arc<Authority>, req: Request<Incoming>) -> Result<Bytes> {
    let limit = app.config().max_body;
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(req.into_body(), limit).collect(),
    );
    Ok(read
        .await
        .map_err(|_| {
            Error::BadRequest(format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Error::TooLarge(limit)
            } else {
                Error::BadRequest("the request body could not be read".into())
            }
        })?
        .to_bytes())
}

async fn enroll(app: &Arc<Authority>, req: Request<Incoming>) -> Result<Response<Body>> {
    let body = read_body(app, req).await?;
    let request: EnrollRequest = serde_json::from_slice(&body).map_err(|e| {
        Error::BadRequest(format!("body must be JSON {{csr, token, node_id?}}: {e}"))
    })?;
    blocking(app, move |a| {
        Ok(json(StatusCode::OK, &a.enroll(&request, UnixTime::now())?))
    })
    .await
}

/// `GET /trust/crl`: PEM by default, DER with `Accept: application/pkix-crl`; ETag is the
/// CRL number. With `If-None-Match` equal to the current ETag and `?wait=S`, waits up to S
/// seconds (bounded by the configured maximum) for the next CRL, else answers 304.
async fn crl(app: &Arc<Authority>, req: &Request<Incoming>) -> Result<Response<Body>> {
    announce(app, req).await;
    let wait = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("wait=")))
        .map(|s| {
            s.parse::<u64>()
                .map_err(|_| Error::BadRequest("wait must be whole seconds".into()))
        })
        .transpose()?
        .map(Duration::from_secs)
        .unwrap_or_default()
        .min(app.config().max_long_poll);
    let etag_of = |n: u64| format!("\"crl-{n}\"");
    let known = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut changes = app.crl_changes();
    let mut current = changes.borrow_and_update().clone();
    if known.as_deref() == Some(etag_of(current.number).as_str()) {
        let changed = !wait.is_zero()
            && tokio::select! {
                r = tokio::time::timeout(wait, changes.changed()) => r.is_ok(),
                _ = app.closing().cancelled() => false,
            };
        if !changed {
            return response(
                StatusCode::NOT_MODIFIED,
                "application/json",
                Bytes::new(),
                Some(etag_of(current.number)),
            );
        }
        current = changes.borrow_and_update().clone();
    }
    let der = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/pkix-crl"));
    if der {
        response(
            StatusCode::OK,
            "application/pkix-crl",
            Bytes::from(current.der.clone()),
            Some(etag_of(current.number)),
        )
    } else {
        response(
            StatusCode::OK,
            "application/x-pem-file",
            Bytes::from(current.pem.clone()),
            Some(etag_of(current.number)),
        )
    }
}

fn ready(app: &Authority) -> Response<Body> {
    let crl = app.crl();
    let fresh = UnixTime::now().as_secs() <= crl.next_update;
    let status = if fresh {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &serde_json::json!({"ready": fresh, "crl_number": crl.number, "crl_next_update": crl.next_update}),
    )
}

async fn metrics(app: &Arc<Authority>) -> Response<Body> {
    let a = Arc::clone(app);
    // Refresh the node gauges from the registry before rendering.
    let _ = tokio::task::spawn_blocking(move || a.status(UnixTime::now())).await;
    let text = app.metrics().render();
    response(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        Bytes::from(text),
        None,
    )
    .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body =
        serde_json::to_vec(value).unwrap_or_else(|_| b"{\"error\":\"internal error\"}".to_vec());
    response(status, "application/json", Bytes::from(body), None)
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn response(
    status: StatusCode,
    content_type: &str,
    body: Bytes,
    etag: Option<String>,
) -> Result<Response<Body>> {
    let mut builder = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type);
    if let Some(etag) = etag {
        builder = builder.header(ETAG, etag);
    }
    builder
        .body(Full::new(body))
        .map_err(|e| Error::Internal(format!("response could not be built: {e}")))
}
