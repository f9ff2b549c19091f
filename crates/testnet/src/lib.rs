//! # testnet
//!
//! `trust-proxy testnet`: the whole network on this machine's loopback, from one command.
//! The orchestrator only: the binary parses [`TestnetArgs`], owns the signals and calls
//! [`run`]; each sidecar it starts reads a config written by serialising
//! [`sidecar::config::SidecarConfig`].
//!
//! Starts, as child processes of this one:
//! - the trust authority (plain HTTP on loopback, as in production) and its own sidecar,
//!   the network's door to `/trust/*`, enforcing `policies/authority.toml`
//!   (only an admin certificate may revoke; `/trust/status` is open to anonymous clients);
//! - the example federated-learning aggregator (`deploy/apps/aggregator.py`) behind its
//!   sidecar, which requires signatures on `/fl/` and enforces `policies/node.toml`
//!   (replay window);
//! - N node agents (`deploy/apps/node_agent.py`), each with its own sidecar, whose
//!   training updates reach the aggregator through their sidecar's egress, signed and
//!   over mutual TLS.
//!
//! It waits until every sidecar is enrolled and the authority counts them verified, writes
//! `testnet.json` (every address, the certificate paths) and `prometheus-targets.json`
//! (for `monitoring/prometheus.yml`), prints what to try, and on Ctrl-C or SIGTERM stops
//! every child it started (SIGTERM, then SIGKILL after a grace period), by PID.
//!
//! Ports: with `--base-port B` (default 7000) slot `s` uses `B + 10 s + {0 app, 1 ingress,
//! 2 egress, 3 admin}`; slot 0 is the authority (its API is the "app"), slot 1 the
//! aggregator, slot `k + 1` node `k`. `--base-port 0` takes ephemeral ports everywhere
//! (tests do this) and `testnet.json` says where things landed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use clap::Args;
use sidecar::authority_client::AuthorityClient;
use sidecar::config::{EgressSection, IngressSection, PeerEntry, PolicySection, SidecarConfig};

use error::TestnetError as Error;
pub use error::{Result, TestnetError};

mod error;

/// Node id of the aggregator's sidecar.
pub const AGGREGATOR_ID: u32 = 1000;
/// Node id of the authority's own sidecar.
pub const AUTHORITY_FRONT_ID: u32 = 1001;
/// The largest `--nodes` (ids 1..=999 stay below the two service ids).
pub const MAX_NODES: u32 = 999;

/// The long help of `trust-proxy testnet`.
pub const HELP: &str = "\
Needs Python 3 with Flask and requests (scripts/testnet.sh makes .venv with them) and the
policy plugins (built by `cargo build`). Prints progress while the nodes enroll, then the
addresses and curl commands to try; writes <dir>/testnet.json (every address) and
<dir>/prometheus-targets.json (read by monitoring/prometheus.yml). Ctrl-C or SIGTERM stops
every process it started. A second run reuses <dir> (same CA, same node identities);
--fresh starts over (needed after revoking a node: a revoked identity cannot enroll again).

