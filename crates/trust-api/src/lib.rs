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
//! One module: every type here is one request body or one answer, plus the rules for
//! what a node may declare about itself ([`valid_role`], [`valid_host`]).

use std::collections::BTreeMap;

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
    /// Verified nodes heard from within the last `live_window_seconds`: each running
    /// sidecar is, with every signed CRL poll (see [`NodeSummary::last_seen`]).
    #[serde(default)]
    pub live_nodes: usize,
    /// How recent "heard from" must be for a node to count live.
    #[serde(default)]
    pub live_window_seconds: u64,
    /// The counts again, by the role each node declares (`role` in its sidecar config:
    /// `agent`, `aggregator`, ...); [`UNKNOWN_ROLE`] for nodes that declared none or
    /// have not been heard from since the authority started.
    #[serde(default)]
    pub by_role: BTreeMap<String, RoleCounts>,
}

/// The role under which [`StatusResponse::by_role`] counts nodes that declared none.
pub const UNKNOWN_ROLE: &str = "unknown";

/// Nodes of one role in [`StatusResponse::by_role`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleCounts {
    /// Enrolled.
    pub total: usize,
    /// Current certificate verifies now.
    pub verified: usize,
    /// Verified and heard from within the live window.
    pub live: usize,
}

/// Whether `role` may be declared: 1 to 32 of `a-z`, `0-9` and `-`.
pub fn valid_role(role: &str) -> bool {
    (1..=32).contains(&role.len())
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `host` may be declared as a node's host name: 1 to 253 of ASCII letters,
/// digits, `-` and `.` (a container id or pod name passes; nothing that needs escaping).
pub fn valid_host(host: &str) -> bool {
    (1..=253).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `GET /trust/nodes` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodesResponse {
    /// Every enrolled node, by id.
    pub nodes: Vec<NodeSummary>,
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
    /// Last heard from since the authority started (enroll, renew, a signed CRL poll of
    /// its sidecar, or a request its sidecar forwarded), unix seconds.
    pub last_seen: Option<u64>,
    /// Verified and heard from within the live window ([`StatusResponse::live_nodes`]).
    #[serde(default)]
    pub live: bool,
    /// The DNS names and IP addresses its certificate holds.
    #[serde(default)]
    pub names: Vec<String>,
    /// The role it declared with its last signed CRL poll.
    #[serde(default)]
    pub role: Option<String>,
    /// The host name it declared with its last signed CRL poll (a container's or pod's
    /// name: what maps a node id to where it runs).
    #[serde(default)]
    pub host: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_role_or_host_is_plain_text_that_needs_no_escaping() {
        for role in ["agent", "aggregator", "edge-2"] {
            assert!(valid_role(role), "{role}");
        }
        for role in ["", "Agent", "a b", "a&b=c", "agent\n", &"x".repeat(33)] {
            assert!(!valid_role(role), "{role:?}");
        }
        for host in ["3f2a9c1b7d4e", "node-agent-7c9f-xk2p", "n1.example.org"] {
            assert!(valid_host(host), "{host}");
        }
        for host in ["", "a b", "a/b", "a%20", "host\r", "ü", &"h".repeat(254)] {
            assert!(!valid_host(host), "{host:?}");
        }
    }

    #[test]
    fn a_status_from_an_authority_without_live_counts_still_reads() {
        let old = r#"{"node_id":"authority","timestamp":1,"ca_certificate":"","total_nodes":2,"verified_nodes":2,"revoked_certificates":0}"#;
        let status: StatusResponse = serde_json::from_str(old).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((status.verified_nodes, status.live_nodes), (2, 0));
        assert!(status.by_role.is_empty());
    }
}
