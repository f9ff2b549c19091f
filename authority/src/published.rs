//! What the authority publishes about its state, as plain data: the current CRL and the
//! count of nodes by status, liveness and role. The service produces these; the HTTP layer serves them and
//! the metrics observe them, neither reaching into the service.

use std::collections::BTreeMap;

use serde::Serialize;
use trust_api::RoleCounts;

/// The CRL as currently published.
#[derive(Debug, Clone)]
pub struct PublishedCrl {
    /// CRL number (also the ETag).
    pub number: u64,
    /// DER.
    pub der: Vec<u8>,
    /// PEM.
    pub pem: String,
    /// `thisUpdate`, unix seconds.
    pub this_update: u64,
    /// `nextUpdate`, unix seconds.
    pub next_update: u64,
    /// Serials listed.
    pub size: usize,
}

/// Nodes by status, for status and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NodeCounts {
    /// Current certificate verifies.
    pub verified: usize,
    /// Current certificate revoked.
    pub revoked: usize,
    /// Current certificate expired.
    pub expired: usize,
    /// Anything else (should stay 0).
    pub invalid: usize,
}

/// Every node counted: by status, live, and by declared role (`/trust/status`, metrics).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Census {
    /// Enrolled nodes.
    pub total: usize,
    /// By the status of their current certificate.
    pub counts: NodeCounts,
    /// Verified and heard from within the live window.
    pub live: usize,
    /// The same by declared role (`unknown` for none).
    pub by_role: BTreeMap<String, RoleCounts>,
}
