//! The authority's Prometheus metrics, in an explicit registry (no globals), rendered by
//! `GET /metrics`. Names follow `../shared/DESIGN.md` (the catalog, `docs/metrics.md`, comes with the monitoring issue); labels stay low-cardinality except
//! `node_id` on the per-node certificate gauges (one series per node, by design).

use std::sync::Arc;
use std::time::Instant;

use prometheus::{
    Encoder as _, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use trust_core::UnixTime;

use crate::published::{Census, PublishedCrl};

/// All metrics the authority exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    enrollments: IntCounterVec,
    revocations: IntCounter,
    crl_number: IntGauge,
    crl_size: IntGauge,
    crl_this_update: IntGauge,
    crl_next_update: IntGauge,
    nodes: IntGaugeVec,
    verified_nodes: IntGauge,
    live_nodes: IntGaugeVec,
    expiry: GaugeVec,
    age_days: GaugeVec,
    verification: Histogram,
    requests: HistogramVec,
    /// Which client-caused events are logged in full (the rest are counted in
    /// `tpm_log_lines_suppressed_total`).
    pub log: Arc<LogSampler>,
}

/// The log events a client of the authority can cause, sampled ([`log_sampling`]): an
/// unauthenticated client on the enrollment listener can send refused requests in a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    /// A request refused (4xx): a bad token, CSR or id, a refused renewal, ...
    RequestRefused,
    /// A node's message signature on a renewal refused.
    NodeSignatureRefused,
}

impl log_sampling::EventKind for Event {
    const ALL: &'static [Self] = &[Self::RequestRefused, Self::NodeSignatureRefused];

    fn label(self) -> &'static str {
        match self {
            Self::RequestRefused => "request_refused",
            Self::NodeSignatureRefused => "node_signature_refused",
        }
    }
}

/// The authority's sampler.
pub type LogSampler = log_sampling::LogSampler<Event>;

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are constants; a failure here is a programming error caught by
    // the first test that builds `Metrics`.
    r.unwrap_or_else(|e| panic!("invalid metric definition: {e}"))
}

