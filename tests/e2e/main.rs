//! End-to-end tests: real processes (the `trust-proxy` binary, openssl, Python with the
//! `cryptography` package), real files, loopback only. One binary; modules are named by the
//! behaviour they check. `scripts/test.sh` creates the Python venv these tests use.
//!
//! - `support`: the harnesses and helpers every module imports (the modules never import
//!   from each other).
//! - Through real sidecars: `calls` (app-to-app calls and identity), `revocation` (cut-off,
//!   resumption, following the CRL, an unreachable authority), `rotation_reload`
//!   (rotation, replaced files, SIGHUP), `shutdown` (SIGTERM), `policy` (policy plugins and
//!   `trust-proxy policy`).
//! - The ingress in process: `ingress` (its inbound path), `bad_input` (TLS, HTTP/1,
//!   HTTP/2 and signature refusals), `request_view` (what the app sees is what was checked).
//! - The authority: `authority_crash` (nothing acknowledged is lost).
//! - Attack and fault: `abuse` (refused clients lose their connection and cannot grow the
//!   log; the memory a flood took comes back), `faults` (SIGKILL at named crash points: nothing acknowledged lost, nothing
//!   half-written served, the next start recovers).
//! - Whole networks: `testnet`, `monitoring` (Prometheus against a testnet), `soak`,
//!   `compose` (Docker), `k8s` (the manifests), `live_nodes` (what running sidecars
//!   declare, and the example aggregator's quorum following it).
//! - The command line and interop: `cli_exit_codes`, `openssl_interop`, `python_interop`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod support;

mod abuse;
mod authority_crash;
mod bad_input;
mod calls;
mod cli_exit_codes;
mod compose;
mod faults;
mod ingress;
mod k8s;
mod live_nodes;
mod monitoring;
mod openssl_interop;
mod policy;
mod python_interop;
mod request_view;
mod revocation;
mod rotation_reload;
mod shutdown;
mod soak;
mod testnet;
