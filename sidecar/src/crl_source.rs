//! The CRL a sidecar trusts, from one place: the copy saved by an earlier run, the
//! authority's at start-up, then every new one as soon as the authority publishes it (a
//! long poll on `GET /trust/crl` with `If-None-Match` and `?wait=`, through the sidecar's
//! one [`AuthorityClient`]). Each is verified against the root, installed in the
//! [`TrustCache`] (which evicts and refuses what it revokes at once) and saved for the
//! next start.
//!
//! If the authority is unreachable the last good CRL keeps serving; once it passes its
//! `nextUpdate` the cache refuses everyone (fail closed). Rollbacks are refused by the cache.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use trust_core::{CrlUpdate, RevocationList, TrustCache, UnixTime};

use crate::authority_client::{Announcement, AuthorityClient, CrlAnswer, retry_delays};
use crate::credentials::CredentialStore;
use crate::metrics::Metrics;

/// One authority's CRL into one trust cache.
pub struct CrlSource {
    authority: Arc<AuthorityClient>,
    cache: Arc<TrustCache>,
    wait: Duration,
    etag: Option<String>,
    installed: watch::Sender<u64>,
    metrics: Option<Metrics>,
    saved: Option<PathBuf>,
    announce: Option<Announce>,
}

/// Who the polls announce (see [`CrlSource::announcing`]).
struct Announce {
    credentials: Arc<CredentialStore>,
    role: Option<String>,
    host: Option<String>,
}

impl CrlSource {
    /// The CRL of `authority` into `cache`, asking the authority to hold each poll up to
    /// `wait`.
    pub fn new(authority: Arc<AuthorityClient>, cache: Arc<TrustCache>, wait: Duration) -> Self {
        let (installed, _) = watch::channel(cache.crl().map_or(0, |c| c.number()));
        Self {
            authority,
            cache,
            wait,
            etag: None,
            installed,
            metrics: None,
            saved: None,
            announce: None,
        }
    }

    /// Counts failures and the last successful poll in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Keeps each installed CRL (DER) in `path`, written atomically, so a restart while the
    /// authority is down starts with the last good CRL ([`Self::load_saved`]).
    pub fn saved_in(mut self, path: PathBuf) -> Self {
        self.saved = Some(path);
        self
    }

    /// Signs every poll with the node's current key and declares `role` and `host` with
    /// it, so the authority counts this node live (`/trust/status`) and shows where it
    /// runs (`/trust/nodes`).
    pub fn announcing(
        mut self,
        credentials: Arc<CredentialStore>,
        role: Option<String>,
        host: Option<String>,
    ) -> Self {
        self.announce = Some(Announce {
            credentials,
            role,
            host,
        });
        self
    }

    /// The number of the CRL installed last; changes wake the receiver.
    pub fn installed(&self) -> watch::Receiver<u64> {
        self.installed.subscribe()
    }

    /// Installs the CRL an earlier run saved, if there is one and it is still good.
    pub fn load_saved(&self) {
        let Some(path) = &self.saved else { return };
        let Ok(der) = std::fs::read(path) else { return };
        match self.install(&der, false) {
            Ok(()) => tracing::info!(file = %path.display(), "loaded the saved CRL"),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "the saved CRL is unusable; waiting for the authority's")
            }
        }
    }

    /// One request: the CRL at once the first time, then a long poll for the next one.
    pub async fn fetch(&mut self) -> Result<(), String> {
        let credentials = self.announce.as_ref().map(|a| a.credentials.current());
        let announcement = self
            .announce
            .as_ref()
            .zip(credentials.as_ref())
            .map(|(a, c)| Announcement {
                signer: &c.signer,
                role: a.role.as_deref(),
                host: a.host.as_deref(),
            });
        let answer = self
            .authority
            .crl(self.etag.as_deref(), self.wait, announcement.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        if let Some(m) = &self.metrics {
            m.crl_last_fetch.set(UnixTime::now().as_secs() as i64);
        }
        if let CrlAnswer::New { der, etag } = answer {
            self.install(&der, true)?;
            if etag.is_some() {
                self.etag = etag;
            }
        }
        Ok(())
    }

    /// Follows the authority until `shutdown`. Failures are counted, logged and retried
    /// with jittered backoff (1 s doubling to 30 s, see [`retry_delays`]); the installed
    /// CRL keeps serving meanwhile.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let (first, cap) = (Duration::from_secs(1), Duration::from_secs(30));
        let mut delays = retry_delays(first, cap);
        loop {
            let fetched = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.fetch() => r,
            };
            match fetched {
                Ok(()) => delays = retry_delays(first, cap),
                Err(reason) => {
                    let backoff = delays.next().unwrap_or(cap);
                    if let Some(m) = &self.metrics {
                        m.crl_failures.inc();
                    }
                    tracing::warn!(authority = %self.authority.url(), %reason, retry_in = ?backoff, "CRL update failed; keeping the last good CRL");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }

    /// Verifies `der` against the root and installs it; a new one is announced and, when
    /// `save`, kept on disk.
    fn install(&self, der: &[u8], save: bool) -> Result<(), String> {
        let list = RevocationList::from_der(der, self.cache.verifier().root(), UnixTime::now())
            .map_err(|e| e.to_string())?;
        let number = list.number();
        match self.cache.install_crl(list).map_err(|e| e.to_string())? {
            CrlUpdate::Installed { evicted } => {
                tracing::info!(crl_number = number, evicted, "CRL installed");
                if save
                    && let Some(path) = &self.saved
                    && let Err(e) = trust_store::write_atomic(path, der, 0o644)
                {
                    tracing::warn!(file = %path.display(), error = %e, "cannot keep a copy of the CRL; a restart will need the authority");
                }
                self.installed.send_replace(number);
            }
            CrlUpdate::Unchanged => {}
        }
        Ok(())
    }
}
