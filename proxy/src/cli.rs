//! Argument parsing, logging set-up and dispatch. Every command's `--help` says what it
//! does, what it writes, and shows an example.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::Error;
use crate::offline;

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
    #[command(after_help = RUN_HELP)]
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

/// `trust-proxy probe`
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The URL to GET (http only).
    pub url: String,
    /// How long one attempt may take.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Keep retrying (every 500 ms) until a 2xx answer or this much time has passed.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
}

const RUN_HELP: &str = "\
Start-up: creates the node key (0600) if there is none, fetches the CA certificate (checked
against authority.ca_fingerprint when set), enrolls with the bootstrap token if there is no
valid certificate, loads the last CRL and follows the authority's, then serves. Prints one
line per listener once it serves:
  ingress listening on <addr>
  egress listening on <addr>
  admin listening on <addr>

Every config field can be set from the environment: TRUST_PROXY_<FIELD> at the top level,
TRUST_PROXY_<SECTION>_<FIELD> in a section (e.g. TRUST_PROXY_INGRESS_LISTEN=0.0.0.0:8443).

Example:
  trust-proxy run --config /etc/trust-proxy/sidecar.toml
  HTTP_PROXY=http://127.0.0.1:8080 flask run   # the app's outbound calls are signed

A commented config: docs/examples/sidecar.toml. SIGTERM or Ctrl-C stops accepting, lets
in-flight requests finish (shutdown_grace) and exits 0. SIGHUP reloads now what the
periodic check and the folder watcher would: a replaced node-cert.pem and the policy sets
(one that does not load is refused, logged and counted; what is in force keeps serving).";

/// `trust-proxy policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load a policy set exactly as a reload would (read, compile, check the world, probe)
    /// and list its plugins; exit 65 with the reason if it would be refused.
    #[command(
        after_help = "Example:\n  trust-proxy policy check --set policies/node.toml --plugin-dir target/plugins/wasm32-wasip2/release"
    )]
    Check(PolicySetArgs),
    /// Run request fixtures through a policy set and compare the decisions; exit 1 on any
    /// mismatch. Cases run in order against one seen-before store, so a replay case can
    /// follow the request it replays.
    #[command(after_help = POLICY_TEST_HELP)]
    Test {
        #[command(flatten)]
        #[allow(missing_docs, reason = "flattened group documents itself")]
        set: PolicySetArgs,
        /// The fixtures (TOML, `[[case]]` entries).
        #[arg(long)]
        cases: PathBuf,
    },
}

const POLICY_TEST_HELP: &str = "\
Example:
  trust-proxy policy test --set policies/authority.toml \\
    --plugin-dir target/plugins/wasm32-wasip2/release --cases policies/tests/authority.toml

