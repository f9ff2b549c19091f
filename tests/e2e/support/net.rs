//! The process harness: a real `trust-proxy authority` ([`Net`]) and real `trust-proxy run`
//! sidecars in front of real Flask apps ([`Node`]), all on 127.0.0.1, watched from the
//! outside (the apps' answers, `/readyz`, `/metrics`); with the helpers the tests that use
//! it share: issuing certificates with the CLI, mTLS requests by hand, `openssl s_client`,
//! replacing certificate files as an operator does, signals and policy sets.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sidecar::config::{EgressSection, IngressSection, PeerEntry, SidecarConfig};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

use super::process::{AuthorityProcess, Served, python, repo_root, trust_proxy};

/// An authority and a temp folder for the nodes' state.
pub struct Net {
    /// Holds the authority's and the nodes' folders.
    pub tmp: tempfile::TempDir,
    /// The authority (take it to kill it).
    pub authority: Option<AuthorityProcess>,
    /// `http://<authority address>`.
    pub url: String,
    /// The bootstrap token file.
    pub token: PathBuf,
}

/// A node: its sidecar, its app (if any) and its folder.
pub struct Node {
    /// Its sidecar, as a process or in-process.
    pub sidecar: Sidecar,
    /// The node's Flask app.
    pub app: Option<Served>,
    /// `<net>/node-<id>`.
    pub dir: PathBuf,
}

impl Net {
    /// Starts the authority with `extra` arguments (e.g. `--crl-validity 10s`).
    pub fn start(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let token = tmp.path().join("token");
        std::fs::write(&token, "e2e-bootstrap-token-0123456789").unwrap();
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let authority = AuthorityProcess::start_with(&tmp.path().join("authority"), &token, extra);
        Self {
            url: authority.url.clone(),
            authority: Some(authority),
            tmp,
            token,
        }
    }

    /// A typed client of this network's authority.
    pub fn api(&self) -> super::AuthorityApi {
        super::AuthorityApi::new(&self.url)
    }

    /// The config of node `id`'s sidecar in front of `upstream`, with `peers` (name,
    /// address, id) reachable through its egress: built with the `sidecar` crate's own
    /// types, as the testnet builds its configs, so a field the sidecar does not know
    /// cannot be written.
    pub fn config(&self, id: u32, upstream: &str, peers: &[(&str, &str, u32)]) -> SidecarConfig {
        let dir = self.tmp.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut ingress = IngressSection::new(loopback, upstream.parse().unwrap());
        ingress.signed_prefixes = vec!["/fl/".into()];
        let names = vec!["localhost".into(), "127.0.0.1".into()];
        let mut config = SidecarConfig::new(dir.join("state"), names, &self.url, ingress);
        config.node_id = Some(id);
        config.shutdown_grace = Duration::from_secs(20);
        config.authority.bootstrap_token_file = Some(self.token.clone());
        config.authority.crl_wait = Duration::from_secs(5);
        config.admin.listen = loopback;
        config.rotation.check_every = Duration::from_secs(1);
        let mut egress = EgressSection::new(loopback);
        egress.peers = peers
            .iter()
            .map(|(name, address, peer_id)| PeerEntry {
                name: (*name).to_owned(),
                address: (*address).to_owned(),
                node_id: Some(*peer_id),
            })
            .collect();
        config.egress = Some(egress);
        config
    }

    /// A `trust-proxy run` process for node `id` (see [`Self::config`]).
    pub fn sidecar(&self, id: u32, upstream: &str, peers: &[(&str, &str, u32)]) -> Served {
        self.sidecar_with_env(id, upstream, peers, &[])
    }

    /// As [`Self::sidecar`], with environment overrides (`TRUST_PROXY_<SECTION>_<FIELD>`).
    pub fn sidecar_with_env(
        &self,
        id: u32,
        upstream: &str,
        peers: &[(&str, &str, u32)],
        env: &[(&str, &str)],
    ) -> Served {
        self.spawn_sidecar(id, upstream, peers, env, &["--log", "info,sidecar=debug"])
    }

    /// Node `id`'s sidecar (no peers) logging as an operator runs it: JSON lines at the
    /// default level, not the tests' `sidecar=debug`; with environment overrides.
    pub fn sidecar_as_operator(&self, id: u32, upstream: &str, env: &[(&str, &str)]) -> Served {
        self.spawn_sidecar(id, upstream, &[], env, &["--log-format", "json"])
    }

