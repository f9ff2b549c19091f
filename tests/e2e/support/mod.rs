//! What the test modules share; they import from here and never from each other.
//!
//! - [`process`]: run the `trust-proxy` binary and outside tools (Python, openssl, curl),
//!   find the repository and the venv; long-running children ([`AuthorityProcess`],
//!   [`Served`]) killed when dropped.
//! - [`pki`]: a CA made with the real CLI in a temp folder ([`CliCa`]).
//! - [`authority`]: a typed client of the authority's `/trust/*` API ([`AuthorityApi`]).
//! - [`net`]: a network: a real authority ([`net::Net`]) and sidecars, as `trust-proxy run`
//!   processes or in-process through `sidecar::run` ([`net::How`]), in front of real Flask
//!   apps ([`net::Node`]), and the helpers
//!   its tests share (certificates issued with the CLI, mTLS requests by hand, `openssl
//!   s_client`, certificate files replaced as an operator does, signals, policy sets).
//! - [`ingress`]: the in-process harness: the sidecar's ingress in front of an echo app,
//!   trusting a test PKI ([`ingress::Node`], [`ingress::PKI`]); clients that connect, send
//!   and sign.
//! - [`wire`]: raw connections to the in-process ingress (an mTLS stream speaking HTTP/2).
//! - [`testnet`]: a running `trust-proxy testnet` read through its manifest
//!   ([`testnet::Testnet`]).
//!
//! The generic helpers are re-exported here (`use crate::support::{trust_proxy, mtls}`); a
//! harness is imported from its module (`use crate::support::net::{Net, Node}`), as the
//! process harness and the in-process one each have a `Node`.

pub mod authority;
pub mod ingress;
pub mod net;
pub mod pki;
pub mod process;
pub mod testnet;
pub mod wire;

pub use authority::AuthorityApi;
pub use net::{issue_dev, mtls, post};
pub use pki::CliCa;
pub use process::{AuthorityProcess, Served, ok, python, repo_root, run, text, trust_proxy};
pub use wire::connect_h2_tls;