A case:
  [[case]]
  name = \"a node cannot revoke, however the path is spelled\"
  method = \"POST\"                  # default GET
  path = \"/trust/%72evoke/3\"       # as sent; normalised as the ingress does
  roles = [\"node\"]                 # the peer's roles; omit for an anonymous client
  peer_id = \"3\"                    # default 1
  signature = { node = \"3\", timestamp = \"now-10\", nonce = \"n1\" }   # optional
  expect = \"deny\"                  # allow | deny
  status = 403                     # optional, checked when given";

/// A policy set and where its plugins are.
#[derive(Debug, Args)]
pub struct PolicySetArgs {
    /// The policy-set file.
    #[arg(long)]
    pub set: PathBuf,
    /// The folder with the plugins' .wasm files.
    #[arg(long, default_value = "target/plugins/wasm32-wasip2/release")]
    pub plugin_dir: PathBuf,
}

/// `trust-proxy run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The sidecar's TOML config file.
    #[arg(long, env = "TRUST_PROXY_CONFIG")]
    pub config: PathBuf,
    /// Only load and validate the config (every field, with environment overrides), print
    /// a summary and exit: 0 if it would start, 64 naming the field if not. No network, no
    /// files written. (`trust-proxy policy check` checks the policy set itself.)
    #[arg(long)]
    pub check: bool,
    /// How long to keep retrying an unreachable authority at start-up before giving up (exit 69).
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub startup_timeout: Duration,
}

/// `trust-proxy authority`
#[derive(Debug, Args)]
pub struct AuthorityArgs {
    #[command(flatten)]
    #[allow(missing_docs, reason = "flattened group documents itself")]
    pub state: StateDir,
    /// Address to serve on. Loopback by default: the network reaches the authority through its own sidecar.
    #[arg(long, default_value = "127.0.0.1:7000", env = "TRUST_AUTHORITY_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// Also serve the enrollment routes only (enroll, renew, CRL, CA certificate, metrics,
    /// health) on this address, for nodes on the network before they have a certificate.
    /// Everything else stays on --listen, behind the authority's sidecar.
    #[arg(long, env = "TRUST_AUTHORITY_ENROLL_LISTEN")]
    pub enroll_listen: Option<std::net::SocketAddr>,
    /// Trust domain of a root created at first start (an existing root keeps its own).
    #[arg(long, default_value = "sovereign.local")]
    pub trust_domain: String,
    /// File holding the bootstrap token nodes present to enroll (at least 16 characters).
    #[arg(
        long,
        env = "TRUST_BOOTSTRAP_TOKEN_FILE",
        conflicts_with = "bootstrap_token"
    )]
    pub bootstrap_token_file: Option<PathBuf>,
    /// The bootstrap token itself (prefer the file: arguments are visible in `ps`).
    #[arg(long, env = "TRUST_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,
    /// How long each published CRL is valid; it is re-published at half that.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub crl_validity: Duration,
    /// Lifetime of issued node certificates; sidecars renew at two thirds of it.
    #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
    pub node_validity: Duration,
    #[command(flatten)]
    #[allow(missing_docs, reason = "flattened group documents itself")]
    pub names: NamePolicyArgs,
}

/// Where the CA keeps its state.
#[derive(Debug, Args)]
pub struct StateDir {
    /// The CA's state directory (key 0600, certificate, revocation log, CRL).
    #[arg(long, default_value = "/etc/sovereign/certs", env = "TRUST_STATE_DIR")]
    pub state_dir: PathBuf,
}

/// Who a certificate is for.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SubjectArg {
    /// A node, by its numeric id (SPIFFE id spiffe://<domain>/node/<id>).
    #[arg(long)]
    pub node_id: Option<String>,
    /// An operator, by name (SPIFFE id spiffe://<domain>/admin/<name>, role admin).
    #[arg(long)]
    pub admin: Option<String>,
}

/// Names granted in certificates.
#[derive(Debug, Args)]
pub struct NamePolicyArgs {
    /// DNS names the CA grants: exact names or `*.suffix`. Default: localhost, *.localhost.
    #[arg(long = "allow-dns", value_name = "PATTERN")]
    pub allow_dns: Vec<String>,
    /// Address ranges the CA grants (CIDR). Default: 127.0.0.0/8, ::1/128.
    #[arg(long = "allow-ip", value_name = "CIDR")]
    pub allow_ip: Vec<String>,
}

