//! Start-up and the serving loop: the sidecar from "I have a config" to "stopped".
//!
//! [`Sidecar::start`] obtains the node's credentials ([`CredentialStore`]), loads the last
//! good CRL and fetches the authority's ([`CrlSource`]); [`Sidecar::serve`] then serves
//! the ingress, the egress and the admin listener it is given until `shutdown` is
//! cancelled, renewing the certificate on the way. A [`Reload`] (the binary sends one on
//! SIGHUP) reloads the node certificate (if its file changed) and the policy sets at once,
//! as the periodic check and the folder watcher would; a replacement that does not load is
//! refused and counted, and what was in force keeps serving.
//!
//! Order matters for failing closed: the binary binds nothing before the node has a
//! certificate ([`Sidecar::start`] returns first), and the ingress refuses every peer until
//! a CRL is installed (the trust cache has none).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use trust_core::{CertificateVerifier, TrustCache};

use crate::admin::Admin;
use crate::authority_client::{AuthorityClient, retry_delays};
use crate::config::{EgressSection, PolicySection, SidecarConfig};
use crate::credentials::{CRL_FILE, CredentialStore, Tick};
use crate::crl_source::CrlSource;
use crate::egress::{Egress, EgressSettings, Expect, Route};
use crate::error::{Result, SidecarError as Error};
use crate::ingress::{Ingress, IngressSettings};
use crate::metrics::{Metrics, ShadowMetrics};
use crate::policy::{Admission, AllowAll, WasmPolicy};
use policy_host::PolicyHost;
use policy_host::seen::SeenStore;

/// How long [`run`] keeps retrying an unreachable authority at start-up (the binary's
/// `--startup-timeout` default).
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs a sidecar on `listeners` until `shutdown` is cancelled: [`Sidecar::start`] then
/// [`Sidecar::serve`]. The listeners are bound before the node has its certificate; a
/// caller that must not listen before then (the binary) calls the two steps itself.
pub async fn run(
    listeners: Listeners,
    config: SidecarConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    match Sidecar::start(config, DEFAULT_STARTUP_TIMEOUT, &shutdown).await? {
        Some(sidecar) => sidecar.serve(listeners, shutdown).await,
        None => Ok(()),
    }
}

/// The sockets a sidecar serves on: the ingress (mTLS), the egress (the app's
/// `HTTP_PROXY`, if the config has an `[egress]` section) and the admin listener.
#[derive(Debug)]
pub struct Listeners {
    /// `ingress.listen`.
    pub ingress: TcpListener,
    /// `egress.listen`; required exactly when the config has an `[egress]` section.
    pub egress: Option<TcpListener>,
    /// `admin.listen`.
    pub admin: TcpListener,
}

/// Where [`Listeners`] are bound (a port of 0 in the config becomes a real one here).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// The ingress.
    pub ingress: SocketAddr,
    /// The egress, if any.
    pub egress: Option<SocketAddr>,
    /// The admin listener.
    pub admin: SocketAddr,
}

impl Listeners {
    /// Binds the addresses the config names; an error names the field.
    pub async fn bind(config: &SidecarConfig) -> Result<Self> {
        let egress = match &config.egress {
            Some(section) => Some(bind(section.listen, "egress.listen").await?),
            None => None,
        };
        Ok(Self {
            ingress: bind(config.ingress.listen, "ingress.listen").await?,
            egress,
            admin: bind(config.admin.listen, "admin.listen").await?,
        })
    }

    /// Where each listener is bound.
    pub fn addresses(&self) -> Result<Addresses> {
        Ok(Addresses {
            ingress: local_addr(&self.ingress, "ingress.listen")?,
            egress: self
                .egress
                .as_ref()
                .map(|l| local_addr(l, "egress.listen"))
                .transpose()?,
            admin: local_addr(&self.admin, "admin.listen")?,
        })
    }
}

/// Asks a serving sidecar to reload its certificate and policy sets now (SIGHUP, in the
/// binary). Cheap to clone; a request made while a reload runs is kept for the next.
#[derive(Debug, Clone, Default)]
pub struct Reload(Arc<Notify>);

