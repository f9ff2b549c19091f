//! The authority's logic, free of HTTP: enroll, revoke, verify, status, CRL publication.
//!
//! Methods are synchronous (they sign and fsync); the HTTP layer calls them on tokio's
//! blocking pool. One lock serialises changes to the CA folder and the registry; an answer
//! is given only after what it acknowledges is on disk.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use trust_core::{
    CacheSettings, CertificateAuthority, CertificateRejection, CertificateVerifier, NodeId,
    RevocationList, Serial, Subject, TrustCache, UnixTime, VerifiedCsr, VerifySettings,
};
use trust_store::{CaDirectory, Revoked};

use crate::config::AuthorityConfig;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::presence::{LIVE_MARGIN, Labels, Presence, Seen, is_live};
pub use crate::published::{Census, NodeCounts, PublishedCrl};
use crate::registry::{NodeRecord, Registry};

pub use trust_api::{
    EnrollRequest, EnrollResponse, NodeSummary, RevokeResponse, RoleCounts, StatusResponse,
    UNKNOWN_ROLE, VerifyResponse,
};

/// A request a node signed with its current key: `POST /trust/renew` (the body is JSON
/// `{csr}`) or a CRL poll (`GET /trust/crl?...`, empty body, its query declaring the
/// node's role and host).
#[derive(Debug)]
pub struct SignedRequest<'a> {
    /// The signature headers as received.
    pub headers: trust_core::ReceivedHeaders<'a>,
    /// The `Host` the node addressed.
    pub host: &'a str,
    /// The path and query as received (what the signature covers).
    pub path: &'a str,
    /// The body bytes.
    pub body: &'a [u8],
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    csr: String,
}

struct State {
    dir: CaDirectory,
    registry: Registry,
    /// When each node was last heard from and what it declared (soft state).
    presence: Presence,
}

/// The trust authority.
pub struct Authority {
    config: AuthorityConfig,
    ca: Arc<CertificateAuthority>,
    state: Mutex<State>,
    cache: TrustCache,
    crl: watch::Sender<Arc<PublishedCrl>>,
    metrics: Metrics,
    closing: tokio_util::sync::CancellationToken,
}

impl Authority {
    /// Opens the state directory (creating the root CA on first start), replays the
    /// registry and publishes a fresh CRL. Returns whether the root was created now.
    pub fn open(config: AuthorityConfig, now: UnixTime) -> Result<(Self, bool)> {
        config.validate()?;
        // The authority owns its folder: what a crash left half-written goes first.
        trust_store::remove_interrupted_writes(&config.state_dir)?;
        let (mut dir, created) = CaDirectory::open_or_init(
            &config.state_dir,
            &config.trust_domain,
            &config.ca_name,
            now,
        )?;
        let registry = Registry::open(&config.state_dir)?;
        let ca = dir.shared_ca();
        let signed = dir.publish_crl(now, config.crl_validity)?;
        let list = RevocationList::from_der(&signed.der, ca.root(), now)?;
        let published = Arc::new(published(&list, signed.der, signed.pem));
        let cache = TrustCache::new(
            CertificateVerifier::new(ca.root().clone(), VerifySettings::default()),
            CacheSettings {
                capacity: 100_000,
                ..CacheSettings::default()
            },
        );
        cache.install_crl(list)?;
        let metrics = Metrics::new();
        metrics.observe_crl(&published);
        let (crl, _) = watch::channel(published);
        Ok((
            Self {
                config,
                ca,
                state: Mutex::new(State {
                    dir,
                    registry,
                    presence: Presence::default(),
                }),
                cache,
                crl,
                metrics,
                closing: tokio_util::sync::CancellationToken::new(),
            },
            created,
        ))
    }

    /// Cancelled when the server stops: long polls answer at once instead of holding the
    /// drain for their full wait.
    pub fn closing(&self) -> &tokio_util::sync::CancellationToken {
        &self.closing
    }