/// `trust-proxy ca ...`
#[derive(Debug, Subcommand)]
#[allow(
    missing_docs,
    reason = "flattened argument groups carry their own docs"
)]
pub enum CaCommand {
    /// Create a new root CA (RSA-4096, 10 years) in the state directory.
    #[command(
        after_help = "Example:\n  trust-proxy ca init --state-dir ./certs --trust-domain sovereign.local"
    )]
    Init {
        #[command(flatten)]
        state: StateDir,
        /// The SPIFFE trust domain of the network.
        #[arg(long, default_value = "sovereign.local")]
        trust_domain: String,
        /// The root's common name.
        #[arg(long, default_value = "Sovereign Trust Root CA")]
        name: String,
    },
    /// Bring an existing root (certificate + PKCS#8 key) into a new state directory, for the
    /// authority to use instead of creating one.
    #[command(
        after_help = "Example:\n  trust-proxy ca import --state-dir ./authority --cert my-root.pem --key my-root-key.pem"
    )]
    Import {
        #[command(flatten)]
        state: StateDir,
        /// The root certificate (PEM): CA:TRUE, keyCertSign + cRLSign, URI SAN spiffe://<domain>.
        #[arg(long)]
        cert: PathBuf,
        /// Its private key (unencrypted PKCS#8 PEM, RSA).
        #[arg(long)]
        key: PathBuf,
    },
    /// Issue a certificate (1 year) from a node's CSR.
    #[command(
        after_help = "Example:\n  trust-proxy ca issue --state-dir ./certs --node-id 3 --csr node-3.csr --out node-3-cert.pem"
    )]
    Issue {
        #[command(flatten)]
        state: StateDir,
        #[command(flatten)]
        subject: SubjectArg,
        /// The PEM certificate request the node made (`trust-proxy key csr`).
        #[arg(long)]
        csr: PathBuf,
        /// Where to write the PEM certificate (must not exist).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        names: NamePolicyArgs,
    },
    /// Development shortcut: make a key here and issue its certificate (the key is written
    /// 0600 beside the certificate). In production nodes make their own keys.
    #[command(
        after_help = "Example:\n  trust-proxy ca issue-dev --state-dir ./certs --node-id 1 --out-dir ./node-1\n  writes ./node-1/node-1-key.pem (0600) and ./node-1/node-1-cert.pem"
    )]
    IssueDev {
        #[command(flatten)]
        state: StateDir,
        #[command(flatten)]
        subject: SubjectArg,
        /// Folder for `<name>-key.pem` and `<name>-cert.pem`.
        #[arg(long)]
        out_dir: PathBuf,
        /// DNS names to put in the certificate.
        #[arg(long)]
        dns: Vec<String>,
        /// IP addresses to put in the certificate.
        #[arg(long)]
        ip: Vec<IpAddr>,
        #[command(flatten)]
        names: NamePolicyArgs,
    },
    /// Revoke a certificate and publish a new CRL at once.
    #[command(
        after_help = "Example:\n  trust-proxy ca revoke --state-dir ./certs --cert node-3-cert.pem"
    )]
    Revoke {
        #[command(flatten)]
        state: StateDir,
        /// The certificate to revoke.
        #[arg(long, conflicts_with = "serial", required_unless_present = "serial")]
        cert: Option<PathBuf>,
        /// Or its serial, in hex (as `openssl x509 -serial` prints it).
        #[arg(long)]
        serial: Option<String>,
        /// How long the new CRL is valid.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        validity: Duration,
    },
    /// Sign and publish a fresh CRL (new number) and print it.
    #[command(after_help = "Example:\n  trust-proxy ca crl --state-dir ./certs --out crl.pem")]
    Crl {
        #[command(flatten)]
        state: StateDir,
        /// How long the CRL is valid.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        validity: Duration,
        /// Also write it here (PEM, or DER with --der).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write DER instead of PEM.
        #[arg(long, requires = "out")]
        der: bool,
    },
}