    fn spawn_sidecar(
        &self,
        id: u32,
        upstream: &str,
        peers: &[(&str, &str, u32)],
        env: &[(&str, &str)],
        log: &[&str],
    ) -> Served {
        let config = self.config(id, upstream, peers);
        let dir = self.tmp.path().join(format!("node-{id}"));
        let file = dir.join("sidecar.toml");
        std::fs::write(&file, config.to_toml().unwrap()).unwrap();
        let mut cmd = trust_proxy();
        cmd.args(log)
            .args(["run", "--config"])
            .arg(&file)
            .env_remove("TRUST_PROXY_CONFIG")
            .envs(env.iter().copied());
        Served::spawn(
            cmd,
            dir.join("sidecar.log"),
            &["ingress", "egress", "admin"],
        )
    }

    /// Node `id`'s sidecar run inside this test process through `sidecar::run` (see
    /// [`Self::config`] and [`InProcess`]): for tests where no process boundary is under
    /// test.
    pub async fn in_process(
        &self,
        id: u32,
        upstream: &str,
        peers: &[(&str, &str, u32)],
    ) -> InProcess {
        InProcess::start(self.config(id, upstream, peers)).await
    }

    /// A Flask app named `name`, its outbound HTTP through `proxy`.
    pub fn app(&self, name: &str, proxy: Option<&str>) -> Served {
        let mut cmd = python();
        cmd.arg(repo_root().join("tests/python/flask_app.py"))
            .env("APP_NAME", name)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY");
        if let Some(p) = proxy {
            cmd.env("HTTP_PROXY", format!("http://{p}"));
        }
        Served::spawn(cmd, self.tmp.path().join(format!("app-{name}.log")), &[""])
    }

    /// Node B (id 1, app "b") and node A (id 2, app "a", calling B as `node-1`), their
    /// sidecars run as `how` says.
    pub async fn two_nodes(&self, how: How) -> (Node, Node) {
        let app_b = self.app("b", None);
        let sidecar_b = self.node_sidecar(how, 1, app_b.addr(""), &[]).await;
        // A's ingress is not used here: its upstream is a closed port.
        let peers = [("node-1", sidecar_b.addr("ingress"), 1)];
        let sidecar_a = self.node_sidecar(how, 2, "127.0.0.1:9", &peers).await;
        let app_a = self.app("a", Some(sidecar_a.addr("egress")));
        let dir = |id: u32| self.tmp.path().join(format!("node-{id}"));
        (
            Node {
                sidecar: sidecar_a,
                app: Some(app_a),
                dir: dir(2),
            },
            Node {
                sidecar: sidecar_b,
                app: Some(app_b),
                dir: dir(1),
            },
        )
    }

    /// Node `id`'s sidecar, run as `how` says.
    pub async fn node_sidecar(
        &self,
        how: How,
        id: u32,
        upstream: &str,
        peers: &[(&str, &str, u32)],
    ) -> Sidecar {
        match how {
            How::Process => Sidecar::Process(self.sidecar(id, upstream, peers)),
            How::InProcess => Sidecar::InProcess(self.in_process(id, upstream, peers).await),
        }
    }
}

/// How a test runs a sidecar: as `trust-proxy run` where the process boundary is under
/// test (signals, exit codes, restarts from disk, its log), else in-process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// `trust-proxy run`.
    Process,
    /// `sidecar::run` inside the test.
    InProcess,
}

/// A running sidecar.
pub enum Sidecar {
    /// `trust-proxy run`.
    Process(Served),
    /// `sidecar::run` inside the test.
    InProcess(InProcess),
}

impl Sidecar {
    /// The address of `what`: `ingress`, `egress` or `admin`.
    pub fn addr(&self, what: &str) -> &str {
        match self {
            Self::Process(served) => served.addr(what),
            Self::InProcess(running) => running.addr(what),
        }
    }

    /// The process, for a test about it.
    pub fn process(&mut self) -> &mut Served {
        match self {
            Self::Process(served) => served,
            Self::InProcess(_) => {
                panic!("this sidecar runs in-process; start it with How::Process")
            }
        }
    }
}

impl From<Served> for Sidecar {
    fn from(served: Served) -> Self {
        Self::Process(served)
    }
}

