//! `trust-proxy`: a thin entry point over [`trust_proxy::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    trust_proxy::cli::main()
}
