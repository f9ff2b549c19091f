//! `trust-proxy run`: the sidecar process, a thin main over the `sidecar` crate. Reads
//! and validates the config, starts the sidecar (credentials, CRL), binds its listeners
//! only then, and serves until SIGTERM or Ctrl-C; SIGHUP asks for a reload.

use tokio_util::sync::CancellationToken;

use sidecar::config::SidecarConfig;
use sidecar::{Listeners, Sidecar};

use crate::cli::RunArgs;
use crate::error::{Error, Result};
use crate::signals::{forward_hangups, wait_for_signal};

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
