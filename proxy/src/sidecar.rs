//! `trust-proxy run`: the sidecar process. Reads and validates the config, obtains the
//! node's credentials ([`CredentialStore`]), loads the last good CRL and follows the
//! authority's ([`CrlSource`]), then serves the ingress, the egress and the admin
//! listener until SIGTERM, renewing the certificate on the way. SIGHUP reloads the node
//! certificate (if its file changed) and the policy sets at once, as the periodic check
//! and the folder watcher would; a replacement that does not load is refused and counted,
//! and what was in force keeps serving.
//!
//! Order matters for failing closed: nothing listens before the node has a certificate,
//! and the ingress refuses every peer until a CRL is installed (the trust cache has none).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use trust_core::{CertificateVerifier, TrustCache};

use crate::admin::Admin;
use crate::authority_client::AuthorityClient;
use crate::cli::RunArgs;
use crate::config::SidecarConfig;
use crate::credentials::{CRL_FILE, CredentialStore, Tick};
use crate::crl_source::CrlSource;
use crate::egress::{Egress, EgressSettings, Expect, Route};
use crate::error::{Error, Result};
use crate::ingress::{Ingress, IngressSettings};
use crate::metrics::Metrics;
use crate::policy::{Admission, AllowAll, WasmPolicy};
use policy_host::PolicyHost;
use policy_host::seen::SeenStore;

