//! The sidecar's Prometheus metrics, in an explicit registry, served on the admin
//! listener. Names follow `../shared/DESIGN.md` and match the authority's where the meaning
//! is the same (`tpm_crl_*`, `tpm_certificate_*`); labels are low-cardinality (`reason`,
//! `outcome`, `direction`) except `node_id`, which is this node's own id.
//!
//! Counters are bumped on the request path; gauges that describe state (certificate
//! expiry, CRL age, cache counters) are read when `/metrics` is scraped.

use std::sync::Arc;

use prometheus::{
    Encoder as _, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::log_sampling::LogSampler;

/// Every metric the sidecar exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by direction (`ingress`, `egress`) and outcome.
    pub requests: IntCounterVec,
    /// Signature refusals by reason (`stale`, `bad_signature`, `fingerprint_mismatch`, ...).
    pub signature_failures: IntCounterVec,
    /// Handshakes refused or abandoned, by reason.
    pub handshake_failures: IntCounterVec,
    /// Per-request trust check (peer still trusted + signature).
    pub verification: Histogram,
    /// Errors talking to the app (ingress) or a peer (egress).
    pub upstream_errors: IntCounterVec,
    /// Open inbound connections.
    pub connections: IntGauge,
    /// Open inbound connections by the ingress thread serving them (`thread`: 0, 1, ...):
    /// shows whether connections are spread over the cores.
    pub thread_connections: IntGaugeVec,
    /// Certificate renewals and reloads by result.
    pub rotations: IntCounterVec,
    /// Failed CRL polls.
    pub crl_failures: IntCounter,
    /// Last successful contact with the authority's CRL endpoint, unix seconds.
    pub crl_last_fetch: IntGauge,
    crl_number: IntGauge,
    crl_size: IntGauge,
    crl_this_update: IntGauge,
    crl_next_update: IntGauge,
    crl_age: Gauge,
    expiry: GaugeVec,
    age_days: GaugeVec,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    ready: IntGauge,
    ingress_forwarded: IntCounter,
    egress_forwarded: IntCounter,
    /// Policy plugin evaluations by plugin, outcome (allow, deny, error) and shadow.
    pub policy_evaluations: IntCounterVec,
    /// Policy plugin evaluation time, by plugin.
    pub policy_duration: prometheus::HistogramVec,
    /// Policy-set reloads by result (ok, failed).
    pub policy_reloads: IntCounterVec,
    /// Requests where the shadow set decided otherwise than the enforcing one.
    pub policy_shadow_disagreements: IntCounterVec,
    /// Requests refused with 400 before any check because their path or authority has no
    /// one reading, by reason (the path's rejection label, or `host_*`).
    pub bad_requests: IntCounterVec,
    /// Identity headers (any spelling of `x-verified-*`, `x-forwarded-*`, `forwarded`, ...)
    /// that arrived from outside and were removed before the request went further.
    pub identity_headers_removed: IntCounter,
    /// Which client-caused events are logged in full (the rest are counted in
    /// `tpm_log_lines_suppressed_total`).
    pub log: Arc<LogSampler>,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are constants; a failure is a programming error caught by the
    // first test that builds `Metrics`.
    r.unwrap_or_else(|e| panic!("invalid metric definition: {e}"))
}

/// State read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// This node's id.
    pub node_id: String,
    /// Own certificate `notBefore` / `notAfter`, unix seconds.
    pub cert_not_before: u64,
    /// See above.
    pub cert_not_after: u64,
    /// The installed CRL: number, size, thisUpdate, nextUpdate.
    pub crl: Option<(u64, usize, u64, u64)>,
    /// Trust-cache counters.
    pub cache_hits: u64,
    /// See above.
    pub cache_misses: u64,
    /// Whether `/readyz` says ready.
    pub ready: bool,
    /// Now, unix seconds.
    pub now: u64,
}