impl Reload {
    /// Asks for a reload.
    pub fn request(&self) {
        self.0.notify_one();
    }
}

/// A sidecar whose node has its credentials and whose CRL is loaded (or being fetched):
/// ready to serve.
pub struct Sidecar {
    config: SidecarConfig,
    authority: Arc<AuthorityClient>,
    credentials: Arc<CredentialStore>,
    cache: Arc<TrustCache>,
    metrics: Metrics,
    crls: CrlSource,
    policies: Policies,
    reload: Reload,
}

impl Sidecar {
    /// Obtains the node's credentials (enrolling or renewing if needed; retrying an
    /// unreachable authority for up to `startup_timeout`), loads the saved CRL and fetches
    /// the authority's, and loads the policy sets. `None` if `shutdown` was cancelled
    /// while waiting.
    pub async fn start(
        config: SidecarConfig,
        startup_timeout: Duration,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>> {
        let authority = Arc::new(AuthorityClient::new(&config.authority.url)?);
        let Some(credentials) = retry_while_unavailable(startup_timeout, shutdown, || {
            CredentialStore::open(&config, &authority)
        })
        .await?
        else {
            return Ok(None);
        };
        let credentials = Arc::new(credentials);
        let spiffe_id = credentials.current().identity.spiffe_id.clone();
        tracing::info!(%spiffe_id, "node identity ready");
        let cache = Arc::new(TrustCache::new(
            CertificateVerifier::new(credentials.root().clone(), Default::default()),
            Default::default(),
        ));
        let metrics = Metrics::new();
        let policies = policies(&config, &metrics)?;
        let mut crls = CrlSource::new(
            Arc::clone(&authority),
            Arc::clone(&cache),
            config.authority.crl_wait,
        )
        .with_metrics(metrics.clone())
        .saved_in(config.state_dir.join(CRL_FILE))
        .announcing(
            Arc::clone(&credentials),
            config.role.clone(),
            crate::authority_client::host_name(),
        );
        crls.load_saved();
        if let Err(reason) = crls.fetch().await {
            tracing::warn!(%reason, "cannot fetch the CRL at start-up; serving with the saved one (if any) and retrying");
        }
        Ok(Some(Self {
            config,
            authority,
            credentials,
            cache,
            metrics,
            crls,
            policies,
            reload: Reload::default(),
        }))
    }

    /// The handle that asks this sidecar to reload.
    pub fn reload_handle(&self) -> Reload {
        self.reload.clone()
    }

    /// The config it runs with.
    pub fn config(&self) -> &SidecarConfig {
        &self.config
    }

    /// Serves on `listeners` until `shutdown` is cancelled, then drains in-flight requests
    /// (up to `shutdown_grace`) and returns.
    pub async fn serve(self, listeners: Listeners, shutdown: CancellationToken) -> Result<()> {
        let addresses = listeners.addresses()?;
        let Self {
            config,
            authority,
            credentials,
            cache,
            metrics,
            crls,
            policies,
            reload,
        } = self;
        let mut tasks = JoinSet::new();
        tasks.spawn(crls.run(shutdown.clone()));
        let (log, stop) = (Arc::clone(&metrics.log), shutdown.clone());
        tasks.spawn(async move { log.summarise_until(stop.cancelled_owned()).await });

        let settings = ingress_settings(&config, &credentials, addresses.ingress)?;
        let ingress = Arc::new(Ingress::new(
            Arc::clone(&cache),
            credentials.server_resolver(),
            settings,
            Arc::clone(&policies.admission),
            metrics.clone(),
        )?);
        let (threads, stop) = (config.limits.worker_threads, shutdown.clone());
        tasks.spawn(async move {
            if let Err(e) =
                crate::ingress::serve_on_threads(listeners.ingress, ingress, stop, threads).await
            {
                tracing::error!(error = %e, "the ingress stopped");
            }
        });
        if let Some((listener, egress)) =
            egress(&config, listeners.egress, &credentials, &cache, &metrics)?
        {
            tasks.spawn(crate::egress::serve(listener, egress, shutdown.clone()));
        }
        let admin = Arc::new(Admin {
            credentials: Arc::clone(&credentials),
            cache: Arc::clone(&cache),
            metrics: metrics.clone(),
        });
        let admin_stop = CancellationToken::new();
        tokio::spawn(crate::admin::serve(
            listeners.admin,
            admin,
            admin_stop.clone(),
        ));
        tracing::info!(ingress = %addresses.ingress, admin = %addresses.admin, "sidecar serving");

        let upkeep = Upkeep {
            config: &config,
            authority: &authority,
            credentials: &credentials,
            metrics: &metrics,
            policy_hosts: &policies.hosts,
        };
        upkeep.until(&shutdown, &reload).await;
        while tasks.join_next().await.is_some() {}
        admin_stop.cancel();
        metrics.log.flush_all();
        tracing::info!("sidecar stopped");
        Ok(())
    }
}

/// What keeps a serving sidecar current: the periodic certificate check (reload a
/// replaced file, renew when due) and the reloads asked for.
struct Upkeep<'a> {
    config: &'a SidecarConfig,
    authority: &'a AuthorityClient,
    credentials: &'a CredentialStore,
    metrics: &'a Metrics,
    policy_hosts: &'a [Arc<PolicyHost>],
}

