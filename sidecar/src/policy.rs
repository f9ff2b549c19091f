//! The admission step: after TLS, identity and signature checks, the ingress asks an
//! [`Admission`] whether to let a request through. [`WasmPolicy`] runs the Wasm policy
//! chain of the configured set (`[policy]` in the config); without one the sidecar uses
//! [`AllowAll`], which admits everything the native checks admitted.
//!
//! The request a policy sees is exactly what will be forwarded: the path is the one
//! normalised by [`crate::ingress`], so a policy matching `/trust/revoke/` sees the same
//! bytes the app will.

use http::HeaderMap;
use trust_core::{PeerIdentity, UnixTime};

/// What a policy is asked about.
#[derive(Debug)]
pub struct AdmissionRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Normalised path, without the query.
    pub path: &'a str,
    /// Query string, without `?`.
    pub query: Option<&'a str>,
    /// Request headers as received (identity headers from outside already removed).
    pub headers: &'a HeaderMap,
    /// The verified peer; `None` for an anonymous client on an anonymous route.
    pub peer: Option<&'a PeerIdentity>,
    /// The verified signature's facts, when the request carried one.
    pub signature: Option<SignatureFacts<'a>>,
    /// When the sidecar received the request.
    pub received_at: UnixTime,
}

/// What a verified message signature established.
#[derive(Debug, Clone, Copy)]
pub struct SignatureFacts<'a> {
    /// `X-From-Node`.
    pub node: &'a str,
    /// `X-Timestamp`, unix seconds.
    pub timestamp: u64,
    /// `X-Nonce`.
    pub nonce: &'a str,
}

/// A policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward the request.
    Allow,
    /// Refuse with `status`; `reason` goes to the caller and the log.
    Deny {
        /// HTTP status, 4xx.
        status: u16,
        /// Short reason, no internals.
        reason: String,
        /// Which policy said no (a metric label).
        by: String,
        /// The policy refused the request's signature, for this
        /// `tpm_signature_verification_failures_total` reason (`replayed`, `stale`,
        /// `future`).
        signature: Option<&'static str>,
    },
}

/// Decides admission. Implementations must be cheap and must not block.
pub trait Admission: Send + Sync {
    /// The decision for one request.
    fn decide(&self, request: &AdmissionRequest<'_>) -> Decision;
}

/// Admits everything: the native checks before it are the whole policy.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Admission for AllowAll {
    fn decide(&self, _request: &AdmissionRequest<'_>) -> Decision {
        Decision::Allow
    }
}

/// The Wasm policy chain ([`policy_host::PolicyHost`]) as the admission step, with an
/// optional shadow set evaluated beside it and never enforced.
pub struct WasmPolicy {
    host: std::sync::Arc<policy_host::PolicyHost>,
    shadow: Option<(
        std::sync::Arc<policy_host::PolicyHost>,
        crate::metrics::Metrics,
    )>,
}

impl WasmPolicy {
    /// Admission by `host`'s chain.
    pub fn new(host: std::sync::Arc<policy_host::PolicyHost>) -> Self {
        Self { host, shadow: None }
    }

    /// Also evaluates `shadow` on every request; where it decides otherwise than the
    /// enforcing set, a log line and `tpm_policy_shadow_disagreements_total` say so. The
    /// way to try a new set on live traffic before it enforces anything.
    pub fn with_shadow(
        mut self,
        shadow: std::sync::Arc<policy_host::PolicyHost>,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        self.shadow = Some((shadow, metrics));
        self
    }
}

impl Admission for WasmPolicy {
    fn decide(&self, request: &AdmissionRequest<'_>) -> Decision {
        let wasm_request = wasm_request(request);
        let verdict = self.host.evaluate(&wasm_request);
        if let Some((shadow, metrics)) = &self.shadow {
            let candidate = shadow.evaluate(&wasm_request);
            let allowed = |d: &policy_host::Decision| matches!(d, policy_host::Decision::Allow);
            let (enforced, proposed) = (allowed(&verdict.decision), allowed(&candidate.decision));
            if enforced != proposed {
                let word = |a: bool| if a { "allow" } else { "deny" };
                tracing::info!(
                    peer = request.peer.map_or("anonymous", |p| p.spiffe_id.as_str()),
                    method = request.method,
                    path = request.path,
                    enforced = word(enforced),
                    shadow = word(proposed),
                    shadow_plugin = candidate.by.as_deref().unwrap_or(""),
                    "shadow policy set disagrees"
                );
                metrics
                    .policy_shadow_disagreements
                    .with_label_values(&[word(enforced), word(proposed)])
                    .inc();
            }
        }
        match verdict.decision {
            policy_host::Decision::Allow => Decision::Allow,
            policy_host::Decision::Deny(denial) => Decision::Deny {
                status: denial.status,
                reason: denial.reason,
                by: verdict.by.unwrap_or_default(),
                signature: verdict.signature_refusal.map(refusal_label),
            },
        }
    }
}

