//! # trust-proxy
//!
//! The sidecar that runs beside each unmodified app, and the command line that operators
//! use around it. `main.rs` only calls [`cli::main`]; everything else is here so the
//! integration tests drive the same code.
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | [`cli`] | argument parsing, logging set-up, dispatch, exit codes |
//! | [`offline`] | the offline PKI commands: CA, keys, CSRs, certificates, message signatures |
//! | [`sidecar`] | `trust-proxy run`: start-up, wiring, rotation loop, shutdown |
//! | [`config`] | the sidecar's TOML config, environment overrides, validation |
//! | [`credentials`] | the node key and certificate: enrolment, renewal, reload, rustls resolvers |
//! | [`body`] | the body types the request path passes on |
//! | [`authority_client`] | calls to the authority: CA certificate, enroll, renew, CRL |
//! | [`crl_source`] | the CRL the sidecar trusts: the saved copy, the authority's at start-up, then its long poll; verified, installed, saved |
//! | [`ingress`] | the inbound path: mTLS, per-request re-check, the request's one reading, signature, policy, identity headers, forwarding |
//! | [`refusal`] | [`refusal::Refusal`]: every way the ingress and egress refuse a request, and the one place that turns it into status, reason, metrics and log |
//! | [`request_view`] | that one reading: canonical path (crate `request-path`), the checked authority, identity headers from outside removed in every spelling |
//! | [`placement`] | which ingress thread serves a new connection: the one serving the fewest |
//! | [`upstream`] | the ingress's keep-alive connections to the local app, one pool per ingress thread |
//! | [`egress`] | the outbound forward proxy: `HTTP_PROXY` in, signed mTLS out |
//! | [`policy`] | the admission step: the interface, allow-all, the Wasm policy chain |
//! | [`policy_cli`] | `trust-proxy policy check` and `policy test` |
//! | [`admin`] | `/metrics`, `/healthz`, `/readyz` |
//! | [`metrics`] | the sidecar's Prometheus metrics |
//! | [`tls`] | rustls client-certificate verification over `trust-core`'s trust cache |
//! | [`serve`] | the `authority` command |
//! | [`testnet`] | `trust-proxy testnet`: the authority, an aggregator and N nodes with their sidecars on loopback |
//! | [`error`] | [`Error`] and its mapping to exit codes, in one place |

pub mod admin;
pub mod authority_client;
pub mod body;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod crl_source;
pub mod egress;
pub mod error;
pub mod ingress;
pub mod metrics;
pub mod offline;
pub mod placement;
pub mod policy;
pub mod policy_cli;
pub mod refusal;
pub mod request_view;
pub mod serve;
pub mod sidecar;
pub mod testnet;
pub mod tls;
pub mod upstream;

pub use error::{Error, Result};