impl Upkeep<'_> {
    /// Checks every `rotation.check_every`, and at once on a reload request, until
    /// `shutdown`.
    async fn until(&self, shutdown: &CancellationToken, reload: &Reload) {
        loop {
            let asked = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.config.rotation.check_every) => false,
                _ = reload.0.notified() => true,
            };
            if asked {
                tracing::info!("reload asked: reloading the node certificate and the policy sets");
                for host in self.policy_hosts {
                    // A set that does not load is logged and counted by the host; the one
                    // in force keeps serving.
                    let _ = host.reload();
                }
            }
            let renew_at = self.config.rotation.renew_at;
            let tick = self
                .credentials
                .tick(self.authority, renew_at, &self.config.names);
            match tick.await {
                Ok(Tick::NotDue) => {}
                Ok(Tick::Renewed) => self.metrics.rotations.with_label_values(&["renewed"]).inc(),
                Ok(Tick::Reloaded) => self
                    .metrics
                    .rotations
                    .with_label_values(&["reloaded"])
                    .inc(),
                Err(e) => {
                    self.metrics.rotations.with_label_values(&["failed"]).inc();
                    tracing::warn!(error = %e, "certificate renewal failed; retrying at the next check");
                }
            }
        }
    }
}

/// The egress, when the config has one, on its listener; a listener without the section
/// or the section without a listener is a config error.
fn egress(
    config: &SidecarConfig,
    listener: Option<TcpListener>,
    credentials: &Arc<CredentialStore>,
    cache: &Arc<TrustCache>,
    metrics: &Metrics,
) -> Result<Option<(TcpListener, Arc<Egress>)>> {
    match (&config.egress, listener) {
        (Some(section), Some(listener)) => {
            let egress = Egress::new(
                Arc::clone(credentials),
                Arc::clone(cache),
                egress_settings(section, config),
                metrics.clone(),
            );
            Ok(Some((listener, Arc::new(egress))))
        }
        (None, None) => Ok(None),
        (Some(_), None) => Err(Error::Config(
            "config `egress` is set but no egress listener was given".into(),
        )),
        (None, Some(_)) => Err(Error::Config(
            "an egress listener was given but the config has no `egress` section".into(),
        )),
    }
}

/// The ingress's settings: the config's, plus every name this node answers to (its
/// configured names, `node-<id>`, each with the bound port, and the bound address).
fn ingress_settings(
    config: &SidecarConfig,
    credentials: &CredentialStore,
    bound: SocketAddr,
) -> Result<IngressSettings> {
    let mut local_authorities = config.names.clone();
    local_authorities.push(format!(
        "node-{}",
        credentials.current().identity.id_string()
    ));
    local_authorities.extend(config.ingress.local_authorities.iter().cloned());
    let with_port: Vec<String> = local_authorities
        .iter()
        .map(|n| format!("{n}:{}", bound.port()))
        .collect();
    local_authorities.extend(with_port);
    local_authorities.push(bound.to_string());
    Ok(IngressSettings {
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
    })
}