/// Every `outcome` of `tpm_requests_total`.
pub const REQUEST_OUTCOMES: [&str; 6] = [
    "forwarded",
    "refused_certificate",
    "refused_signature",
    "refused_policy",
    "refused_request",
    "upstream_error",
];

/// Every (`direction`, `kind`) of `tpm_upstream_errors_total`.
const UPSTREAM_ERRORS: [(&str, &str); 5] = [
    ("ingress", "unreachable"),
    ("ingress", "timeout"),
    ("egress", "unreachable"),
    ("egress", "timeout"),
    ("egress", "peer_certificate"),
];

/// Every `reason` of `tpm_signature_verification_failures_total`: the trust core's
/// rejection labels, and `anonymous` (signed headers from a client without a certificate).
pub(crate) const SIGNATURE_REASONS: [&str; 11] = [
    "missing_header",
    "malformed_header",
    "unknown_node",
    "fingerprint_mismatch",
    "destination_mismatch",
    "stale",
    "future",
    "bad_signature",
    "bad_salt_length",
    "replayed",
    "anonymous",
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Builds and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let int_gauge = |name: &str, help: &str| {
            let g = must(IntGauge::new(name, help));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let int_counter = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = must(GaugeVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let verification = must(Histogram::with_opts(
            HistogramOpts::new(
                "tpm_trust_verification_duration_seconds",
                "Per-request trust check: peer still trusted, plus the message signature when present",
            )
            .buckets(vec![1e-6, 5e-6, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2]),
        ));
        must(registry.register(Box::new(verification.clone())));
        let crl_age = must(Gauge::new(
            "tpm_crl_age_seconds",
            "Seconds since thisUpdate of the CRL in use",
        ));
        must(registry.register(Box::new(crl_age.clone())));
        let requests = counter_vec(
            "tpm_requests_total",
            "Requests by direction (ingress, egress) and outcome (forwarded, refused_certificate, refused_signature, refused_policy, refused_request, upstream_error)",
            &["direction", "outcome"],
        );
        let policy_duration = must(prometheus::HistogramVec::new(
            HistogramOpts::new(
                "tpm_policy_evaluation_duration_seconds",
                "Time one policy plugin took for one request",
            )
            .buckets(vec![1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 1e-3, 1e-2, 0.1]),
            &["plugin"],
        ));
        must(registry.register(Box::new(policy_duration.clone())));
        let metrics = Self {
            policy_evaluations: counter_vec(
                "tpm_policy_evaluations_total",
                "Policy plugin evaluations by plugin, outcome (allow, deny, error: trap, deadline or memory limit) and shadow",
                &["plugin", "outcome", "shadow"],
            ),
            policy_duration,
            policy_shadow_disagreements: counter_vec(
                "tpm_policy_shadow_disagreements_total",
                "Requests where the shadow policy set decided otherwise than the enforcing one, by the two decisions",
                &["enforced", "shadow"],
            ),
            bad_requests: counter_vec(
                "tpm_bad_requests_total",
                "Requests refused with 400 because their path or authority could be read two ways, by reason",
                &["reason"],
            ),
            identity_headers_removed: int_counter(
                "tpm_identity_headers_removed_total",
                "Identity headers (x-verified-*, x-forwarded-*, forwarded, ... in any spelling) sent from outside and removed",
            ),
            policy_reloads: counter_vec(
                "tpm_policy_reloads_total",
                "Policy-set reloads by result (ok, failed: the previous set keeps serving)",
                &["result"],
            ),
            ingress_forwarded: requests.with_label_values(&["ingress", "forwarded"]),
            egress_forwarded: requests.with_label_values(&["egress", "forwarded"]),
            requests,
            signature_failures: counter_vec(
                "tpm_signature_verification_failures_total",
                "Message signatures refused, by reason",
                &["reason"],
            ),
            handshake_failures: counter_vec(
                "tpm_tls_handshake_failures_total",
                "Inbound TLS handshakes that failed, by reason (certificate, timeout, protocol)",
                &["reason"],
            ),
            verification,
            upstream_errors: counter_vec(
                "tpm_upstream_errors_total",
                "Errors reaching the app or a peer, by direction and kind (unreachable, timeout, peer_certificate)",
                &["direction", "kind"],
            ),
            connections: int_gauge("tpm_connections_active", "Open inbound connections"),
            thread_connections: {
                let g = must(IntGaugeVec::new(
                    Opts::new(
                        "tpm_ingress_thread_connections",
                        "Open inbound connections by the ingress thread serving them",
                    ),
                    &["thread"],
                ));
                must(registry.register(Box::new(g.clone())));
                g
            },
            rotations: counter_vec(
                "tpm_certificate_rotations_total",
                "Own certificate renewals and reloads by result (renewed, reloaded, failed)",
                &["result"],
            ),
            crl_failures: int_counter(
                "tpm_crl_update_failures_total",
                "CRL polls that failed (authority unreachable, bad CRL, rollback)",
            ),
            crl_last_fetch: int_gauge(
                "tpm_crl_last_fetch_timestamp_seconds",
                "Last successful CRL poll, unix seconds",
            ),
            crl_number: int_gauge("tpm_crl_number", "Number of the CRL in use"),
            crl_size: int_gauge("tpm_crl_size", "Serials listed in the CRL in use"),
            crl_this_update: int_gauge(
                "tpm_crl_last_update_timestamp_seconds",
                "thisUpdate of the CRL in use, unix seconds",
            ),
            crl_next_update: int_gauge(
                "tpm_crl_next_update_timestamp_seconds",
                "nextUpdate of the CRL in use, unix seconds; past it every peer is refused",
            ),
            crl_age,
            expiry: gauge_vec(
                "tpm_certificate_expiry_seconds",
                "Seconds until this node's certificate expires",
                &["node_id"],
            ),
            age_days: gauge_vec(
                "tpm_certificate_age_days",
                "Days since this node's certificate was issued",
                &["node_id"],
            ),
            cache_hits: int_counter(
                "tpm_trust_cache_hits_total",
                "Peer verifications answered from the trust cache",
            ),
            cache_misses: int_counter(
                "tpm_trust_cache_misses_total",
                "Peer verifications that ran in full",
            ),
            ready: int_gauge(
                "tpm_ready",
                "1 when the sidecar has a valid certificate and a current CRL",
            ),
            log: Arc::new(must(LogSampler::new(&registry))),
            registry,
        };
        metrics.start_known_series_at_zero();
        metrics
    }

    /// Exports every known label combination at 0 from the start. A counter series that
    /// first appears at 1 shows no `increase()`, so an alert on the first forged signature
    /// or failed reload would never fire; and a rule or panel over a series that does not
    /// exist yet cannot be told from one over a misspelt name.
    fn start_known_series_at_zero(&self) {
        for direction in ["ingress", "egress"] {
            for outcome in REQUEST_OUTCOMES {
                self.requests.with_label_values(&[direction, outcome]);
            }
        }
        for (direction, kind) in UPSTREAM_ERRORS {
            self.upstream_errors.with_label_values(&[direction, kind]);
        }
        for reason in SIGNATURE_REASONS {
            self.signature_failures.with_label_values(&[reason]);
        }
        for reason in ["certificate", "timeout", "protocol"] {
            self.handshake_failures.with_label_values(&[reason]);
        }
        for result in ["renewed", "reloaded", "failed"] {
            self.rotations.with_label_values(&[result]);
        }
        for result in ["ok", "failed"] {
            self.policy_reloads.with_label_values(&[result]);
        }
        for rejection in request_path::PathRejection::ALL {
            self.bad_requests.with_label_values(&[rejection.label()]);
        }
        for rejection in crate::request_view::AuthorityRejection::ALL {
            self.bad_requests.with_label_values(&[rejection.label()]);
        }
        for (enforced, shadow) in [("allow", "deny"), ("deny", "allow")] {
            self.policy_shadow_disagreements
                .with_label_values(&[enforced, shadow]);
        }
    }

    /// Counts a request refused because its path or authority has no one reading.
    pub fn bad_request(&self, reason: &str) {
        self.bad_requests.with_label_values(&[reason]).inc();
    }

    /// Counts a refused signature.
    pub fn signature_refused(&self, reason: &str) {
        self.signature_failures.with_label_values(&[reason]).inc();
    }

    /// Counts a request outcome.
    pub fn request(&self, direction: &str, outcome: &str) {
        // The two commonest series are resolved once (a label lookup hashes and locks).
        match (direction, outcome) {
            ("ingress", "forwarded") => self.ingress_forwarded.inc(),
            ("egress", "forwarded") => self.egress_forwarded.inc(),
            _ => self.requests.with_label_values(&[direction, outcome]).inc(),
        }
    }

    /// Prometheus text, with the state gauges set from `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let id = snapshot.node_id.as_str();
        self.expiry
            .with_label_values(&[id])
            .set(snapshot.cert_not_after as f64 - snapshot.now as f64);
        self.age_days
            .with_label_values(&[id])
            .set(snapshot.now.saturating_sub(snapshot.cert_not_before) as f64 / 86_400.0);
        if let Some((number, size, this_update, next_update)) = snapshot.crl {
            self.crl_number.set(number as i64);
            self.crl_size.set(size as i64);
            self.crl_this_update.set(this_update as i64);
            self.crl_next_update.set(next_update as i64);
            self.crl_age
                .set(snapshot.now.saturating_sub(this_update) as f64);
        }
        catch_up(&self.cache_hits, snapshot.cache_hits);
        catch_up(&self.cache_misses, snapshot.cache_misses);
        self.ready.set(i64::from(snapshot.ready));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Moves a counter mirrored from elsewhere up to `total`.
fn catch_up(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// Metrics for a shadow set's host: its evaluations count as shadow ones; its reloads
/// count with the enforcing set's.
#[derive(Clone)]
pub struct ShadowMetrics(pub Metrics);

impl policy_host::Observer for ShadowMetrics {
    fn plugin(&self, plugin: &str, _shadow: bool) -> Arc<dyn policy_host::Recorder> {
        policy_host::Observer::plugin(&self.0, plugin, true)
    }

    fn reloaded(&self, ok: bool) {
        policy_host::Observer::reloaded(&self.0, ok);
    }
}

impl policy_host::Observer for Metrics {
    fn plugin(&self, plugin: &str, shadow: bool) -> Arc<dyn policy_host::Recorder> {
        // Resolving the labelled series here exports them at 0 before the first request.
        let shadow = if shadow { "true" } else { "false" };
        Arc::new(PluginRecorder {
            outcomes: policy_host::Evaluation::ALL.map(|outcome| {
                self.policy_evaluations
                    .with_label_values(&[plugin, outcome.label(), shadow])
            }),
            duration: self.policy_duration.with_label_values(&[plugin]),
        })
    }

    fn reloaded(&self, ok: bool) {
        self.policy_reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    }
}

/// One plugin's series, resolved when its set is loaded.
struct PluginRecorder {
    /// By [`policy_host::Evaluation`], in [`policy_host::Evaluation::ALL`]'s order.
    outcomes: [IntCounter; 3],
    duration: Histogram,
}

impl policy_host::Recorder for PluginRecorder {
    fn evaluated(&self, outcome: policy_host::Evaluation, seconds: f64) {
        let i = match outcome {
            policy_host::Evaluation::Allow => 0,
            policy_host::Evaluation::Deny => 1,
            policy_host::Evaluation::Error => 2,
        };
        self.outcomes[i].inc();
        self.duration.observe(seconds);
    }
}
