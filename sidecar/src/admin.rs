//! The admin listener (loopback by default): `GET /metrics` (Prometheus text),
//! `GET /healthz` (the process is serving) and `GET /readyz` (it can admit traffic: a
//! valid, unrevoked certificate and a current CRL; the JSON says what is missing and how
//! old the CRL is).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use trust_core::{TrustCache, UnixTime};

use crate::credentials::CredentialStore;
use crate::metrics::{Metrics, Snapshot};

/// What the admin endpoints read.
pub struct Admin {
    /// The node's certificate.
    pub credentials: Arc<CredentialStore>,
    /// The CRL and cache counters.
    pub cache: Arc<TrustCache>,
    /// The registry.
    pub metrics: Metrics,
}

/// `GET /readyz` body.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// Whether the sidecar admits traffic.
    pub ready: bool,
    /// What is missing, empty when ready.
    pub problems: Vec<String>,
    /// This node's SPIFFE id.
    pub spiffe_id: String,
    /// Seconds until the node certificate expires.
    pub certificate_expires_in: i64,
    /// The CRL in use.
    pub crl_number: Option<u64>,
    /// Seconds since the CRL in use was issued.
    pub crl_age_seconds: Option<u64>,
    /// Seconds until it expires (negative: expired, every peer is refused).
    pub crl_expires_in: Option<i64>,
}

impl Admin {
    /// The readiness verdict now.
    pub fn readiness(&self) -> Readiness {
        let now = UnixTime::now().as_secs();
        let creds = self.credentials.current();
        let crl = self.cache.crl();
        let mut problems = Vec::new();
        if creds.not_after <= now {
            problems.push("the node certificate has expired".to_owned());
        }
        match &crl {
            None => problems.push("no CRL yet: the authority has not been reached".to_owned()),
            Some(c) if c.is_expired(UnixTime::now()) => problems.push(
                "the CRL has passed its nextUpdate: every peer is refused until the authority is reached"
                    .to_owned(),
            ),
            Some(c) if c.is_revoked(&creds.identity.serial) => problems.push(format!(
                "this node's certificate (serial {}) is revoked by CRL {}: every peer refuses it; \
                 if that was a mistake, an operator enrolls the node anew with a new key",
                creds.identity.serial,
                c.number()
            )),
            Some(_) => {}
        }
        Readiness {
            ready: problems.is_empty(),
            problems,
            spiffe_id: creds.identity.spiffe_id.clone(),
            certificate_expires_in: creds.not_after as i64 - now as i64,
            crl_number: crl.as_ref().map(|c| c.number()),
            crl_age_seconds: crl
                .as_ref()
                .map(|c| now.saturating_sub(c.this_update().as_secs())),
            crl_expires_in: crl
                .as_ref()
                .map(|c| c.next_update().as_secs() as i64 - now as i64),
        }
    }

    fn metrics_text(&self) -> String {
        let creds = self.credentials.current();
        let stats = self.cache.stats();
        let snapshot = Snapshot {
            node_id: creds.identity.id_string(),
            cert_not_before: creds.not_before,
            cert_not_after: creds.not_after,
            crl: self.cache.crl().map(|c| {
                (
                    c.number(),
                    c.len(),
                    c.this_update().as_secs(),
                    c.next_update().as_secs(),
                )
            }),
            cache_hits: stats.hits,
            cache_misses: stats.misses,
            ready: self.readiness().ready,
            now: UnixTime::now().as_secs(),
        };
        self.metrics.render(&snapshot)
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics_text(),
            ),
            (&Method::GET, "/healthz") => (
                StatusCode::OK,
                "application/json",
                r#"{"status":"ok"}"#.to_owned(),
            ),
            (&Method::GET, "/readyz") => {
                let r = self.readiness();
                (
                    if r.ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    },
                    "application/json",
                    serde_json::to_string(&r).unwrap_or_default(),
                )
            }
            (_, "/metrics" | "/healthz" | "/readyz") => (
                StatusCode::METHOD_NOT_ALLOWED,
                "application/json",
                r#"{"error":"use GET"}"#.to_owned(),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "application/json",
                r#"{"error":"not found: /metrics, /healthz, /readyz"}"#.to_owned(),
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(v) = http::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        response
    }
}

/// Serves the admin endpoints until `shutdown`.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(admin.answer(&req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
