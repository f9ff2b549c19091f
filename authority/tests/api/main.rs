//! The authority's API against an in-process server on 127.0.0.1:0: the contract, mass
//! enrollment, revocation, bad input, long polls, restarts, live nodes and roles. One binary, modules by behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod server;

mod bad_input;
mod contract;
mod enrollment;
mod persistence;
mod presence;
mod revocation;