impl Metrics {
    /// Builds and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let enrollments = must(IntCounterVec::new(
            Opts::new(
                "tpm_authority_enrollments_total",
                "Enrollment and renewal requests by result (issued, existing, renewed, refused, error)",
            ),
            &["result"],
        ));
        let revocations = must(IntCounter::new(
            "tpm_authority_revocations_total",
            "Certificates revoked",
        ));
        let crl_number = must(IntGauge::new(
            "tpm_crl_number",
            "Number of the CRL currently published",
        ));
        let crl_size = must(IntGauge::new(
            "tpm_crl_size",
            "Serials listed in the current CRL",
        ));
        let crl_this_update = must(IntGauge::new(
            "tpm_crl_last_update_timestamp_seconds",
            "thisUpdate of the current CRL, unix seconds",
        ));
        let crl_next_update = must(IntGauge::new(
            "tpm_crl_next_update_timestamp_seconds",
            "nextUpdate of the current CRL, unix seconds",
        ));
        let nodes = must(IntGaugeVec::new(
            Opts::new(
                "tpm_nodes",
                "Registered nodes by the status of their current certificate",
            ),
            &["status"],
        ));
        let verified_nodes = must(IntGauge::new(
            "sovereignmap_verified_nodes_count",
            "Nodes whose current certificate verifies now",
        ));
        let live_nodes = must(IntGaugeVec::new(
            Opts::new(
                "tpm_live_nodes",
                "Verified nodes heard from within the live window, by the role each declares",
            ),
            &["role"],
        ));
        let expiry = must(GaugeVec::new(
            Opts::new(
                "tpm_certificate_expiry_seconds",
                "Seconds until the node's current certificate expires",
            ),
            &["node_id"],
        ));
        let age_days = must(GaugeVec::new(
            Opts::new(
                "tpm_certificate_age_days",
                "Days since the node's current certificate was issued",
            ),
            &["node_id"],
        ));
        let verification = must(Histogram::with_opts(
            HistogramOpts::new(
                "tpm_trust_verification_duration_seconds",
                "Certificate verification time (cached or not)",
            )
            .buckets(vec![1e-6, 5e-6, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2]),
        ));
        let requests = must(HistogramVec::new(
            HistogramOpts::new(
                "tpm_authority_request_duration_seconds",
                "API request duration by route and status class",
            )
            .buckets(vec![
                1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0, 60.0,
            ]),
            &["route", "class"],
        ));
        for c in [
            Box::new(enrollments.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(revocations.clone()),
            Box::new(crl_number.clone()),
            Box::new(crl_size.clone()),
            Box::new(crl_this_update.clone()),
            Box::new(crl_next_update.clone()),
            Box::new(nodes.clone()),
            Box::new(verified_nodes.clone()),
            Box::new(live_nodes.clone()),
            Box::new(expiry.clone()),
            Box::new(age_days.clone()),
            Box::new(verification.clone()),
            Box::new(requests.clone()),
        ] {
            must(registry.register(c));
        }
        // Known series start at 0, so the first refusal shows as an increase.
        for result in ["issued", "existing", "renewed", "refused", "error"] {
            enrollments.with_label_values(&[result]);
        }
        Self {
            log: Arc::new(must(LogSampler::new(&registry))),
            registry,
            enrollments,
            revocations,
            crl_number,
            crl_size,
            crl_this_update,
            crl_next_update,
            nodes,
            verified_nodes,
            live_nodes,
            expiry,
            age_days,
            verification,
            requests,
        }
    }

    pub(crate) fn count_enrollment(&self, result: &str) {
        self.enrollments.with_label_values(&[result]).inc();
    }

    pub(crate) fn enrollments_total(&self) -> u64 {
        ["issued", "existing"]
            .iter()
            .map(|r| self.enrollments.with_label_values(&[*r]).get())
            .sum()
    }

    pub(crate) fn count_revocation(&self) {
        self.revocations.inc();
    }

    pub(crate) fn revocations_total(&self) -> u64 {
        self.revocations.get()
    }

    pub(crate) fn observe_crl(&self, crl: &PublishedCrl) {
        self.crl_number
            .set(i64::try_from(crl.number).unwrap_or(i64::MAX));
        self.crl_size
            .set(i64::try_from(crl.size).unwrap_or(i64::MAX));
        self.crl_this_update
            .set(i64::try_from(crl.this_update).unwrap_or(i64::MAX));
        self.crl_next_update
            .set(i64::try_from(crl.next_update).unwrap_or(i64::MAX));
    }

    pub(crate) fn observe_nodes(&self, census: &Census) {
        let counts = &census.counts;
        // Roles come and go with the nodes declaring them: no stale series.
        self.live_nodes.reset();
        for (role, n) in &census.by_role {
            self.live_nodes
                .with_label_values(&[role.as_str()])
                .set(i64::try_from(n.live).unwrap_or(i64::MAX));
        }
        for (status, n) in [
            ("verified", counts.verified),
            ("revoked", counts.revoked),
            ("expired", counts.expired),
            ("invalid", counts.invalid),
        ] {
            self.nodes
                .with_label_values(&[status])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.verified_nodes
            .set(i64::try_from(counts.verified).unwrap_or(i64::MAX));
    }

    pub(crate) fn observe_node_certificate(
        &self,
        node_id: u32,
        issued_at: u64,
        not_after: u64,
        now: UnixTime,
    ) {
        let id = node_id.to_string();
        let now = now.as_secs() as f64;
        self.expiry
            .with_label_values(&[&id])
            .set(not_after as f64 - now);
        self.age_days
            .with_label_values(&[&id])
            .set((now - issued_at as f64) / 86_400.0);
    }

    pub(crate) fn verification_timer(&self) -> prometheus::HistogramTimer {
        self.verification.start_timer()
    }

    /// Records one API request.
    pub(crate) fn observe_request(&self, route: &str, status: u16, started: Instant) {
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .with_label_values(&[route, class])
            .observe(started.elapsed().as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
