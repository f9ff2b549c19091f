//! What the authority publishes about its state, as plain data: the current CRL and the
//! count of nodes by status. The service produces these; the HTTP layer serves them and
//! the metrics observe them, neither reaching into the service.

use serde::Serialize;

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