Ports (default --base-port 7000): the authority's API 7000, its sidecar 7001 (the door to
/trust/*), sidecar admin listeners (/metrics) 7003, 7013, 7023, ...; slot s uses
base + 10*s + {0 app, 1 ingress, 2 egress, 3 admin}; slot 1 is the aggregator, slot k+1
node k. --base-port 0 takes ephemeral ports (see testnet.json).

Example:
  trust-proxy testnet --nodes 5
  trust-proxy testnet --nodes 100 --dir /tmp/tn --fresh";

/// `trust-proxy testnet`'s flags.
#[derive(Debug, Args)]
pub struct TestnetArgs {
    /// How many node agents (ids 1..=N) to run.
    #[arg(long, default_value_t = 5)]
    pub nodes: u32,
    /// Folder for the CA, every node's state, configs and logs.
    #[arg(long, default_value = "testnet")]
    pub dir: PathBuf,
    /// Delete <dir> first (only if it is a testnet folder).
    #[arg(long)]
    pub fresh: bool,
    /// First port of the plan (see below); 0 for ephemeral ports.
    #[arg(long, default_value_t = 7000)]
    pub base_port: u16,
    /// Python with Flask and requests. Default: .venv/bin/python3 if present, else python3.
    #[arg(long, env = "TRUST_PROXY_PYTHON")]
    pub python: Option<PathBuf>,
    /// Folder with the example apps (aggregator.py, node_agent.py).
    #[arg(long, default_value = "deploy/apps")]
    pub apps: PathBuf,
    /// Folder with the policy sets (authority.toml, node.toml).
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
    /// Folder with the plugins' .wasm files.
    #[arg(long, default_value = policy_host::BUILT_PLUGIN_DIR)]
    pub plugin_dir: PathBuf,
    /// How often each node agent checks for a new round.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub round_interval: Duration,
    /// How long the aggregator waits for missing nodes before it closes a round without them.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub round_timeout: Duration,
    /// How long to wait for a process to serve, and for every node to be verified.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
    /// Log filter for the children (their logs go to <dir>/logs/).
    #[arg(long, default_value = "info")]
    pub child_log: String,
}

/// Runs the testnet until `shutdown` is cancelled or a child dies, then stops every
/// process it started.
pub async fn run(args: TestnetArgs, shutdown: CancellationToken) -> Result<()> {
    validate(&args)?;
    let mut net = Testnet::new(args);
    let outcome = net.start_and_serve(&shutdown).await;
    net.stop_all().await;
    outcome
}

fn validate(args: &TestnetArgs) -> Result<()> {
    if args.nodes == 0 || args.nodes > MAX_NODES {
        return Err(Error::Usage(format!(
            "--nodes: {} is out of range (1 to {MAX_NODES})",
            args.nodes
        )));
    }
    let top = u32::from(args.base_port) + 10 * (args.nodes + 1) + 3;
    if args.base_port != 0 && top > u32::from(u16::MAX) {
        return Err(Error::Usage(format!(
            "--base-port: {} nodes from port {} would need port {top}; lower --base-port or use 0 (ephemeral)",
            args.nodes, args.base_port
        )));
    }
    for (flag, path) in [("--apps", &args.apps), ("--policies", &args.policies)] {
        if !path.is_dir() {
            return Err(Error::NoInput {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "{flag} must name a folder (run from the repository root, or pass {flag})"
                    ),
                ),
            });
        }
    }
    Ok(())
}

/// One child process and where its stderr goes.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// The network being run.
struct Testnet {
    args: TestnetArgs,
    procs: Vec<Proc>,
    /// Sends the name of a child whose stdout closed (it exited).
    exited_tx: mpsc::UnboundedSender<String>,
    exited_rx: mpsc::UnboundedReceiver<String>,
    /// SHA-256 (hex) of the root, pinned in every sidecar's config.
    ca_pin: String,
}

/// Where one node's parts listen.
#[derive(Debug, Clone, serde::Serialize)]
struct NodeAddrs {
    node_id: u32,
    app: String,
    ingress: String,
    egress: String,
    admin: String,
}

impl Testnet {
    fn new(args: TestnetArgs) -> Self {
        let (exited_tx, exited_rx) = mpsc::unbounded_channel();
        Self {
            args,
            procs: Vec::new(),
            ca_pin: String::new(),
            exited_tx,
            exited_rx,
        }
    }

    fn port(&self, slot: u32, offset: u32) -> u16 {
        if self.args.base_port == 0 {
            return 0;
        }
        // validate() bounded the largest slot, so this fits.
        u16::try_from(u32::from(self.args.base_port) + 10 * slot + offset).unwrap_or(0)
    }

    fn addr(&self, slot: u32, offset: u32) -> String {
        format!("127.0.0.1:{}", self.port(slot, offset))
    }

    async fn start_and_serve(&mut self, shutdown: &CancellationToken) -> Result<()> {
        let started = Instant::now();
        let dir = self.prepare_dir()?;
        let python = self.check_python().await?;
        let token = dir.join("bootstrap-token");
        if !token.exists() {
            write_private(&token, &random_token()?)?;
        }

        // 1. The authority, then its own sidecar in front of it.
        let authority_state = dir.join("authority");
        let mut cmd = self.own_binary();
        cmd.args(["authority", "--listen", &self.addr(0, 0), "--state-dir"])
            .arg(&authority_state)
            .arg("--bootstrap-token-file")
            .arg(&token);
        let api = self
            .spawn("authority", cmd, &[""], shutdown)
            .await?
            .remove("")
            .unwrap_or_default();
        let authority_url = format!("http://{api}");
        // The testnet made the root, so every sidecar can pin it rather than trust the
        // first CA certificate it is handed.
        self.ca_pin = root_fingerprint(&authority_state.join("ca-cert.pem"))?;
        // State kept from an earlier run may hold a node revoked since: say so now, not
        // after the wait for it to verify runs out.
        let own = self
            .own_statuses(&AuthorityClient::new(&authority_url)?)
            .await?;
        self.refuse_revoked(&own, &dir)?;
        let front = self
            .start_sidecar(
                &dir,
                "authority-sidecar",
                SidecarPlan {
                    node_id: AUTHORITY_FRONT_ID,
                    slot: 0,
                    upstream: api.clone(),
                    authority_url: &authority_url,
                    token: &token,
                    signed: &[],
                    anonymous: &["/trust/status", "/trust/ca-certificate"],
                    local_authorities: &[],
                    policy_set: "authority.toml",
                    peers: &[],
                },
                shutdown,
            )
            .await?;
        let admin = self.issue_admin_certificate(&dir, &authority_state).await?;

        // 2. The aggregator and its sidecar.
        let mut cmd = python_command(&python, &self.args.apps.join("aggregator.py"));
        cmd.env("LISTEN", self.addr(1, 0))
            .env("ROUND_QUORUM", self.args.nodes.to_string())
            .env(
                "ROUND_TIMEOUT",
                format!("{}", self.args.round_timeout.as_secs_f64()),
            );
        let aggregator_app = self
            .spawn("aggregator", cmd, &[""], shutdown)
            .await?
            .remove("")
            .unwrap_or_default();
        let aggregator = self
            .start_sidecar(
                &dir,
                "aggregator-sidecar",
                SidecarPlan {
                    node_id: AGGREGATOR_ID,
                    slot: 1,
                    upstream: aggregator_app.clone(),
                    authority_url: &authority_url,
                    token: &token,
                    signed: &["/fl/"],
                    anonymous: &[],
                    local_authorities: &["aggregator"],
                    policy_set: "node.toml",
                    peers: &[],
                },
                shutdown,
            )
            .await?;

        // 3. The nodes: every sidecar starts at once (keys made and enrolments sent
        //    concurrently), then every app, each pointed at its sidecar's egress.
        let n = self.args.nodes;
        println!("enrolling {n} nodes");
        let peer = [("aggregator", aggregator.ingress.as_str(), AGGREGATOR_ID)];
        let mut launched = Vec::new();
        // With ephemeral ports each app's port is held open until just before the app
        // starts, so no sidecar starting meanwhile can be handed it.
        let mut held = Vec::new();
        for k in 1..=n {
            let slot = k + 1;
            let app_addr = if self.args.base_port == 0 {
                let (listener, addr) = reserve_port()?;
                held.push(Some(listener));
                addr
            } else {
                held.push(None);
                self.addr(slot, 0)
            };
            launched.push(self.launch_sidecar(
                &dir,
                &format!("node-{k}-sidecar"),
                SidecarPlan {
                    node_id: k,
                    slot,
                    upstream: app_addr,
                    authority_url: &authority_url,
                    token: &token,
                    signed: &["/fl/"],
                    anonymous: &[],
                    local_authorities: &[],
                    policy_set: "node.toml",
                    peers: &peer,
                },
            )?);
        }
        let mut nodes = Vec::new();
        for (done, one) in (1..=n).zip(launched) {
            nodes.push(self.sidecar_serving(one, shutdown).await?);
            if done % 10 == 0 || done == n {
                println!("  {done}/{n} sidecars enrolled and serving");
            }
        }
        let mut apps = Vec::new();
        for (node, reservation) in nodes.iter().zip(held) {
            drop(reservation);
            let k = node.node_id;
            let mut cmd = python_command(&python, &self.args.apps.join("node_agent.py"));
            cmd.env("LISTEN", &node.app)
                .env("HTTP_PROXY", format!("http://{}", node.egress))
                .env("NODE_SEED", k.to_string())
                .env(
                    "ROUND_INTERVAL",
                    format!("{}", self.args.round_interval.as_secs_f64()),
                );
            apps.push(self.launch(&format!("node-{k}"), cmd)?);
        }
        for (done, app) in (1..=n).zip(apps) {
            self.wait_serving(app, &[""], shutdown).await?;
            if done % 10 == 0 || done == n {
                println!("  {done}/{n} node apps serving");
            }
        }

        // 4. Wait until the authority counts every node of this testnet verified.
        if !self
            .wait_until_verified(&AuthorityClient::new(&authority_url)?, &dir, shutdown)
            .await?
        {
            return Ok(());
        }
        let elapsed = started.elapsed();

        let front_addrs = NodeAddrs {
            app: api.clone(),
            ..front
        };
        let aggregator_addrs = NodeAddrs {
            app: aggregator_app,
            ..aggregator
        };
        self.write_manifest(&dir, &front_addrs, &aggregator_addrs, &nodes, &admin)?;
        print_tour(
            &dir,
            self.args.nodes,
            elapsed,
            &front_addrs,
            &aggregator_addrs,
            &nodes,
            &admin,
        );

        // 5. Serve until a signal, or until a child dies (then stop everything and say which).
        tokio::select! {
            () = shutdown.cancelled() => Ok(()),
            Some(name) = self.exited_rx.recv() => {
                // Ctrl-C in a terminal signals the whole process group: a child may stop
                // a moment before this process sees the signal. That is an orderly stop.
                if tokio::time::timeout(Duration::from_millis(500), shutdown.cancelled())
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
                let log = self.procs.iter().find(|p| p.name == name).map(|p| p.log.clone());
                Err(Error::Service(format!(
                    "{name} exited; the testnet is stopping. Its log: {}",
                    log.map(|l| l.display().to_string()).unwrap_or_default()
                )))
            }
        }
    }

    /// The node ids this testnet runs: its nodes, the aggregator, the authority's sidecar.
    fn own_ids(&self) -> impl Iterator<Item = u32> {
        (1..=self.args.nodes).chain([AGGREGATOR_ID, AUTHORITY_FRONT_ID])
    }

    /// The authority's status of each of this testnet's nodes (`/trust/nodes`: `verified`,
    /// `revoked`, `expired`, ...); a node it has not enrolled yet is absent. Nodes
    /// enrolled outside the testnet (an operator's own) are left out.
    async fn own_statuses(&self, client: &AuthorityClient) -> Result<HashMap<u32, String>> {
        let own: Vec<u32> = self.own_ids().collect();
        Ok(client
            .nodes()
            .await?
            .into_iter()
            .filter_map(|n| Some((n.node_id.parse::<u32>().ok()?, n.status)))
            .filter(|(id, _)| own.contains(id))
            .collect())
    }

    /// A revoked node of this testnet can never enroll again: stop, and say how to start
    /// over.
    fn refuse_revoked(&self, own: &HashMap<u32, String>, dir: &Path) -> Result<()> {
        let mut revoked: Vec<u32> = own
            .iter()
            .filter(|(_, status)| status.as_str() == "revoked")
            .map(|(id, _)| *id)
            .collect();
        if revoked.is_empty() {
            return Ok(());
        }
        revoked.sort_unstable();
        Err(Error::StaleState(format!(
            "node(s) {revoked:?} of this testnet were revoked in an earlier run (state in {}), \
             and a revoked identity cannot enroll again: start a new network with --fresh \
             (it deletes {} and makes a new root)",
            dir.display(),
            dir.display()
        )))
    }

    /// Waits until the authority counts every node of this testnet verified; `false` if a
    /// shutdown came first.
    async fn wait_until_verified(
        &self,
        client: &AuthorityClient,
        dir: &Path,
        shutdown: &CancellationToken,
    ) -> Result<bool> {
        let deadline = Instant::now() + self.args.ready_timeout;
        loop {
            // The authority answered at start-up; a failure now is worth a retry.
            let own = match self.own_statuses(client).await {
                Ok(own) => own,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the nodes at the authority; retrying");
                    HashMap::new()
                }
            };
            self.refuse_revoked(&own, dir)?;
            let waiting: Vec<String> = self
                .own_ids()
                .filter_map(|id| match own.get(&id).map(String::as_str) {
                    Some("verified") => None,
                    Some(status) => Some(format!("node {id}: {status}")),
                    None => Some(format!("node {id}: not enrolled")),
                })
                .collect();
            if waiting.is_empty() {
                return Ok(true);
            }
            if Instant::now() > deadline {
                let expected = self.own_ids().count();
                return Err(Error::Service(format!(
                    "{} of {expected} certificates verified within {:?} (still waiting: {}); see the logs in {}, or start over with --fresh",
                    expected.saturating_sub(waiting.len()),
                    self.args.ready_timeout,
                    waiting.join(", "),
                    dir.join("logs").display()
                )));
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(false),
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    fn prepare_dir(&self) -> Result<PathBuf> {
        let dir = &self.args.dir;
        if self.args.fresh && dir.exists() {
            if !dir.join("bootstrap-token").exists() {
                return Err(Error::Usage(format!(
                    "--fresh: {} does not look like a testnet folder (no bootstrap-token); not deleting it",
                    dir.display()
                )));
            }
            std::fs::remove_dir_all(dir).map_err(|source| Error::CannotCreate {
                path: dir.clone(),
                source,
            })?;
        }
        std::fs::create_dir_all(dir.join("logs")).map_err(|source| Error::CannotCreate {
            path: dir.join("logs"),
            source,
        })?;
        std::path::absolute(dir).map_err(|source| Error::CannotCreate {
            path: dir.clone(),
            source,
        })
    }

    async fn check_python(&self) -> Result<PathBuf> {
        let python = self.args.python.clone().unwrap_or_else(default_python);
        let out = Command::new(&python)
            .args(["-c", "import flask, requests"])
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => Ok(python),
            _ => Err(Error::Usage(format!(
                "--python: {} cannot import flask and requests; run scripts/testnet.sh (it makes .venv), \
                 or `pip install -r deploy/apps/requirements.txt`, or pass --python",
                python.display()
            ))),
        }
    }

    fn own_binary(&self) -> Command {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("trust-proxy"));
        let mut cmd = Command::new(exe);
        cmd.env_remove("TRUST_PROXY_CONFIG")
            .env("TRUST_PROXY_LOG", &self.args.child_log);
        cmd
    }

    /// The config of the sidecar `plan` describes, its state in `folder`.
    fn sidecar_config(&self, folder: &Path, plan: &SidecarPlan<'_>) -> Result<SidecarConfig> {
        let addr = |text: &str| -> Result<std::net::SocketAddr> {
            text.parse()
                .map_err(|e| Error::Usage(format!("testnet address `{text}`: {e}")))
        };
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        let mut ingress =
            IngressSection::new(addr(&self.addr(plan.slot, 1))?, addr(&plan.upstream)?);
        ingress.signed_prefixes = owned(plan.signed);
        ingress.anonymous_prefixes = owned(plan.anonymous);
        ingress.local_authorities = owned(plan.local_authorities);
        let mut config = SidecarConfig::new(
            folder.join("state"),
            vec!["localhost".into(), "127.0.0.1".into()],
            plan.authority_url,
            ingress,
        );
        config.node_id = Some(plan.node_id);
        config.role = Some(
            match plan.node_id {
                AUTHORITY_FRONT_ID => "authority",
                AGGREGATOR_ID => "aggregator",
                _ => "agent",
            }
            .to_owned(),
        );
        config.shutdown_grace = std::time::Duration::from_secs(5);
        config.authority.bootstrap_token_file = Some(plan.token.to_owned());
        config.authority.ca_fingerprint = Some(self.ca_pin.clone());
        let mut egress = EgressSection::new(addr(&self.addr(plan.slot, 2))?);
        egress.peers = plan
            .peers
            .iter()
            .map(|(name, address, id)| PeerEntry {
                name: (*name).to_owned(),
                address: (*address).to_owned(),
                node_id: Some(*id),
            })
            .collect();
        config.egress = Some(egress);
        config.admin.listen = addr(&self.addr(plan.slot, 3))?;
        config.policy = Some(PolicySection::new(
            absolute(&self.args.policies).join(plan.policy_set),
            absolute(&self.args.plugin_dir),
        ));
        Ok(config)
    }

    /// Writes a sidecar's config and starts it without waiting.
    fn launch_sidecar(
        &mut self,
        dir: &Path,
        name: &str,
        plan: SidecarPlan<'_>,
    ) -> Result<(Pending, u32, String)> {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).map_err(|source| Error::CannotCreate {
            path: folder.clone(),
            source,
        })?;
        let config = self.sidecar_config(&folder, &plan)?;
        let config = format!(
            "# Written by `trust-proxy testnet`; see docs/examples/sidecar.toml for every field.\n{}",
            config.to_toml()?
        );
        let file = folder.join("sidecar.toml");
        std::fs::write(&file, config).map_err(|source| Error::CannotCreate {
            path: file.clone(),
            source,
        })?;
        let mut cmd = self.own_binary();
        cmd.arg("run").arg("--config").arg(&file);
        Ok((self.launch(name, cmd)?, plan.node_id, plan.upstream))
    }

    /// Waits for a launched sidecar's three listeners.
    async fn sidecar_serving(
        &self,
        (pending, node_id, app): (Pending, u32, String),
        shutdown: &CancellationToken,
    ) -> Result<NodeAddrs> {
        let mut addrs = self
            .wait_serving(pending, &["ingress", "egress", "admin"], shutdown)
            .await?;
        let mut take = |k: &str| addrs.remove(k).unwrap_or_default();
        Ok(NodeAddrs {
            node_id,
            app,
            ingress: take("ingress"),
            egress: take("egress"),
            admin: take("admin"),
        })
    }

    async fn start_sidecar(
        &mut self,
        dir: &Path,
        name: &str,
        plan: SidecarPlan<'_>,
        shutdown: &CancellationToken,
    ) -> Result<NodeAddrs> {
        let launched = self.launch_sidecar(dir, name, plan)?;
        self.sidecar_serving(launched, shutdown).await
    }

    async fn issue_admin_certificate(&mut self, dir: &Path, state: &Path) -> Result<AdminCert> {
        let out = dir.join("admin");
        let cert = AdminCert {
            ca: dir.join("authority-sidecar/state/ca-cert.pem"),
            cert: out.join("ops-cert.pem"),
            key: out.join("ops-key.pem"),
        };
        if cert.cert.exists() && cert.key.exists() {
            return Ok(cert);
        }
        let output = self
            .own_binary()
            .args(["ca", "issue-dev", "--admin", "ops", "--dns", "localhost"])
            .arg("--state-dir")
            .arg(state)
            .arg("--out-dir")
            .arg(&out)
            .output()
            .await
            .map_err(|e| Error::Service(format!("cannot run trust-proxy ca issue-dev: {e}")))?;
        if !output.status.success() {
            return Err(Error::Service(format!(
                "issuing the operator certificate failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(cert)
    }

    /// Spawns `cmd` as `name`, its stderr into `logs/<name>.log`, and waits until it printed
    /// `<what> listening on <addr>` for every `what` in `wait_for` (a bare line is `""`).
    async fn spawn(
        &mut self,
        name: &str,
        cmd: Command,
        wait_for: &[&str],
        shutdown: &CancellationToken,
    ) -> Result<HashMap<String, String>> {
        let pending = self.launch(name, cmd)?;
        self.wait_serving(pending, wait_for, shutdown).await
    }

    /// Spawns `cmd` as `name` without waiting; its `listening on` lines arrive on the
    /// returned handle.
    fn launch(&mut self, name: &str, mut cmd: Command) -> Result<Pending> {
        let log = self.args.dir.join("logs").join(format!("{name}.log"));
        let err = std::fs::File::create(&log).map_err(|source| Error::CannotCreate {
            path: log.clone(),
            source,
        })?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Service(format!("cannot start {name}: {e}")))?;
        let Some(stdout) = child.stdout.take() else {
            return Err(Error::Service(format!("{name}: no stdout pipe")));
        };
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            log: log.clone(),
        });
        let (tx, rx) = mpsc::unbounded_channel::<(String, String)>();
        let exited = self.exited_tx.clone();
        let who = name.to_owned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((what, addr)) = line.trim().split_once("listening on ") {
                    let _ = tx.send((what.trim().to_owned(), addr.trim().to_owned()));
                }
            }
            let _ = exited.send(who);
        });
        Ok(Pending {
            name: name.to_owned(),
            rx,
            log,
        })
    }

    /// Waits until `pending` printed a `listening on` line for every name in `wait_for`.
    async fn wait_serving(
        &self,
        mut pending: Pending,
        wait_for: &[&str],
        shutdown: &CancellationToken,
    ) -> Result<HashMap<String, String>> {
        let (name, log) = (&pending.name, &pending.log);
        let mut addrs = HashMap::new();
        let deadline = tokio::time::sleep(self.args.ready_timeout);
        tokio::pin!(deadline);
        while !wait_for.iter().all(|w| addrs.contains_key(*w)) {
            tokio::select! {
                got = pending.rx.recv() => match got {
                    Some((what, addr)) => { addrs.insert(what, addr); }
                    None => return Err(Error::Service(format!(
                        "{name} stopped before serving; the end of {}:\n{}",
                        log.display(), tail(log)
                    ))),
                },
                () = &mut deadline => return Err(Error::Service(format!(
                    "{name} did not start serving within {:?}; see {}",
                    self.args.ready_timeout, log.display()
                ))),
                () = shutdown.cancelled() => return Err(Error::Service("interrupted while starting".into())),
            }
        }
        Ok(addrs)
    }

    /// SIGTERM to every child, then SIGKILL to those still running after the grace period.
    async fn stop_all(&mut self) {
        // The exit watchers would report each child as it stops; nobody listens now.
        self.exited_rx.close();
        for p in &self.procs {
            if let Some(pid) = p
                .child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let grace = Duration::from_secs(8);
        let mut stopped = 0;
        for p in &mut self.procs {
            if tokio::time::timeout(grace, p.child.wait()).await.is_err() {
                tracing::warn!(process = %p.name, "did not stop within {grace:?}; killing it");
                let _ = p.child.kill().await;
            }
            stopped += 1;
        }
        if stopped > 0 {
            println!(
                "stopped {stopped} processes; state and logs stay in {}",
                self.args.dir.display()
            );
        }
    }

    fn write_manifest(
        &self,
        dir: &Path,
        front: &NodeAddrs,
        aggregator: &NodeAddrs,
        nodes: &[NodeAddrs],
        admin: &AdminCert,
    ) -> Result<()> {
        let manifest = serde_json::json!({
            "authority": { "api": front.app, "sidecar": front },
            "aggregator": aggregator,
            "nodes": nodes,
            "ca_certificate": admin.ca,
            "admin_certificate": admin.cert,
            "admin_key": admin.key,
            "bootstrap_token_file": dir.join("bootstrap-token"),
            "pids": self
                .procs
                .iter()
                .map(|p| (p.name.clone(), serde_json::json!(p.child.id())))
                .collect::<serde_json::Map<_, _>>(),
        });
        let mut sidecars = vec![front.admin.clone(), aggregator.admin.clone()];
        sidecars.extend(nodes.iter().map(|n| n.admin.clone()));
        let targets = serde_json::json!([
            { "targets": [front.app], "labels": { "job": "authority" } },
            { "targets": sidecars, "labels": { "job": "sidecar" } },
        ]);
        for (file, value) in [
            ("testnet.json", manifest),
            ("prometheus-targets.json", targets),
        ] {
            let path = dir.join(file);
            let text = serde_json::to_string_pretty(&value)
                .map_err(|e| Error::Service(format!("{file}: {e}")))?;
            std::fs::write(&path, text).map_err(|source| Error::CannotCreate { path, source })?;
        }
        Ok(())
    }
}

/// A child that was started and has not yet said where it listens.
struct Pending {
    name: String,
    rx: mpsc::UnboundedReceiver<(String, String)>,
    log: PathBuf,
}

/// What differs between the sidecars the testnet starts.
struct SidecarPlan<'a> {
    node_id: u32,
    slot: u32,
    upstream: String,
    authority_url: &'a str,
    token: &'a Path,
    /// `ingress.signed_prefixes`.
    signed: &'a [&'a str],
    /// `ingress.anonymous_prefixes`.
    anonymous: &'a [&'a str],
    /// `ingress.local_authorities`.
    local_authorities: &'a [&'a str],
    policy_set: &'a str,
    peers: &'a [(&'a str, &'a str, u32)],
}

/// The operator's certificate (revokes), and the CA certificate to trust.
struct AdminCert {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn print_tour(
    dir: &Path,
    n: u32,
    elapsed: Duration,
    front: &NodeAddrs,
    aggregator: &NodeAddrs,
    nodes: &[NodeAddrs],
    admin: &AdminCert,
) {
    let ca = admin.ca.display();
    let door = &front.ingress;
    let admin_tls = format!(
        "--cacert {ca} --cert {} --key {}",
        admin.cert.display(),
        admin.key.display()
    );
    let first = nodes.first().map(|n| n.admin.as_str()).unwrap_or_default();
    println!(
        "\ntestnet ready: {n} nodes verified in {:.1} s ({} certificates: the nodes, the aggregator, the authority's sidecar)
  state and logs   {}
  addresses        {}
  CA certificate   {ca}
  operator (admin) {}

Try:
  curl -s --cacert {ca} https://localhost:{}/trust/status | jq            # anonymous: open route
  curl -s {admin_tls} -X POST https://localhost:{}/trust/verify/1 | jq
  curl -s {admin_tls} -X POST https://localhost:{}/trust/revoke/2 | jq    # node 2 is cut off at once
  curl -s http://{}/fl/rounds | jq '.[-1]'                                 # the aggregator's last round
  curl -s http://{first}/metrics | grep '^tpm_'                            # node 1's sidecar metrics
{}

Ctrl-C stops everything.",
        elapsed.as_secs_f64(),
        n + 2,
        dir.display(),
        dir.join("testnet.json").display(),
        admin.cert.display(),
        port_of(door),
        port_of(door),
        port_of(door),
        aggregator.app,
        prometheus_lines(dir, on_path("prometheus")),
    );
}

/// The tour's Prometheus step: the command (its data kept in the testnet's folder, not
/// the working directory), preceded by how to install it where it is missing.
fn prometheus_lines(dir: &Path, installed: bool) -> String {
    let run = format!(
        "  prometheus --config.file=monitoring/prometheus.yml --storage.tsdb.path={} --web.listen-address=127.0.0.1:9091   # scrapes all of it: http://127.0.0.1:9091 (docs/metrics.md)",
        dir.join("prometheus").display()
    );
    if installed {
        run
    } else {
        format!(
            "  apt-get install -y --no-install-recommends prometheus                 # (as root) Prometheus is not installed; then:\n{run}"
        )
    }
}

/// Whether `program` is an executable file in a folder of `PATH`.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// SHA-256 of a PEM certificate's DER, hex (the form `authority.ca_fingerprint` takes).
fn root_fingerprint(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(Error::no_input(path))?;
    let der = pem::parse(text).map_err(|e| Error::BadInput {
        path: path.to_owned(),
        detail: format!("not a PEM certificate: {e}"),
    })?;
    Ok(hex::encode(
        trust_core::Fingerprint::of_der(der.contents()).0,
    ))
}

fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(_, p)| p).unwrap_or(addr)
}

fn python_command(python: &Path, script: &Path) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    cmd
}

fn default_python() -> PathBuf {
    let venv = PathBuf::from(".venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// An ephemeral loopback port for an app whose sidecar must know its address before the
/// app starts: the listener holds it until dropped.
fn reserve_port() -> Result<(std::net::TcpListener, String)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Service(format!("cannot bind an ephemeral port: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Service(format!("cannot read an ephemeral port: {e}")))?;
    Ok((listener, addr.to_string()))
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|e| Error::Service(format!("no randomness for the bootstrap token: {e}")))?;
    Ok(hex::encode(bytes))
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| Error::CannotCreate {
            path: path.to_owned(),
            source,
        })?;
    file.write_all(text.as_bytes())
        .map_err(|source| Error::CannotCreate {
            path: path.to_owned(),
            source,
        })
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tour_says_how_to_install_prometheus_where_it_is_missing() {
        let dir = Path::new("/tmp/tn");
        let installed = prometheus_lines(dir, true);
        assert!(
            installed
                .trim_start()
                .starts_with("prometheus --config.file=monitoring/prometheus.yml"),
            "{installed}"
        );
        assert!(installed.contains("--storage.tsdb.path=/tmp/tn/prometheus"));
        let missing = prometheus_lines(dir, false);
        assert!(missing.contains("apt-get install"), "{missing}");
        assert!(missing.ends_with(&installed), "{missing}");
    }

    #[test]
    fn a_program_is_found_on_the_path_only_when_it_is_an_executable_file() {
        assert!(on_path("sh"));
        assert!(!on_path("no-such-program-trust-proxy-test"));
    }
}
