//! The trust cache: the verifier plus the current CRL plus verified identities keyed by
//! certificate fingerprint, so a known peer costs a hash and a map lookup.
//!
//! A hit is never trusted blindly: the CRL must still be current, the serial must not be
//! listed in it, and the certificate must still be inside its validity window at `now`.
//! Installing a CRL evicts the entries it revokes at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use moka::sync::Cache;
use rustls_pki_types::UnixTime;

use crate::crl::RevocationList;
use crate::error::{CertificateRejection as Reject, CrlRejection, Result};
use crate::identity::{Fingerprint, PeerIdentity};
use crate::verify::CertificateVerifier;

/// Cache limits.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// How long a verification result is reused.
    pub ttl: Duration,
    /// How many certificates are remembered.
    pub capacity: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3600),
            capacity: 1000,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that needed a full verification.
    pub misses: u64,
    /// Entries held now (approximate, as moka counts).
    pub entries: u64,
}

/// What installing a CRL changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlUpdate {
    /// A newer CRL replaced the old one (or the first one arrived).
    Installed {
        /// Cache entries evicted because the new CRL revokes them.
        evicted: u64,
    },
    /// The same number as installed: kept the installed one.
    Unchanged,
}

#[derive(Clone)]
struct Entry {
    identity: Arc<PeerIdentity>,
    verified_at: u64,
}

/// Verifier + current CRL + cache of verified identities. Share it behind an `Arc`.
pub struct TrustCache {
    verifier: CertificateVerifier,
    crl: ArcSwapOption<RevocationList>,
    entries: Cache<Fingerprint, Entry>,
    ttl: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl TrustCache {
    /// An empty cache with no CRL (every verification fails closed until one is installed).
    pub fn new(verifier: CertificateVerifier, settings: CacheSettings) -> Self {
        Self {
            verifier,
            crl: ArcSwapOption::empty(),
            entries: Cache::builder()
                .max_capacity(settings.capacity)
                .time_to_live(settings.ttl)
                .build(),
            ttl: settings.ttl,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The uncached verifier.
    pub fn verifier(&self) -> &CertificateVerifier {
        &self.verifier
    }

    /// The installed CRL, if any.
    pub fn crl(&self) -> Option<Arc<RevocationList>> {
        self.crl.load_full()
    }

    /// Installs a verified CRL. Refuses one with a lower number than the installed one
    /// (rollback); the same number keeps the installed one.
    pub fn install_crl(&self, crl: RevocationList) -> Result<CrlUpdate> {
        if let Some(current) = self.crl.load().as_ref() {
            if crl.number() < current.number() {
                return Err(CrlRejection::Rollback {
                    installed: current.number(),
                    offered: crl.number(),
                }
                .into());
            }
            if crl.number() == current.number() {
                return Ok(CrlUpdate::Unchanged);
            }
        }
        let crl = Arc::new(crl);
        self.crl.store(Some(Arc::clone(&crl)));
        let mut evicted = 0;
        for (key, entry) in self.entries.iter() {
            if crl.is_revoked(&entry.identity.serial) {
                self.entries.invalidate(&*key);
                evicted += 1;
            }
        }
        Ok(CrlUpdate::Installed { evicted })
    }

    /// Verifies a DER certificate at `now`, from the cache when possible.
    pub fn verify(&self, der: &[u8], now: UnixTime) -> Result<Arc<PeerIdentity>> {
        let crl = self.crl.load_full();
        let fingerprint = Fingerprint::of_der(der);
        if let Some(entry) = self.entries.get(&fingerprint)
            && now.as_secs() >= entry.verified_at
            && now.as_secs() - entry.verified_at < self.ttl.as_secs()
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.check_current(&entry.identity, crl.as_deref(), now)?;
            return Ok(entry.identity);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let identity = Arc::new(self.verifier.verify(der, crl.as_deref(), now)?);
        self.entries.insert(
            fingerprint,
            Entry {
                identity: Arc::clone(&identity),
                verified_at: now.as_secs(),
            },
        );
        Ok(identity)
    }

    /// Re-checks an identity verified earlier (an open keep-alive connection, a resumed TLS
    /// session) against the current CRL and its validity window: what every request does.
    pub fn check_still_trusted(&self, identity: &PeerIdentity, now: UnixTime) -> Result<()> {
        self.check_current(identity, self.crl.load().as_deref(), now)
    }

    fn check_current(
        &self,
        identity: &PeerIdentity,
        crl: Option<&RevocationList>,
        now: UnixTime,
    ) -> Result<()> {
        let crl = crl.ok_or(Reject::CrlMissing)?;
        if crl.is_expired(now) {
            return Err(Reject::CrlExpired {
                next_update: crl.next_update().as_secs(),
            }
            .into());
        }
        if crl.is_revoked(&identity.serial) {
            return Err(Reject::Revoked {
                serial: identity.serial.to_string(),
            }
            .into());
        }
        let skew = self.verifier.settings().clock_skew.as_secs();
        if now.as_secs() > identity.not_after.as_secs().saturating_add(skew) {
            return Err(Reject::Expired {
                not_after: identity.not_after.as_secs(),
                now: now.as_secs(),
            }
            .into());
        }
        Ok(())
    }

    /// Hit, miss and size counters.
    pub fn stats(&self) -> CacheStats {
        self.entries.run_pending_tasks();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries.entry_count(),
        }
    }
}

impl std::fmt::Debug for TrustCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustCache")
            .field("crl_number", &self.crl.load().as_ref().map(|c| c.number()))
            .field("stats", &self.stats())
            .finish()
    }
}
