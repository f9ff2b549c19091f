//! The admission step: after TLS, identity and signature checks, the ingress asks an
//! [`Admission`] whether to let a request through. The Wasm policy chain (issue 5) is one
//! implementation; until a policy set is configured the sidecar uses [`AllowAll`], which
//! admits everything the native checks admitted.
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