impl Node {
    /// Asks this node's app to make an outbound call; returns `{status, body}`.
    pub async fn call(&self, method: &str, url: &str, body: Value, headers: Value) -> Value {
        let app = self.app.as_ref().expect("the node has an app");
        reqwest::Client::new()
            .post(format!("http://{}/call", app.addr("")))
            .json(&json!({ "method": method, "url": url, "json": body, "headers": headers }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// GET `path` on the sidecar's admin listener: status and body.
    pub async fn admin(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{}{path}", self.sidecar.addr("admin")))
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Waits until the metric `series` reaches `at_least` (within `limit`).
    pub async fn wait_metric(&self, series: &str, at_least: f64, limit: Duration) {
        eventually(limit, series, move || async move {
            self.metric(series).await >= at_least
        })
        .await;
    }

    /// The value of the metric line starting with `series` (0 if absent).
    pub async fn metric(&self, series: &str) -> f64 {
        metric_at(self.sidecar.addr("admin"), series).await
    }
}

/// Polls `check` every 50 ms until it is true or `limit` passes; returns the time taken.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// Sends SIGTERM to `pid`.
pub fn sigterm(pid: u32) {
    let status = Command::new("bash")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .unwrap();
    assert!(status.success());
}

/// `ca issue-dev` against `state` (an authority's CA folder, or another CA); returns
/// (key, cert) paths.
pub fn issue_dev(
    state: &std::path::Path,
    out: &std::path::Path,
    subject: &[&str],
) -> (PathBuf, PathBuf) {
    let status = trust_proxy()
        .args(["ca", "issue-dev"])
        .args(subject)
        .args(["--dns", "localhost", "--ip", "127.0.0.1", "--state-dir"])
        .arg(state)
        .arg("--out-dir")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let stem = match subject {
        ["--node-id", id] => format!("node-{id}"),
        ["--admin", name] => (*name).to_owned(),
        other => panic!("unexpected subject {other:?}"),
    };
    (
        out.join(format!("{stem}-key.pem")),
        out.join(format!("{stem}-cert.pem")),
    )
}

/// An HTTP/1.1 connection over mTLS to `addr` as the holder of `key`/`cert`.
pub async fn mtls(
    addr: &str,
    ca: &std::path::Path,
    key: &std::path::Path,
    cert: &std::path::Path,
) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>, String> {
    mtls_with(addr, std::sync::Arc::new(mtls_config(ca, key, cert))).await
}

/// A client config trusting `ca` and presenting `key`/`cert` (PEM files).
pub fn mtls_config(
    ca: &std::path::Path,
    key: &std::path::Path,
    cert: &std::path::Path,
) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![rustls::pki_types::CertificateDer::from_pem_file(cert).unwrap()],
        rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap(),
    )
    .unwrap()
}

/// An HTTP/1.1 connection over TLS to `addr` with `config`; the error if the handshake
/// fails as the client sees it.
pub async fn mtls_with(
    addr: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .map_err(|e| e.to_string())?;
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

/// POSTs `body` to `path` with `host` and `headers` over `conn`; the status, or the error
/// when the connection failed.
pub async fn post(
    conn: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    host: &str,
    path: &str,
    body: &[u8],
    headers: &[(&'static str, String)],
) -> Result<u16, String> {
    use http_body_util::BodyExt as _;
    conn.ready().await.map_err(|e| e.to_string())?;
    let mut req = http::Request::post(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let response = conn
        .send_request(
            req.body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
                body,
            )))
            .unwrap(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok(status)
}

/// A new certificate for node `id`'s own key (in `state`), issued by the test authority's
/// CA with the CLI; its path.
pub fn replacement_certificate(net: &Net, state: &std::path::Path, id: u32) -> PathBuf {
    let csr = net.tmp.path().join(format!("node-{id}.csr"));
    let made = trust_proxy()
        .args([
            "key",
            "csr",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--key",
        ])
        .arg(state.join("node-key.pem"))
        .arg("--out")
        .arg(&csr)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let new_cert = net.tmp.path().join(format!("node-{id}-new.pem"));
    let issued = trust_proxy()
        .args(["ca", "issue", "--node-id", &id.to_string(), "--csr"])
        .arg(&csr)
        .arg("--out")
        .arg(&new_cert)
        .arg("--state-dir")
        .arg(net.tmp.path().join("authority"))
        .output()
        .unwrap();
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    new_cert
}

/// Replaces `path` the way tools do: write beside it, rename over it.
pub fn replace_file(path: &std::path::Path, content: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The base64 body of the first PEM certificate in `text`.
pub fn pem_body(text: &str) -> String {
    text.split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|s| s.split("-----END CERTIFICATE-----").next())
        .unwrap_or_default()
        .lines()
        .collect()
}

/// The certificate a fresh handshake with `addr` gets, as [`pem_body`].
pub fn served_certificate(addr: &str) -> String {
    let served = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    pem_body(&String::from_utf8_lossy(&served.stdout))
}

/// `openssl s_client` as `node`'s holder: one HTTP/1.1 request, optionally resuming the
/// session saved in `sess_in`, saving the new one to `sess_out`. Returns its stdout.
pub fn s_client(
    addr: &str,
    state: &std::path::Path,
    sess_in: Option<&std::path::Path>,
    sess_out: &std::path::Path,
) -> String {
    use std::io::Write as _;
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        addr,
        "-servername",
        "localhost",
        "-tls1_3",
        "-ign_eof",
    ])
    .arg("-CAfile")
    .arg(state.join("ca-cert.pem"))
    .arg("-cert")
    .arg(state.join("node-cert.pem"))
    .arg("-key")
    .arg(state.join("node-key.pem"))
    .arg("-sess_out")
    .arg(sess_out);
    if let Some(sess) = sess_in {
        cmd.arg("-sess_in").arg(sess);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
}

/// Environment that puts policy set `set` (from `policies/`) in force.
pub fn policy_env(set: &str) -> [(&'static str, String); 2] {
    [
        (
            "TRUST_PROXY_POLICY_SET",
            format!("\"{}\"", repo_root().join("policies").join(set).display()),
        ),
        (
            "TRUST_PROXY_POLICY_PLUGIN_DIR",
            format!("\"{}\"", policy_host::BUILT_PLUGIN_DIR),
        ),
    ]
}

/// A sidecar running in this process: `sidecar::run` on a task, on listeners bound here
/// on `127.0.0.1:0`. Ready once its `/readyz` says so (a certificate, a CRL installed).
/// Dropping it cancels the sidecar's shutdown token; [`InProcess::stop`] also waits for
/// `run` to return and hands back its result.
pub struct InProcess {
    ingress: String,
    egress: Option<String>,
    admin: String,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), sidecar::SidecarError>>>,
}

impl InProcess {
    /// Binds the config's listeners, starts `sidecar::run` and waits until it is ready
    /// (or serves knowing its node is revoked).
    pub async fn start(config: SidecarConfig) -> Self {
        let listeners = sidecar::Listeners::bind(&config).await.unwrap();
        let bound = listeners.addresses().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(sidecar::run(listeners, config, shutdown.clone()));
        let running = Self {
            ingress: bound.ingress.to_string(),
            egress: bound.egress.map(|a| a.to_string()),
            admin: bound.admin.to_string(),
            shutdown,
            task: Some(task),
        };
        let readyz = format!("http://{}/readyz", running.admin);
        // Ready, or serving with a current CRL that revokes this node (a test restarting a
        // revoked node), which /readyz reports as not ready, naming the revocation.
        eventually(
            Duration::from_secs(30),
            "the in-process sidecar is ready",
            || {
                let readyz = readyz.clone();
                async move {
                    let Ok(answer) = reqwest::get(&readyz).await else {
                        return false;
                    };
                    let ok = answer.status().is_success();
                    ok || answer
                        .text()
                        .await
                        .is_ok_and(|body| body.contains("is revoked by CRL"))
                }
            },
        )
        .await;
        running
    }

    /// The address of `what`: `ingress`, `egress` or `admin`.
    pub fn addr(&self, what: &str) -> &str {
        match what {
            "ingress" => &self.ingress,
            "admin" => &self.admin,
            "egress" => self.egress.as_deref().expect("the config has an egress"),
            other => panic!("no listener named {other}"),
        }
    }

    /// The value of the metric line starting with `series` (0 if absent).
    pub async fn metric(&self, series: &str) -> f64 {
        metric_at(&self.admin, series).await
    }

    /// Cancels the shutdown token and waits for `sidecar::run` to return.
    pub async fn stop(mut self) -> Result<(), sidecar::SidecarError> {
        self.shutdown.cancel();
        let task = self.task.take().expect("stopped once");
        task.await.expect("the sidecar task panicked")
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The value of the metric line starting with `series` at the admin listener `admin` (0 if
/// absent).
pub async fn metric_at(admin: &str, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}