/// The metric reason of a plugin's `signature-refused`: the same labels the native
/// verifier's refusals use.
fn refusal_label(refusal: policy_host::SignatureRefusal) -> &'static str {
    match refusal {
        policy_host::SignatureRefusal::Replayed => "replayed",
        policy_host::SignatureRefusal::Stale => "stale",
        policy_host::SignatureRefusal::Future => "future",
    }
}

/// The request record the plugins see (see `wit/policy.wit`).
fn wasm_request(request: &AdmissionRequest<'_>) -> policy_host::Request {
    policy_host::Request {
        method: request.method.to_owned(),
        path: request.path.to_owned(),
        query: request.query.map(str::to_owned),
        // The five signature headers are left out: they are verified already and their
        // facts are in `signature`; copying and lowering them (the signature alone is
        // 344 bytes) into every plugin's memory was a large share of the chain's cost.
        headers: request
            .headers
            .iter()
            .filter(|(k, _)| !trust_core::signature::header::ALL.contains(&k.as_str()))
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_owned(), v.to_owned()))
            })
            .collect(),
        peer: request.peer.map(|p| policy_host::Peer {
            spiffe_id: p.spiffe_id.clone(),
            id: p.id_string(),
            roles: p.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            serial: p.serial.to_string(),
            not_after: p.not_after.as_secs(),
        }),
        signature: request.signature.map(|s| policy_host::SignatureFacts {
            node: s.node.to_owned(),
            timestamp: s.timestamp,
            nonce: s.nonce.to_owned(),
        }),
        received_at_ms: request.received_at.as_secs() * 1000,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::sync::Arc;

    use policy_host::seen::SeenStore;

    use super::*;

    #[test]
    fn a_plugins_signature_refusal_is_counted_under_a_registered_reason() {
        // An unregistered label would start a series no dashboard or alert expects.
        use policy_host::SignatureRefusal::{Future, Replayed, Stale};
        for (refusal, label) in [(Replayed, "replayed"), (Stale, "stale"), (Future, "future")] {
            assert_eq!(refusal_label(refusal), label);
            assert!(
                crate::metrics::SIGNATURE_REASONS.contains(&label),
                "{label}"
            );
        }
    }

    fn host(dir: &std::path::Path, name: &str, set: &str) -> Arc<policy_host::PolicyHost> {
        let path = dir.join(name);
        std::fs::write(&path, set).unwrap();
        Arc::new(
            policy_host::PolicyHost::new(
                &path,
                std::path::Path::new(policy_host::BUILT_PLUGIN_DIR),
                Arc::new(SeenStore::new(100)),
                Arc::new(policy_host::chain::NoObserver),
            )
            .unwrap(),
        )
    }

    #[test]
    fn plugins_see_the_headers_but_not_the_signature_headers() {
        let mut headers = HeaderMap::new();
        for name in trust_core::signature::header::ALL {
            headers.insert(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_static("v"),
            );
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let request = wasm_request(&AdmissionRequest {
            method: "POST",
            path: "/fl/update",
            query: None,
            headers: &headers,
            peer: None,
            signature: None,
            received_at: UnixTime::since_unix_epoch(std::time::Duration::ZERO),
        });
        assert_eq!(
            request.headers,
            vec![("content-type".to_owned(), "application/json".to_owned())]
        );
    }

    #[test]
    fn a_shadow_set_is_counted_where_it_disagrees_and_never_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let enforcing = host(
            dir.path(),
            "live.toml",
            "[[plugin]]\nname = \"admin-only-revoke\"\n",
        );
        let candidate = host(
            dir.path(),
            "candidate.toml",
            "[[plugin]]\nname = \"route-allow-list\"\n[plugin.settings]\nrules = \"node=/fl\"\n",
        );
        let metrics = crate::metrics::Metrics::new();
        let policy = WasmPolicy::new(enforcing).with_shadow(candidate, metrics.clone());
        let headers = HeaderMap::new();
        let ask = |path: &str| {
            policy.decide(&AdmissionRequest {
                method: "GET",
                path,
                query: None,
                headers: &headers,
                peer: None,
                signature: None,
                received_at: UnixTime::since_unix_epoch(std::time::Duration::ZERO),
            })
        };
        // The candidate would refuse an anonymous /status; the live set allows it.
        assert_eq!(ask("/status"), Decision::Allow);
        assert_eq!(
            metrics
                .policy_shadow_disagreements
                .with_label_values(&["allow", "deny"])
                .get(),
            1
        );
        // The live set refuses an anonymous revoke; so would the candidate: no disagreement.
        assert!(matches!(
            ask("/trust/revoke/1"),
            Decision::Deny { status: 403, .. }
        ));
        assert_eq!(
            metrics
                .policy_shadow_disagreements
                .with_label_values(&["deny", "deny"])
                .get(),
            0
        );
    }
}
