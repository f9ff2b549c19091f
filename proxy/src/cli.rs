//! Argument parsing, logging set-up and dispatch. Every command's `--help` says what it
//! does, what it writes, and shows an example.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::Error;
use crate::offline::{self, CaCommand, CertCommand, KeyCommand, MessageCommand};
use crate::policy_cli::PolicyCommand;
use crate::run::RunArgs;
use crate::serve::{AuthorityArgs, ProbeArgs};

const EXIT_CODES: &str = "\
Exit codes:
  0   done
  1   a verification said no (cert verify, message verify; probe: not a 2xx answer)
  64  bad arguments (the message names the flag)
  65  an input file's content is unusable (not PEM, refused CSR, ...)
  66  an input file is missing or unreadable
  69  the trust authority could not be reached (run: after retrying)
  73  an output file could not be created (e.g. it already exists)
  74  other I/O or state-directory failure
  77  the authority refused this node (bad bootstrap token, id taken, CA pin mismatch)";

/// The trust proxy: an mTLS + message-signature + Wasm-policy sidecar, and the offline PKI
/// tools around it.
#[derive(Debug, Parser)]
#[command(name = "trust-proxy", version, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TRUST_PROXY_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `sidecar=debug,authority=info` (RUST_LOG syntax).
    #[arg(long, global = true, default_value = "info", env = "TRUST_PROXY_LOG")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the certificate authority offline: create the root, issue, revoke, publish the CRL.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Make a node key and a certificate request (the key never leaves the node).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Check or show a certificate.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Sign a request or verify a signed one, as the sidecars do.
    #[command(subcommand)]
    Message(MessageCommand),
    /// Check a policy set, or run request fixtures through it (for CI).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run the trust authority: root CA, enrollment, registry, revocation, the /trust/* API.
    #[command(
        after_help = "Example:\n  openssl rand -hex 32 > token && chmod 600 token\n  trust-proxy authority --state-dir ./authority --listen 127.0.0.1:7000 --bootstrap-token-file token\n\nPrints `listening on <addr>` once it serves (and `enroll listening on <addr>` with --enroll-listen). SIGTERM or Ctrl-C drains in-flight requests and exits 0."
    )]
    Authority(AuthorityArgs),
    /// Run the sidecar beside an app: mTLS ingress, signed egress, CRL watch, rotation.
    #[command(after_help = crate::run::HELP)]
    Run(RunArgs),
    /// Run a whole network on this machine's loopback: the authority behind its sidecar, the
    /// example federated-learning aggregator and N node agents, each behind its sidecar.
    #[command(after_help = testnet::HELP)]
    Testnet(testnet::TestnetArgs),
    /// Ask a health endpoint (plain HTTP GET): exit 0 on a 2xx answer, 1 on another
    /// answer, 69 when nothing answers. For container health checks and start-up scripts.
    #[command(
        after_help = "Example:\n  trust-proxy probe http://127.0.0.1:9100/readyz\n  trust-proxy probe --wait 60s http://tpm-ca-service:7002/healthz   # retry until it answers"
    )]
    Probe(ProbeArgs),
}

/// Parses the command line, sets up logging, runs the command, and maps errors to exit
/// codes (see the `error` module). Usage errors exit 64; `--help` and `--version` exit 0.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.log_format, &cli.log);
    // Crash points for the fault-injection tests; nothing in a release build.
    trust_store::crash::setup();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match cli.log_format {
                LogFormat::Text => eprintln!("trust-proxy: {e}"),
                // Under JSON every line on stderr is JSON, the fatal one included, so a
                // log pipeline never has to special-case the last line.
                LogFormat::Json => {
                    tracing::error!(error = %e, exit_code = e.code(), "trust-proxy stopped");
                }
            }
            e.exit_code()
        }
    }
}

/// Runs one command.
pub fn run(command: Command) -> crate::Result<()> {
    match command {
        Command::Ca(c) => offline::ca(c),
        Command::Key(c) => offline::key(c),
        Command::Cert(c) => offline::cert(c),
        Command::Message(c) => offline::message(c),
        Command::Authority(args) => crate::serve::authority(args),
        Command::Run(args) => crate::run::run(args),
        Command::Policy(c) => crate::policy_cli::run(c),
        Command::Testnet(args) => testnet_command(args),
        Command::Probe(args) => crate::serve::probe(&args),
    }
}

/// `trust-proxy testnet`: the testnet crate on a two-thread runtime, stopped by SIGTERM
/// or Ctrl-C.
fn testnet_command(args: testnet::TestnetArgs) -> crate::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Service(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(crate::signals::wait_for_signal(shutdown.clone()));
        Ok(testnet::run(args, shutdown).await?)
    })
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second initialisation (tests calling `main` twice) is harmless; ignore it.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
