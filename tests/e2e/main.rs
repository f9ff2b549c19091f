//! End-to-end tests: real processes (the `trust-proxy` binary, openssl, Python with the
//! `cryptography` package), real files, loopback only. One binary; modules are named by the
//! behaviour they check. `scripts/test.sh` creates the Python venv these tests use.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod support;

mod authority_crash;
mod bad_input;
mod cli_exit_codes;
mod compose;
mod crl_follow;
mod ingress;
mod k8s;
mod monitoring;
mod openssl_interop;
mod policy_cli;
mod python_interop;
mod request_view;
mod sidecar;
mod soak;
mod testnet;
