//! Follows the authority's CRL: a long poll on `GET /trust/crl` (`If-None-Match` + `?wait=`)
//! that returns as soon as a new CRL is published; each one is verified against the root and
//! installed in the [`TrustCache`], which evicts and refuses what it revokes at once.
//!
//! If the authority is unreachable the last good CRL keeps serving; once it passes its
//! `nextUpdate` the cache refuses everyone (fail closed). Rollbacks are refused by the cache.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{ACCEPT, ETAG, IF_NONE_MATCH};
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use trust_core::{CrlUpdate, RevocationList, TrustCache, UnixTime};

/// Largest CRL accepted (a CRL of 100k serials is ~4 MiB).
const MAX_CRL_BYTES: usize = 16 * 1024 * 1024;

/// Follows one authority's CRL into one trust cache.
pub struct CrlFollower {
    authority: String,
    cache: Arc<TrustCache>,
    wait: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
    installed: watch::Sender<u64>,
    metrics: Option<crate::metrics::Metrics>,
    persist_to: Option<std::path::PathBuf>,
}

impl CrlFollower {
    /// Follows `authority` (base URL, e.g. `http://127.0.0.1:7000`) into `cache`, asking
    /// the authority to hold each poll up to `wait`.
    pub fn new(authority: impl Into<String>, cache: Arc<TrustCache>, wait: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let (installed, _) = watch::channel(cache.crl().map_or(0, |c| c.number()));
        Self {
            authority: authority.into().trim_end_matches('/').to_owned(),
            cache,
            wait,
            client: Client::builder(TokioExecutor::new()).build(connector),
            installed,
            metrics: None,
            persist_to: None,
        }
    }

    /// Counts failures and the last successful poll in `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Writes each installed CRL (DER) to `path` atomically, so a restart while the
    /// authority is down starts with the last good CRL.
    pub fn persist_to(mut self, path: std::path::PathBuf) -> Self {
        self.persist_to = Some(path);
        self
    }

    /// The number of the CRL installed last; changes wake the receiver.
    pub fn installed(&self) -> watch::Receiver<u64> {
        self.installed.subscribe()
    }

    /// Polls until `shutdown`. Failures are logged and retried with backoff (1 s doubling
    /// to 30 s); the installed CRL keeps serving meanwhile.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut etag: Option<String> = None;
        let mut backoff = Duration::from_secs(1);
        loop {
            let poll = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.poll(etag.as_deref()) => r,
            };
            match poll {
                Ok(next) => {
                    if let Some(m) = &self.metrics {
                        m.crl_last_fetch.set(now().as_secs() as i64);
                    }
                    backoff = Duration::from_secs(1);
                    if next.is_some() {
                        etag = next;
                    }
                }
                Err(reason) => {
                    if let Some(m) = &self.metrics {
                        m.crl_failures.inc();
                    }
                    tracing::warn!(authority = %self.authority, %reason, retry_in = ?backoff, "CRL update failed; keeping the last good CRL");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// One long poll; returns the new ETag when a CRL was installed.
    async fn poll(&self, etag: Option<&str>) -> Result<Option<String>, String> {
        let wait = if etag.is_some() {
            self.wait.as_secs()
        } else {
            0
        };
        let mut request = Request::get(format!("{}/trust/crl?wait={wait}", self.authority))
            .header(ACCEPT, "application/pkix-crl");
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("bad request: {e}"))?;
        let timeout = self.wait + Duration::from_secs(10);
        let response = tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| format!("unreachable: {e}"))?;
        match response.status() {
            StatusCode::NOT_MODIFIED => Ok(None),
            StatusCode::OK => {
                let new_etag = response
                    .headers()
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let der = Limited::new(response.into_body(), MAX_CRL_BYTES)
                    .collect()
                    .await
                    .map_err(|_| "CRL body unreadable or too large".to_owned())?
                    .to_bytes();
                let list = RevocationList::from_der(&der, self.cache.verifier().root(), now())
                    .map_err(|e| e.to_string())?;
                let number = list.number();
                match self.cache.install_crl(list).map_err(|e| e.to_string())? {
                    CrlUpdate::Installed { evicted } => {
                        tracing::info!(crl_number = number, evicted, "CRL installed");
                        if let Some(path) = &self.persist_to
                            && let Err(e) = trust_store::write_atomic(path, &der, 0o644)
                        {
                            tracing::warn!(file = %path.display(), error = %e, "cannot keep a copy of the CRL; a restart will need the authority");
                        }
                        self.installed.send_replace(number);
                    }
                    CrlUpdate::Unchanged => {}
                }
                Ok(new_etag)
            }
            other => Err(format!("authority answered {other}")),
        }
    }
}

fn now() -> UnixTime {
    UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}
