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
//! | [`crl_follower`] | long-polls the authority's CRL into the trust cache |
//! | [`ingress`] | the inbound path: mTLS, per-request re-check, signature, identity headers, forwarding |
//! | [`tls`] | rustls client-certificate verification over `trust-core`'s trust cache |
//! | [`serve`] | the long-running commands: `authority` (and, next, the sidecar) |
//! | [`error`] | [`Error`] and its mapping to exit codes, in one place |

pub mod cli;
pub mod crl_follower;
pub mod error;
pub mod ingress;
pub mod offline;
pub mod serve;
pub mod tls;

pub use error::{Error, Result};