    /// The settings.
    pub fn config(&self) -> &AuthorityConfig {
        &self.config
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The root certificate, PEM.
    pub fn ca_certificate(&self) -> String {
        self.ca.root().pem()
    }

    /// The current CRL.
    pub fn crl(&self) -> Arc<PublishedCrl> {
        self.crl.borrow().clone()
    }

    /// A receiver that wakes when a new CRL is published (for long polls).
    pub fn crl_changes(&self) -> watch::Receiver<Arc<PublishedCrl>> {
        self.crl.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written: every change
        // is on disk before memory is updated. Keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Enrolls a node from its CSR.
    pub fn enroll(&self, request: &EnrollRequest, now: UnixTime) -> Result<EnrollResponse> {
        let result = self.enroll_inner(request, now);
        self.metrics.count_enrollment(match &result {
            Ok(r) if r.existing => "existing",
            Ok(_) => "issued",
            Err(e) if e.status().is_server_error() => "error",
            Err(_) => "refused",
        });
        result
    }

    fn enroll_inner(&self, request: &EnrollRequest, now: UnixTime) -> Result<EnrollResponse> {
        if !self.config.bootstrap_token.matches(&request.token) {
            return Err(Error::Unauthorized);
        }
        let requested = match &request.node_id {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(n)) => Some(n.to_string().parse::<NodeId>()?),
            Some(serde_json::Value::String(s)) => Some(s.parse::<NodeId>()?),
            Some(_) => {
                return Err(Error::BadRequest(
                    "node_id must be a number or a decimal string".into(),
                ));
            }
        };
        let csr = VerifiedCsr::from_pem(&request.csr, &self.config.names)?;
        let key = URL_SAFE_NO_PAD.encode(Sha256::digest(&csr.spki_der));

        let mut state = self.lock();
        let id = match state.registry.node_for_key(&key) {
            Some(existing) => {
                let Some(record) = state.registry.node(existing) else {
                    return Err(Error::Conflict("registry index out of step".into()));
                };
                if requested.is_some_and(|r| r.get() != existing) {
                    return Err(Error::Conflict(format!(
                        "this key is enrolled as node {existing}; it cannot become another node"
                    )));
                }
                if record.key != key {
                    return Err(Error::Conflict(format!(
                        "this key was replaced for node {existing}; make a new key"
                    )));
                }
                if state.dir.is_revoked(&Serial::from_hex(&record.serial)?) {
                    return Err(Error::Forbidden(format!(
                        "node {existing} is revoked; a revoked identity cannot enroll again"
                    )));
                }
                if record.not_after > now.as_secs() + 3600 {
                    let answer = self.answer(record, true);
                    state.presence.heard(existing, now.as_secs());
                    return Ok(answer);
                }
                existing
            }
            None => match requested {
                Some(id) if state.registry.node(id.get()).is_some() => {
                    return Err(Error::Conflict(format!(
                        "node id {id} is taken by another key"
                    )));
                }
                Some(id) => id.get(),
                None => state.registry.next_free_id(),
            },
        };
        let node = NodeId::new(id).ok_or_else(|| Error::Conflict("no node id left".into()))?;
        let record = self.issue_and_record(&mut state, &csr, key, node, now)?;
        drop(state);
        tracing::info!(node_id = id, serial = %record.serial, "enrolled");
        Ok(self.answer(&record, false))
    }

    /// Issues a certificate for `node` and appends it to the registry (fsync'd) under the
    /// state lock the caller holds.
    fn issue_and_record(
        &self,
        state: &mut State,
        csr: &VerifiedCsr,
        key: String,
        node: NodeId,
        now: UnixTime,
    ) -> Result<NodeRecord> {
        let issued = self.ca.issue_with_validity(
            csr,
            &Subject::Node(node),
            now,
            self.config.node_validity,
        )?;
        trust_store::crash::point("authority::certificate-issued-not-recorded");
        let record = NodeRecord {
            node_id: node.get(),
            key,
            serial: issued.serial.to_string(),
            certificate: issued.pem,
            issued_at: now.as_secs(),
            not_after: issued.not_after.as_secs(),
        };
        state.registry.append(record.clone())?;
        state.presence.heard(record.node_id, now.as_secs());
        Ok(record)
    }

    fn answer(&self, record: &NodeRecord, existing: bool) -> EnrollResponse {
        EnrollResponse {
            node_id: record.node_id.to_string(),
            spiffe_id: format!(
                "spiffe://{}/node/{}",
                self.ca.root().trust_domain(),
                record.node_id
            ),
            certificate: record.certificate.clone(),
            ca_certificate: self.ca.root().pem(),
            serial: record.serial.clone(),
            not_after: record.not_after,
            existing,
        }
    }

    /// Renews a node's certificate for a new key. The request must be signed (the seed's
    /// header scheme) with the node's current, valid key: that proves it is the node, the
    /// CSR proves possession of the new key. The previous certificate stays valid until it
    /// expires, so connections using it are not dropped during rotation.
    pub fn renew(&self, request: &SignedRequest<'_>, now: UnixTime) -> Result<EnrollResponse> {
        let body: RenewBody = serde_json::from_slice(request.body)
            .map_err(|e| Error::BadRequest(format!("body must be JSON {{csr}}: {e}")))?;
        let csr = VerifiedCsr::from_pem(&body.csr, &self.config.names)?;
        let key = URL_SAFE_NO_PAD.encode(Sha256::digest(&csr.spki_der));
        if let Some(record) = self.renewed_but_not_received(request, &key, now) {
            self.metrics.count_enrollment("existing");
            return Ok(self.answer(&record, true));
        }
        let id = self.signer_of("POST", request, now)?;
        let mut state = self.lock();
        if let Some(other) = state.registry.node_for_key(&key)
            && other != id.get()
        {
            return Err(Error::Conflict(format!(
                "this key is enrolled as node {other}"
            )));
        }
        let record = self.issue_and_record(&mut state, &csr, key, id, now)?;
        drop(state);
        self.metrics.count_enrollment("renewed");
        tracing::info!(node_id = %id, serial = %record.serial, "renewed");
        Ok(self.answer(&record, false))
    }

    /// A renewal asked again after the node crashed between sending it and saving the
    /// answer: the authority recorded a certificate for the new key, so the request is
    /// signed with the key that certificate replaced and `signer_of` would refuse it for
    /// ever. The CSR (verified: it proves possession of the new key) is for the key of the
    /// node's current, valid certificate, so the answer is that certificate, as a repeated
    /// enrollment gets its own. Nothing is issued and nothing secret is disclosed.
    fn renewed_but_not_received(
        &self,
        request: &SignedRequest<'_>,
        key: &str,
        now: UnixTime,
    ) -> Option<NodeRecord> {
        let id: NodeId = request.headers.from_node?.parse().ok()?;
        let record = self
            .lock()
            .registry
            .node(id.get())
            .filter(|r| r.key == key)
            .cloned()?;
        let der = pem::parse(&record.certificate).ok()?.into_contents();
        self.cache.verify(&der, now).ok()?;
        Some(record)
    }

    /// The node that signed `request` (`method` and its path), checked against the
    /// node's current certificate, which must verify now (a revoked or expired node signs
    /// nothing).
    fn signer_of(
        &self,
        method: &str,
        request: &SignedRequest<'_>,
        now: UnixTime,
    ) -> Result<NodeId> {
        let from = request.headers.from_node.ok_or(Error::NodeSignature)?;
        let id: NodeId = from.parse()?;
        let current = self
            .lock()
            .registry
            .node(id.get())
            .map(|r| r.certificate.clone())
            .ok_or_else(|| Error::NotFound(format!("no node {id}")))?;
        let der = pem::parse(&current)
            .map_err(|e| Error::Internal(format!("stored certificate of node {id}: {e}")))?
            .into_contents();
        let peer = self.cache.verify(&der, now).map_err(|e| {
            Error::Forbidden(format!(
                "node {id}'s current certificate does not verify: {e}"
            ))
        })?;
        let parts = trust_core::RequestParts::new(method, request.host, request.path, request.body);
        trust_core::signature::verify_request(
            &request.headers,
            &parts,
            &peer,
            &[request.host.to_owned()],
            trust_core::SignatureWindow::default(),
            now,
        )
        .map_err(|r| {
            // No address is known here: each such event takes one of the window's places.
            if self
                .metrics
                .log
                .admit(crate::metrics::Event::NodeSignatureRefused, None)
            {
                tracing::info!(node_id = %id, path = request.path, reason = r.label(), "node signature refused");
            }
            Error::NodeSignature
        })?;
        Ok(id)
    }

    /// A signed CRL poll (`GET /trust/crl?...&role=...&host=...`): the node is running,
    /// and says what it is. Returns the node; nothing is recorded when the signature,
    /// the node's certificate or a declared value is refused.
    pub fn announce(&self, request: &SignedRequest<'_>, now: UnixTime) -> Result<NodeId> {
        let id = self.signer_of("GET", request, now)?;
        let query = request.path.split_once('?').map_or("", |(_, q)| q);
        let labels = Labels::from_query(query)?;
        self.lock()
            .presence
            .announced(id.get(), now.as_secs(), labels);
        Ok(id)
    }

    /// How recent "heard from" must be for a node to count live: the longest long-poll
    /// hold plus [`LIVE_MARGIN`].
    pub fn live_window(&self) -> Duration {
        self.config.max_long_poll + LIVE_MARGIN
    }

    /// Revokes a node's current certificate and publishes a new CRL before answering.
    pub fn revoke(&self, node_id: &str, now: UnixTime) -> Result<RevokeResponse> {
        let id: NodeId = node_id.parse()?;
        let mut state = self.lock();
        let current = state
            .registry
            .node(id.get())
            .map(|r| r.serial.clone())
            .ok_or_else(|| Error::NotFound(format!("no node {id}")))?;
        // Every certificate the node still holds, not only the current one: a certificate
        // from before a renewal (perhaps the stolen one) must not outlive the revocation.
        let mut serials = state
            .registry
            .unexpired_serials(id.get(), now.as_secs())
            .into_iter()
            .map(Serial::from_hex)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if serials.is_empty() {
            serials.push(Serial::from_hex(&current)?);
        }
        let mut outcome = Revoked::Already;
        for serial in &serials {
            if state.dir.revoke(serial, Some(id.to_string()), now)? == Revoked::Now {
                outcome = Revoked::Now;
            }
        }
        trust_store::crash::point("authority::revocation-recorded-not-published");
        let serial = serials
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // A repeated revocation changes nothing: it publishes nothing either, unless the CRL
        // in force does not list every serial yet (a crash between recording a revocation
        // and publishing its CRL), in which case this call finishes that publication.
        let listed = self
            .cache
            .crl()
            .is_some_and(|crl| serials.iter().all(|s| crl.is_revoked(s)));
        if outcome == Revoked::Now || !listed {
            let signed = state.dir.publish_crl(now, self.config.crl_validity)?;
            // Installed under the lock: two revocations at once must install their CRLs in
            // number order, or the later install of the older one is refused as a rollback.
            self.install(signed, now)?;
        }
        drop(state);
        if outcome == Revoked::Now {
            self.metrics.count_revocation();
            tracing::warn!(node_id = %id, serial = %serial, crl_number = self.crl().number, "revoked");
        }
        Ok(RevokeResponse {
            node_id: id.to_string(),
            revoked: true,
            already: outcome == Revoked::Already,
            crl_number: self.crl().number,
        })
    }

    fn install(&self, signed: trust_core::SignedCrl, now: UnixTime) -> Result<()> {
        let list = RevocationList::from_der(&signed.der, self.ca.root(), now)?;
        let published = Arc::new(published(&list, signed.der, signed.pem));
        self.cache.install_crl(list)?;
        self.metrics.observe_crl(&published);
        self.crl.send_replace(published);
        Ok(())
    }

    /// Re-publishes the CRL when half its validity has passed, so it never expires while
    /// the authority runs.
    pub fn refresh_crl_if_due(&self, now: UnixTime) -> Result<bool> {
        let current = self.crl();
        let half = self.config.crl_validity.as_secs() / 2;
        if now.as_secs() < current.this_update + half {
            return Ok(false);
        }
        let mut state = self.lock();
        let signed = state.dir.publish_crl(now, self.config.crl_validity)?;
        self.install(signed, now)?;
        drop(state);
        Ok(true)
    }

    /// Whether a node's current certificate verifies now.
    pub fn verify(&self, node_id: &str, now: UnixTime) -> Result<VerifyResponse> {
        let id: NodeId = node_id.parse()?;
        let pem = self
            .lock()
            .registry
            .node(id.get())
            .map(|r| r.certificate.clone())
            .ok_or_else(|| Error::NotFound(format!("no node {id}")))?;
        let reason = match self.check(&pem, now) {
            Ok(()) => None,
            Err(r) => Some(r.label().to_owned()),
        };
        Ok(VerifyResponse {
            node_id: id.to_string(),
            verified: reason.is_none(),
            reason,
        })
    }

    fn check(&self, pem_text: &str, now: UnixTime) -> Result<(), CertificateRejection> {
        let der = pem::parse(pem_text)
            .map_err(|_| CertificateRejection::Malformed)?
            .into_contents();
        let timer = self.metrics.verification_timer();
        let result = self.cache.verify(&der, now);
        drop(timer);
        match result {
            Ok(_) => Ok(()),
            Err(trust_core::Error::CertificateRejected(r)) => Err(r),
            Err(other) => Err(CertificateRejection::Invalid(other.to_string())),
        }
    }

    /// A node's current certificate, PEM.
    pub fn certificate(&self, node_id: &str) -> Result<String> {
        let id: NodeId = node_id.parse()?;
        self.lock()
            .registry
            .node(id.get())
            .map(|r| r.certificate.clone())
            .ok_or_else(|| Error::NotFound(format!("no certificate for node {id}")))
    }

    /// Counts nodes by status (verifying each current certificate, cached), live, and by
    /// declared role.
    pub fn census(&self, now: UnixTime) -> Census {
        let window = self.live_window();
        let rows: Vec<(NodeRecord, Option<Seen>)> = {
            let state = self.lock();
            state
                .registry
                .nodes()
                .map(|r| (r.clone(), state.presence.get(r.node_id).cloned()))
                .collect()
        };
        let mut census = Census {
            total: rows.len(),
            ..Census::default()
        };
        for (record, seen) in &rows {
            let verified = self.check(&record.certificate, now);
            let live = verified.is_ok() && is_live(seen.as_ref(), now.as_secs(), window);
            match verified {
                Ok(()) => census.counts.verified += 1,
                Err(CertificateRejection::Revoked { .. }) => census.counts.revoked += 1,
                Err(CertificateRejection::Expired { .. }) => census.counts.expired += 1,
                Err(_) => census.counts.invalid += 1,
            }
            census.live += usize::from(live);
            let role = seen
                .as_ref()
                .and_then(|s| s.labels.role.clone())
                .unwrap_or_else(|| UNKNOWN_ROLE.to_owned());
            let by_role = census.by_role.entry(role).or_default();
            by_role.total += 1;
            by_role.verified += usize::from(verified.is_ok());
            by_role.live += usize::from(live);
            self.metrics.observe_node_certificate(
                record.node_id,
                record.issued_at,
                record.not_after,
                now,
            );
        }
        census
    }

    /// Notes that `node_id` was heard from (its sidecar forwards `X-Verified-Node-Id`).
    pub fn seen(&self, node_id: &str, now: UnixTime) {
        if let Ok(id) = node_id.parse::<NodeId>() {
            let mut state = self.lock();
            if state.registry.node(id.get()).is_some() {
                state.presence.heard(id.get(), now.as_secs());
            }
        }
    }

    /// The `/trust/nodes` answer: every node, its current certificate and status, its
    /// names, and what it declared when last heard from.
    pub fn nodes(&self, now: UnixTime) -> Vec<NodeSummary> {
        let window = self.live_window();
        let rows: Vec<(NodeRecord, Option<u64>, Option<Seen>)> = {
            let state = self.lock();
            state
                .registry
                .nodes()
                .map(|r| {
                    (
                        r.clone(),
                        state.registry.enrolled_at(r.node_id),
                        state.presence.get(r.node_id).cloned(),
                    )
                })
                .collect()
        };
        let mut out: Vec<NodeSummary> = rows
            .into_iter()
            .map(|(r, enrolled_at, seen)| {
                let verified = self.check(&r.certificate, now);
                NodeSummary {
                    live: verified.is_ok() && is_live(seen.as_ref(), now.as_secs(), window),
                    status: match verified {
                        Ok(()) => "verified".to_owned(),
                        Err(reason) => reason.label().to_owned(),
                    },
                    names: pem::parse(&r.certificate)
                        .map(|p| {
                            let names = trust_core::certificate_names(p.contents());
                            let ips = names.ips.iter().map(ToString::to_string);
                            names.dns.into_iter().chain(ips).collect()
                        })
                        .unwrap_or_default(),
                    node_id: r.node_id.to_string(),
                    serial: r.serial,
                    enrolled_at: enrolled_at.unwrap_or(r.issued_at),
                    issued_at: r.issued_at,
                    not_after: r.not_after,
                    last_seen: seen.as_ref().map(|s| s.at),
                    role: seen.as_ref().and_then(|s| s.labels.role.clone()),
                    host: seen.and_then(|s| s.labels.host),
                }
            })
            .collect();
        out.sort_by_key(|n| n.node_id.parse::<u32>().unwrap_or(u32::MAX));
        out
    }

    /// The `/trust/status` answer.
    pub fn status(&self, now: UnixTime) -> StatusResponse {
        let census = self.census(now);
        let revoked_certificates = self.lock().dir.revocations().len();
        self.metrics.observe_nodes(&census);
        StatusResponse {
            node_id: self.config.node_id.clone(),
            timestamp: now.as_secs(),
            ca_certificate: self.ca.root().pem(),
            total_nodes: census.total,
            verified_nodes: census.counts.verified,
            revoked_certificates,
            live_nodes: census.live,
            live_window_seconds: self.live_window().as_secs(),
            by_role: census.by_role,
        }
    }

    /// The `/metrics/summary` answer.
    pub fn summary(&self, now: UnixTime) -> serde_json::Value {
        let status = self.status(now);
        let stats = self.cache.stats();
        let crl = self.crl();
        serde_json::json!({
            "nodes_verified": status.verified_nodes,
            "total_nodes": status.total_nodes,
            "revoked_certificates": status.revoked_certificates,
            "crl_number": crl.number,
            "crl_size": crl.size,
            "crl_next_update": crl.next_update,
            "cache_hits": stats.hits,
            "cache_misses": stats.misses,
            "enrollments": self.metrics.enrollments_total(),
            "revocations": self.metrics.revocations_total(),
        })
    }

    /// Cache counters (for `/metrics`).
    pub fn cache_stats(&self) -> trust_core::CacheStats {
        self.cache.stats()
    }
}

fn published(list: &RevocationList, der: Vec<u8>, pem: String) -> PublishedCrl {
    PublishedCrl {
        number: list.number(),
        der,
        pem,
        this_update: list.this_update().as_secs(),
        next_update: list.next_update().as_secs(),
        size: list.len(),
    }
}
