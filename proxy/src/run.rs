//! `trust-proxy run`: the sidecar process, a thin main over the `sidecar` crate. Reads
//! and validates the config, starts the sidecar (credentials, CRL), binds its listeners
//! only then, and serves until SIGTERM or Ctrl-C; SIGHUP asks for a reload.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use sidecar::config::SidecarConfig;
use sidecar::{Listeners, Sidecar};

use crate::error::{Error, Result};
use crate::signals::{forward_hangups, wait_for_signal};

/// The long help of `trust-proxy run`.
pub const HELP: &str = "\
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

/// `trust-proxy run`.
pub fn run(args: RunArgs) -> Result<()> {
    let config = SidecarConfig::load(&args.config, std::env::vars())?;
    if args.check {
        println!("{}: valid ({})", args.config.display(), summary(&config));
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Service(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        let Some(sidecar) = Sidecar::start(config, args.startup_timeout, &shutdown).await? else {
            return Ok(());
        };
        tokio::spawn(forward_hangups(sidecar.reload_handle()));
        let listeners = Listeners::bind(sidecar.config()).await?;
        let bound = listeners.addresses()?;
        // Scripts and tests read these lines to learn the bound ports.
        println!("ingress listening on {}", bound.ingress);
        if let Some(egress) = bound.egress {
            println!("egress listening on {egress}");
        }
        println!("admin listening on {}", bound.admin);
        Ok(sidecar.serve(listeners, shutdown).await?)
    })
}

/// One line on what the config says.
fn summary(config: &SidecarConfig) -> String {
    format!(
        "node {}, authority {}, ingress {} -> {}, policy {}",
        config.node_id.map_or_else(
            || "assigned by the authority".to_owned(),
            |id| id.to_string()
        ),
        config.authority.url,
        config.ingress.listen,
        config.ingress.upstream,
        config
            .policy
            .as_ref()
            .map_or_else(|| "none".to_owned(), |p| p.set.display().to_string()),
    )
}
