//! # authority
//!
//! The trust authority: one per network. It holds the root CA, enrolls nodes from CSRs
//! with a bootstrap token, keeps the node registry, revokes with instant effect (a new
//! signed CRL before the answer), and serves the `/trust/*` API that sidecars and operators
//! use. It listens on loopback; the network reaches it through its own sidecar, which also
//! decides who may revoke (the `admin-only-revoke` policy).
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | [`config`] | [`AuthorityConfig`], validated at start-up |
//! | [`service`] | [`Authority`]: enroll, revoke, verify, status, CRL publication; no HTTP |
//! | [`registry`] | the node registry: an fsync'd append-only log replayed at start |
//! | [`http`] | the API over hyper and the accept loop ([`run`]) |
//! | [`published`] | what the service publishes, as plain data: the current CRL, node counts |
//! | [`presence`] | which nodes are running and what they declare (role, host): soft state |
//! | [`metrics`] | Prometheus metrics in an explicit registry |
//! | [`error`] | [`Error`] and its mapping to HTTP status |
//!
//! The CA's own files (key, certificate, revocation log, CRL) are `trust-store`'s.

pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod presence;
pub mod published;
pub mod registry;
pub mod service;

pub use config::{AuthorityConfig, Secret};
pub use error::{Error, Result};
pub use http::{Scope, run, run_scoped};
pub use service::{Authority, EnrollResponse};