/// `trust-proxy key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate an RSA-2048 node key (PKCS#8 PEM, written 0600).
    Generate {
        /// Where to write it (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a certificate request for a key.
    #[command(
        after_help = "Example:\n  trust-proxy key csr --key node-key.pem --dns localhost --ip 127.0.0.1 --out node.csr"
    )]
    Csr {
        /// The node's private key.
        #[arg(long)]
        key: PathBuf,
        /// Subject common name (the CA replaces it with node-<id>).
        #[arg(long, default_value = "node")]
        name: String,
        /// DNS names to ask for.
        #[arg(long)]
        dns: Vec<String>,
        /// IP addresses to ask for.
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// Where to write the PEM CSR (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `trust-proxy cert ...`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Verify a certificate as a sidecar would: chain, validity, usage, key, CRL, identity.
    /// Exit 0 and print the identity, or exit 1 and print why not.
    #[command(
        after_help = "Example:\n  trust-proxy cert verify --ca ca-cert.pem --crl crl.pem node-3-cert.pem"
    )]
    Verify {
        /// The certificate (PEM).
        cert: PathBuf,
        /// The network's root certificate.
        #[arg(long)]
        ca: PathBuf,
        /// The current CRL (PEM). Verification fails closed without one.
        #[arg(long)]
        crl: PathBuf,
        /// Check it as a client (ingress) or server (egress) certificate.
        #[arg(long, value_enum, default_value_t = UsageArg::Client)]
        usage: UsageArg,
        /// Verify at this unix time instead of now.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Show a certificate's subject, SANs, key, validity, serial and fingerprint.
    Inspect {
        /// The certificate (PEM).
        cert: PathBuf,
    },
}

/// Certificate use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UsageArg {
    /// clientAuth.
    Client,
    /// serverAuth.
    Server,
}

/// The request being signed or verified.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Full URL as the sender addresses it, e.g. http://node-2.localhost:8443/fl/update.
    #[arg(long)]
    pub url: String,
    /// File holding the body (empty body if absent).
    #[arg(long)]
    pub body: Option<PathBuf>,
}

/// `trust-proxy message ...`
#[derive(Debug, Subcommand)]
#[allow(
    missing_docs,
    reason = "flattened argument groups carry their own docs"
)]
pub enum MessageCommand {
    /// Sign a request; prints the five X-* headers as `Name: value` lines.
    #[command(
        after_help = "Example:\n  trust-proxy message sign --key node-1-key.pem --cert node-1-cert.pem \\\n      --url http://node-2.localhost:8443/fl/update --body update.json"
    )]
    Sign {
        /// The signer's private key.
        #[arg(long)]
        key: PathBuf,
        /// The signer's certificate (gives its id and fingerprint).
        #[arg(long)]
        cert: PathBuf,
        #[command(flatten)]
        request: RequestArgs,
        /// Sign at this unix time instead of now.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Verify a signed request received from the peer whose certificate is given.
    #[command(
        after_help = "Example:\n  trust-proxy message verify --ca ca-cert.pem --crl crl.pem --peer node-1-cert.pem \\\n      --headers headers.txt --url http://node-2.localhost:8443/fl/update --body update.json"
    )]
    Verify {
        /// The TLS peer's certificate (PEM).
        #[arg(long)]
        peer: PathBuf,
        /// The network's root certificate.
        #[arg(long)]
        ca: PathBuf,
        /// The current CRL (PEM).
        #[arg(long)]
        crl: PathBuf,
        /// File with the received headers as `Name: value` lines.
        #[arg(long)]
        headers: PathBuf,
        #[command(flatten)]
        request: RequestArgs,
        /// Verify at this unix time instead of now.
        #[arg(long)]
        at: Option<u64>,
        /// Oldest accepted signature age.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        max_age: Duration,
    },
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
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trust-proxy: {e}");
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

impl SubjectArg {
    /// The subject named on the command line.
    pub fn subject(&self) -> crate::Result<trust_core::Subject> {
        match (&self.node_id, &self.admin) {
            (Some(id), None) => id
                .parse()
                .map(trust_core::Subject::Node)
                .map_err(|e| Error::Usage(format!("--node-id: {e}"))),
            (None, Some(name)) => name
                .parse()
                .map(trust_core::Subject::Admin)
                .map_err(|e| Error::Usage(format!("--admin: {e}"))),
            _ => Err(Error::Usage(
                "give exactly one of --node-id or --admin".into(),
            )),
        }
    }
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
