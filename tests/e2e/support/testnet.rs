//! The testnet harness: a running `trust-proxy testnet` (the authority behind its sidecar,
//! the example aggregator and node agents behind theirs, on ephemeral loopback ports) read
//! through its `testnet.json`, and [`metric`] to sum a sidecar's metric lines.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::{repo_root, trust_proxy};

/// The sum of the metric lines starting with `prefix` on the admin listener at `admin`.
pub async fn metric(admin: &str, prefix: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// A running `trust-proxy testnet` and its `testnet.json`.
pub struct Testnet {
    child: Child,
    /// Holds the testnet's folder (`net/`) and its log.
    pub tmp: tempfile::TempDir,
    /// `testnet.json`.
    pub manifest: Value,
}

impl Testnet {
    /// Starts `--nodes n` on ephemeral ports and returns once it printed `testnet ready`.
    pub fn start(n: u32, extra: &[&str]) -> Self {
        use std::io::BufRead as _;
        let tmp = tempfile::tempdir().unwrap();
        let mut child = command(&tmp.path().join("net"), n, extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(tmp.path().join("testnet.log")).unwrap())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("testnet ready") => break,
                Some(Ok(line)) => seen.push(line),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the testnet stopped before it was ready; stdout:\n{}\nstderr:\n{}",
                        seen.join("\n"),
                        std::fs::read_to_string(tmp.path().join("testnet.log")).unwrap_or_default()
                    );
                }
            }
        }
        // Keep draining stdout so the testnet never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let manifest: Value = serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join("net/testnet.json")).unwrap(),
        )
        .unwrap();
        Self {
            child,
            tmp,
            manifest,
        }
    }

    /// Runs `trust-proxy testnet` again over this testnet's folder (stopped first) and
    /// returns how it ended.
    pub fn run_again(&self, n: u32, extra: &[&str]) -> std::process::Output {
        command(&self.tmp.path().join("net"), n, extra)
            .output()
            .unwrap()
    }

    /// A path the manifest names under `key`.
    pub fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.manifest[key].as_str().unwrap())
    }

    /// Node `k`'s entry in the manifest (1-based).
    pub fn node(&self, k: usize) -> &Value {
        &self.manifest["nodes"][k - 1]
    }

    /// A node's own key and certificate, as its sidecar keeps them.
    pub fn node_credentials(&self, k: usize) -> (PathBuf, PathBuf) {
        let state = self.tmp.path().join(format!("net/node-{k}-sidecar/state"));
        (state.join("node-key.pem"), state.join("node-cert.pem"))
    }

    /// Signature headers (and a JSON content type) as node `k` signs a POST of `body` to
    /// the aggregator's `path`, with node `k`'s own key.
    pub fn signed_headers(&self, k: usize, path: &str, body: &[u8]) -> Vec<(&'static str, String)> {
        use trust_core::{MessageSigner, NodeId, NodeKey, RequestParts, Subject, UnixTime};
        let (key, cert) = self.node_credentials(k);
        let der = pem::parse(std::fs::read_to_string(cert).unwrap())
            .unwrap()
            .into_contents();
        let signer = MessageSigner::new(
            NodeKey::from_pkcs8_pem(&std::fs::read_to_string(key).unwrap()).unwrap(),
            &Subject::Node(NodeId::new(u32::try_from(k).unwrap()).unwrap()),
            &der,
        );
        let mut headers: Vec<(&'static str, String)> = signer
            .sign(
                &RequestParts::new("POST", "aggregator", path, body),
                UnixTime::now(),
            )
            .unwrap()
            .pairs()
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect();
        headers.push(("content-type", "application/json".into()));
        headers
    }

    /// `curl` to the authority's sidecar; `admin` presents the operator certificate.
    pub fn trust_api(&self, method: &str, path: &str, admin: bool) -> Value {
        let door = self.manifest["authority"]["sidecar"]["ingress"]
            .as_str()
            .unwrap();
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-X", method, "--cacert"])
            .arg(self.path("ca_certificate"));
        if admin {
            cmd.arg("--cert")
                .arg(self.path("admin_certificate"))
                .arg("--key")
                .arg(self.path("admin_key"));
        }
        let port = door.rsplit_once(':').unwrap().1;
        let out = cmd
            .arg(format!("https://localhost:{port}{path}"))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "{method} {path}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// GET `path` on `addr` as JSON.
    pub async fn get(&self, addr: &str, path: &str) -> Value {
        reqwest::get(format!("http://{addr}{path}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The aggregator's closed rounds.
    pub async fn rounds(&self) -> Vec<Value> {
        let app = self.manifest["aggregator"]["app"].as_str().unwrap();
        self.get(app, "/fl/rounds")
            .await
            .as_array()
            .cloned()
            .unwrap()
    }

    /// What node `k`'s agent says it sent, by round.
    pub async fn sent(&self, k: usize) -> (BTreeMap<u64, Value>, u64) {
        let status = self
            .get(self.node(k)["app"].as_str().unwrap(), "/status")
            .await;
        let sent = status["sent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["round"].as_u64().unwrap(), s.clone()))
            .collect();
        (sent, status["errors"].as_u64().unwrap())
    }

    /// The sum of the metric lines starting with `prefix` on the aggregator's sidecar.
    pub async fn aggregator_metric(&self, prefix: &str) -> f64 {
        metric(
            self.manifest["aggregator"]["admin"].as_str().unwrap(),
            prefix,
        )
        .await
    }

    /// Waits until the aggregator has closed round `r`.
    pub async fn wait_for_round(&self, r: u64) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let rounds = self.rounds().await;
            if rounds.iter().any(|x| x["round"].as_u64() == Some(r)) {
                return rounds;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "round {r} did not close within 60 s; rounds so far: {rounds:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the testnet is still running (it exits 74 when one of its processes dies).
    pub fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

/// `trust-proxy testnet --nodes n` over `dir` on ephemeral ports, with the test venv.
fn command(dir: &std::path::Path, n: u32, extra: &[&str]) -> Command {
    let python = std::env::var_os("TRUST_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python3"));
    let mut cmd = trust_proxy();
    cmd.current_dir(repo_root())
        .args(["testnet", "--base-port", "0", "--round-interval", "300ms"])
        .args(["--nodes", &n.to_string(), "--dir"])
        .arg(dir)
        .arg("--python")
        .arg(python)
        .args(extra);
    cmd
}

impl Drop for Testnet {
    fn drop(&mut self) {
        // A failed test: SIGTERM lets the testnet stop its children; then make sure.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.stop();
        }
    }
}