/// The egress's settings: each configured peer's route, by its lower-cased name.
fn egress_settings(section: &EgressSection, config: &SidecarConfig) -> EgressSettings {
    let peers = section
        .peers
        .iter()
        .map(|p| {
            let expect = match p.node_id {
                Some(id) => Expect::Node(id),
                None => Expect::DnsName(p.name.to_ascii_lowercase()),
            };
            let route = Route {
                address: p.address.clone(),
                expect,
            };
            (p.name.to_ascii_lowercase(), route)
        })
        .collect();
    EgressSettings {
        peers,
        default_peer_port: section.default_peer_port,
        max_body: section.max_body_bytes,
        timeout: config.limits.upstream_timeout,
        drain: config.shutdown_grace,
    }
}

/// The admission step and what keeps it current.
struct Policies {
    /// Allow-all without a `[policy]` section, else the Wasm chain (with its shadow set).
    admission: Arc<dyn Admission>,
    /// The hosts, to reload on request.
    hosts: Vec<Arc<PolicyHost>>,
    /// Their folder watchers: held, never read, so they watch while the sidecar serves.
    _watches: Vec<policy_host::chain::Watcher>,
}

/// Loads the policy sets the config names.
fn policies(config: &SidecarConfig, metrics: &Metrics) -> Result<Policies> {
    let Some(section) = &config.policy else {
        return Ok(Policies {
            admission: Arc::new(AllowAll),
            hosts: Vec::new(),
            _watches: Vec::new(),
        });
    };
    let observer = Arc::new(metrics.clone());
    let (host, watch) = policy_host(section, &section.set, observer, "policy.set")?;
    let mut hosts = vec![Arc::clone(&host)];
    let mut watches = vec![watch];
    let mut policy = WasmPolicy::new(host);
    if let Some(shadow_set) = &section.shadow_set {
        let observer = Arc::new(ShadowMetrics(metrics.clone()));
        let (shadow, watch) = policy_host(section, shadow_set, observer, "policy.shadow_set")?;
        hosts.push(Arc::clone(&shadow));
        watches.push(watch);
        policy = policy.with_shadow(shadow, metrics.clone());
    }
    Ok(Policies {
        admission: Arc::new(policy),
        hosts,
        _watches: watches,
    })
}

/// Loads the policy set at `set` and starts watching its folder.
fn policy_host(
    section: &PolicySection,
    set: &std::path::Path,
    observer: Arc<dyn policy_host::Observer>,
    field: &str,
) -> Result<(Arc<PolicyHost>, policy_host::chain::Watcher)> {
    let seen = Arc::new(SeenStore::new(section.seen_capacity));
    let host = match &section.compile_cache {
        Some(dir) => PolicyHost::with_compile_cache(set, &section.plugin_dir, seen, observer, dir),
        None => PolicyHost::new(set, &section.plugin_dir, seen, observer),
    }
    .map_err(|e| Error::Config(format!("config `{field}`: {e}")))?;
    if let Some((hits, misses)) = host.compile_cache_counts() {
        tracing::info!(
            from_cache = hits,
            compiled = misses,
            "{field}: compile cache used"
        );
    }
    let host = Arc::new(host);
    let watch = host
        .watch(section.reload_debounce)
        .map_err(|e| Error::Service(e.to_string()))?;
    tracing::info!(set = %set.display(), plugins = ?host.plugins(), "{field} loaded; watching for changes");
    Ok((host, watch))
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
    let cap = Duration::from_secs(5);
    let mut delays = retry_delays(Duration::from_millis(250), cap);
    loop {
        let backoff = delays.next().unwrap_or(cap);
        match attempt().await {
            Ok(v) => return Ok(Some(v)),
            Err(Error::Unavailable(reason)) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::info!(%reason, retry_in = ?backoff, "waiting for the authority");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

async fn bind(addr: std::net::SocketAddr, field: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("config `{field}` {addr}: {e}")))
}

fn local_addr(listener: &TcpListener, field: &str) -> Result<std::net::SocketAddr> {
    listener
        .local_addr()
        .map_err(|e| Error::Config(format!("config `{field}`: {e}")))
}