/// `trust-proxy run`.
pub fn run(args: RunArgs) -> Result<()> {
    let config = SidecarConfig::load(&args.config, std::env::vars())?;
    if args.check {
        println!(
            "{}: valid (node {}, authority {}, ingress {} -> {}, policy {})",
            args.config.display(),
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
        );
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Service(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(serve(config, args.startup_timeout))
}

/// Runs the sidecar until SIGTERM or Ctrl-C.
pub async fn serve(config: SidecarConfig, startup_timeout: Duration) -> Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::serve::wait_for_signal(shutdown.clone()));
    let mut hangups = hangup_signals();
    let authority = Arc::new(AuthorityClient::new(&config.authority.url)?);
    let Some(credentials) = retry_while_unavailable(startup_timeout, &shutdown, || {
        CredentialStore::open(&config, &authority)
    })
    .await?
    else {
        return Ok(());
    };
    let credentials = Arc::new(credentials);
    let identity = credentials.current().identity.clone();
    tracing::info!(spiffe_id = %identity.spiffe_id, "node identity ready");

    let cache = Arc::new(TrustCache::new(
        CertificateVerifier::new(credentials.root().clone(), Default::default()),
        Default::default(),
    ));
    let metrics = Metrics::new();
    let mut crls = CrlSource::new(
        Arc::clone(&authority),
        Arc::clone(&cache),
        config.authority.crl_wait,
    )
    .with_metrics(metrics.clone())
    .saved_in(config.state_dir.join(CRL_FILE));
    crls.load_saved();
    if let Err(reason) = crls.fetch().await {
        tracing::warn!(%reason, "cannot fetch the CRL at start-up; serving with the saved one (if any) and retrying");
    }
    let mut tasks = JoinSet::new();
    tasks.spawn(crls.run(shutdown.clone()));

    let ingress_listener = bind(config.ingress.listen, "ingress.listen").await?;
    let ingress_addr = local_addr(&ingress_listener, "ingress.listen")?;
    let mut local_authorities = config.names.clone();
    local_authorities.push(format!("node-{}", identity.id_string()));
    local_authorities.extend(config.ingress.local_authorities.iter().cloned());
    let with_port: Vec<String> = local_authorities
        .iter()
        .map(|n| format!("{n}:{}", ingress_addr.port()))
        .collect();
    local_authorities.extend(with_port);
    local_authorities.push(ingress_addr.to_string());
    let settings = IngressSettings {
        upstream: config.ingress.upstream,
        local_authorities,
        signed_prefixes: config.ingress.signed_route_prefixes()?,
        anonymous_prefixes: config.ingress.anonymous_route_prefixes()?,
        max_body: config.ingress.max_body_bytes,
        upstream_timeout: config.limits.upstream_timeout,
        handshake_timeout: config.limits.handshake_timeout,
        header_read_timeout: config.limits.header_read_timeout,
        body_read_timeout: config.limits.body_read_timeout,
        max_header_bytes: config.limits.max_header_bytes,
        max_connections: config.limits.max_connections,
        http2_max_streams: config.limits.http2_max_streams,
        drain: config.shutdown_grace,
        window: Default::default(),
    };
    let mut policy_watches = Vec::new();
    let mut policy_hosts = Vec::new();
    let admission: Arc<dyn Admission> = match &config.policy {
        None => Arc::new(AllowAll),
        Some(section) => {
            let start = |set: &std::path::Path,
                         observer: Arc<dyn policy_host::Observer>,
                         field: &str|
             -> Result<(Arc<PolicyHost>, policy_host::chain::Watcher)> {
                let host = Arc::new(
                    PolicyHost::new(
                        set,
                        &section.plugin_dir,
                        Arc::new(SeenStore::new(section.seen_capacity)),
                        observer,
                    )
                    .map_err(|e| Error::Usage(format!("config `{field}`: {e}")))?,
                );
                let watch = host
                    .watch(section.reload_debounce)
                    .map_err(|e| Error::Service(e.to_string()))?;
                tracing::info!(set = %set.display(), plugins = ?host.plugins(), "{field} loaded; watching for changes");
                Ok((host, watch))
            };
            let (host, watch) = start(&section.set, Arc::new(metrics.clone()), "policy.set")?;
            policy_watches.push(watch);
            policy_hosts.push(Arc::clone(&host));
            let mut policy = WasmPolicy::new(host);
            if let Some(shadow_set) = &section.shadow_set {
                let (shadow, watch) = start(
                    shadow_set,
                    Arc::new(crate::metrics::ShadowMetrics(metrics.clone())),
                    "policy.shadow_set",
                )?;
                policy_watches.push(watch);
                policy_hosts.push(Arc::clone(&shadow));
                policy = policy.with_shadow(shadow, metrics.clone());
            }
            Arc::new(policy)
        }
    };
    let ingress = Arc::new(Ingress::new(
        Arc::clone(&cache),
        credentials.server_resolver(),
        settings,
        admission,
        metrics.clone(),
    )?);
    let threads = config.limits.worker_threads;
    let ingress_stop = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) =
            crate::ingress::serve_on_threads(ingress_listener, ingress, ingress_stop, threads).await
        {
            tracing::error!(error = %e, "the ingress stopped");
        }
    });
    println!("ingress listening on {ingress_addr}");

    if let Some(section) = &config.egress {
        let listener = bind(section.listen, "egress.listen").await?;
        let addr = local_addr(&listener, "egress.listen")?;
        let peers = section
            .peers
            .iter()
            .map(|p| {
                let expect = match p.node_id {
                    Some(id) => Expect::Node(id),
                    None => Expect::DnsName(p.name.to_ascii_lowercase()),
                };
                (
                    p.name.to_ascii_lowercase(),
                    Route {
                        address: p.address.clone(),
                        expect,
                    },
                )
            })
            .collect();
        let egress = Arc::new(Egress::new(
            Arc::clone(&credentials),
            Arc::clone(&cache),
            EgressSettings {
                peers,
                default_peer_port: section.default_peer_port,
                max_body: section.max_body_bytes,
                timeout: config.limits.upstream_timeout,
                drain: config.shutdown_grace,
            },
            metrics.clone(),
        ));
        tasks.spawn(crate::egress::serve(listener, egress, shutdown.clone()));
        println!("egress listening on {addr}");
    }

    let admin_listener = bind(config.admin.listen, "admin.listen").await?;
    let admin_addr = local_addr(&admin_listener, "admin.listen")?;
    let admin = Arc::new(Admin {
        credentials: Arc::clone(&credentials),
        cache: Arc::clone(&cache),
        metrics: metrics.clone(),
    });
    let admin_stop = CancellationToken::new();
    tokio::spawn(crate::admin::serve(
        admin_listener,
        admin,
        admin_stop.clone(),
    ));
    println!("admin listening on {admin_addr}");
    tracing::info!(ingress = %ingress_addr, admin = %admin_addr, "sidecar serving");

    loop {
        let asked = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(config.rotation.check_every) => false,
            _ = next_hangup(&mut hangups) => true,
        };
        if asked {
            tracing::info!("SIGHUP: reloading the node certificate and the policy sets");
            for host in &policy_hosts {
                // A set that does not load is logged and counted by the host; the one in
                // force keeps serving.
                let _ = host.reload();
            }
        }
        match credentials
            .tick(&authority, config.rotation.renew_at, &config.names)
            .await
        {
            Ok(Tick::NotDue) => {}
            Ok(Tick::Renewed) => metrics.rotations.with_label_values(&["renewed"]).inc(),
            Ok(Tick::Reloaded) => metrics.rotations.with_label_values(&["reloaded"]).inc(),
            Err(e) => {
                metrics.rotations.with_label_values(&["failed"]).inc();
                tracing::warn!(error = %e, "certificate renewal failed; retrying at the next check");
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    admin_stop.cancel();
    tracing::info!("sidecar stopped");
    Ok(())
}

/// SIGHUP as a stream, or `None` (logged) where it cannot be listened for.
fn hangup_signals() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signals) => Some(signals),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the certificate and the policy reload on their own schedule only");
            None
        }
    }
}

/// The next SIGHUP; never, without a stream.
async fn next_hangup(signals: &mut Option<tokio::signal::unix::Signal>) {
    if let Some(signals) = signals
        && signals.recv().await.is_some()
    {
        return;
    }
    std::future::pending::<()>().await;
}

/// Retries `attempt` while the authority is unreachable, up to `limit`; `None` if
/// shutdown was asked for meanwhile.
async fn retry_while_unavailable<T, F, Fut>(
    limit: Duration,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut backoff = Duration::from_millis(250);
    loop {
        match attempt().await {
            Ok(v) => return Ok(Some(v)),
            Err(Error::Unavailable(reason)) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::info!(%reason, retry_in = ?backoff, "waiting for the authority");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

async fn bind(addr: std::net::SocketAddr, field: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Usage(format!("config `{field}` {addr}: {e}")))
}

fn local_addr(listener: &TcpListener, field: &str) -> Result<std::net::SocketAddr> {
    listener
        .local_addr()
        .map_err(|e| Error::Usage(format!("config `{field}`: {e}")))
}
