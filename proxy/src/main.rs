//! # trust-proxy
//!
//! The one binary operators run: the sidecar (`trust-proxy run`, over the `sidecar`
//! crate), the authority (`trust-proxy authority`, over the `authority` crate), the offline
//! PKI commands, the policy tools and the local testnet (over the `testnet` crate). This
//! crate holds only what makes a process: argument parsing, logging, signals, exit codes.
//!
//! | module | what |
//! |---|---|
//! | [`cli`] | argument parsing, logging set-up, dispatch |
//! | [`run`] | `trust-proxy run`: the sidecar, bound and served until SIGTERM |
//! | [`serve`] | `trust-proxy authority` and `trust-proxy probe` |
//! | [`offline`] | the offline PKI commands: CA, keys, CSRs, certificates, message signatures |
//! | [`policy_cli`] | `trust-proxy policy check` and `policy test` |
//! | [`out`] | stdout for the one-shot commands: a reader that went away (`| head`) ends us quietly |
//! | [`signals`] | SIGTERM/Ctrl-C to a cancellation token, SIGHUP to a sidecar reload |
//! | [`error`] | [`Error`](error::Error) and its mapping to exit codes, in one place |

use std::process::ExitCode;

mod cli;
mod error;
mod offline;
mod out;
mod policy_cli;
mod run;
mod serve;
mod signals;

pub use error::{Error, Result};

/// jemalloc with its background threads, which hand freed memory back to the system within
/// seconds of a burst of connections ending; glibc's malloc keeps it in its arenas for
/// good (measured in docs/BENCHMARKS.md, "Memory after a flood").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    cli::main()
}
