//! # trust-api
//!
//! The shapes of the trust authority's `/trust/*` JSON API, in one small crate that both
//! sides use: the authority serialises them, the sidecar's authority client and the tests
//! read them. Serde only, so depending on it pulls in neither the authority server nor the
//! sidecar. The routes and their meaning are documented in docs/ARCHITECTURE.md
//! ("Authority API").
//!
//! # Layout
//!
//! One module: every type here is one request body or one answer.

use serde::{Deserialize, Serialize};

/// `POST /trust/enroll` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// PEM CSR made by the node.
    pub csr: String,
    /// The bootstrap token.
    pub token: String,
    /// An id the node asks for (number or decimal string); the next free one if absent.
    #[serde(default)]
    pub node_id: Option<serde_json::Value>,
}

/// `POST /trust/enroll` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The node's id.
    pub node_id: String,
    /// `spiffe://<domain>/node/<id>`.
    pub spiffe_id: String,
    /// The node certificate, PEM.
    pub certificate: String,
    /// The root certificate, PEM.
    pub ca_certificate: String,
    /// Certificate serial, hex.
    pub serial: String,
    /// `notAfter`, unix seconds.
    pub not_after: u64,
    /// True when the key was already enrolled and its current certificate is returned.
    pub existing: bool,
}

/// `POST /trust/verify/{id}` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct VerifyResponse {
    /// The node.
    pub node_id: String,
    /// Whether its current certificate verifies now.
    pub verified: bool,
    /// Why not (a metric label: revoked, expired, ...).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// `POST /trust/revoke/{id}` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct RevokeResponse {
    /// The node.
    pub node_id: String,
    /// Always true once answered.
    pub revoked: bool,
    /// True when it was revoked before (revocation is idempotent).
    pub already: bool,
    /// The CRL number that lists it.
    pub crl_number: u64,
}

/// `GET /trust/status` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusResponse {
    /// The authority's own id.
    pub node_id: String,
    /// Unix seconds.
    pub timestamp: u64,
    /// Root certificate, PEM.
    pub ca_certificate: String,
    /// Registered nodes.
    pub total_nodes: usize,
    /// Nodes whose current certificate verifies now.
    pub verified_nodes: usize,
    /// Revoked certificates.
    pub revoked_certificates: usize,
}

/// One row of `GET /trust/nodes`.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeSummary {
    /// The node.
    pub node_id: String,
    /// `verified`, or the refusal label of its current certificate (`revoked`, `expired`, ...).
    pub status: String,
    /// Current certificate serial, hex.
    pub serial: String,
    /// First enrollment, unix seconds.
    pub enrolled_at: u64,
    /// Current certificate issued, unix seconds.
    pub issued_at: u64,
    /// Current certificate `notAfter`, unix seconds.
    pub not_after: u64,
    /// Last heard from since the authority started (enroll, renew, or a request its sidecar
    /// forwarded), unix seconds.
    pub last_seen: Option<u64>,
}
