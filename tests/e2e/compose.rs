//! `docker-compose.full.yml` on this machine's Docker engine: five scaled node agents enroll
//! and are verified, a revoked one's updates stop counting, the network keeps training with
//! the authority stopped, and `down` leaves nothing behind.
//!
//! The engine here cannot pull, so the images are built locally first
//! (`deploy/docker/build-images.sh`: a Debian base by debootstrap, the app image with the
//! trust-proxy binary this test run built, and Prometheus), under the names compose uses by
//! default: the guide's command then runs as written, with no image variables and no
//! profile override. Only the project name and the published ports differ (ephemeral, so
//! runs do not collide). Skipped, with the reason printed, when no Docker engine or
//! docker-compose answers. The test talks to the containers only through ports published
//! on 127.0.0.1 (ephemeral) and `docker-compose exec`.

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::repo_root;

/// A compose project, brought down (with its volumes) when dropped.
struct Project {
    name: String,
    env: Vec<(String, String)>,
}

impl Project {
    fn compose(&self, args: &[&str]) -> Output {
        Command::new("docker-compose")
            .current_dir(repo_root())
            .args(["-f", "docker-compose.full.yml", "-p", &self.name])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The host address a service's container port is published on.
    fn port(&self, service: &str, port: &str) -> String {
        self.ok(&["port", service, port]).trim().to_owned()
    }

    /// A file's content inside a service's container.
    fn cat(&self, service: &str, path: &str) -> String {
        self.ok(&["exec", "-T", service, "cat", path])
    }

    fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.name);
        let mut left = Vec::new();
        for what in [
            &["ps", "-a", "-q", "--filter"][..],
            &["network", "ls", "-q", "--filter"][..],
            &["volume", "ls", "-q", "--filter"][..],
        ] {
            let out = Command::new("docker")
                .args(what)
                .arg(&label)
                .output()
                .unwrap();
            left.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(|l| format!("{} {l}", what[0])),
            );
        }
        left
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans", "-t", "5"]);
    }
}

fn docker_answers() -> Result<(), String> {
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map_err(|e| format!("no docker command ({e})"))?;
    if !info.status.success() {
        return Err(format!(
            "the Docker engine does not answer: {}",
            String::from_utf8_lossy(&info.stderr).trim()
        ));
    }
    Command::new("docker-compose")
        .arg("version")
        .output()
        .map_err(|e| format!("no docker-compose command ({e})"))
        .map(drop)
}

async fn get(addr: &str, path: &str) -> Option<Value> {
    let answer = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    answer.json().await.ok()
}

/// Polls the aggregator's rounds until `check` holds for them (within `limit`).
async fn rounds_until(
    backend: &str,
    limit: Duration,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        if let Some(Value::Array(rounds)) = get(backend, "/fl/rounds").await
            && check(&rounds)
        {
            return rounds;
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn contributors(round: &Value) -> BTreeSet<String> {
    round["updates"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_scales_five_agents_revokes_one_survives_the_authority_and_cleans_up() {
    if let Err(reason) = docker_answers() {
        eprintln!("SKIPPED compose test: {reason}");
        return;
    }
    // The local images (prints the variables compose needs).
    let built = Command::new(repo_root().join("deploy/docker/build-images.sh"))
        .arg(env!("CARGO_BIN_EXE_trust-proxy"))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "building the images failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let mut env: Vec<(String, String)> = Vec::new();
    for (k, v) in [
        ("TPM_TRUST_PUBLISH", "127.0.0.1:"),
        ("TPM_BACKEND_PUBLISH", "127.0.0.1:"),
        ("TPM_PROMETHEUS_PUBLISH", "127.0.0.1:"),
        ("ROUND_TIMEOUT", "2"),
    ] {
        env.push((k.into(), v.into()));
    }
    let project = Project {
        name: format!("tpm-e2e-{}", std::process::id()),
        env,
    };
    project.ok(&["up", "-d", "--scale", "node-agent-secure=5"]);

    // All five agents (and the aggregator and the authority's sidecar) verified within 60 s.
    let backend = project.port("backend-secure", "5001");
    let start = Instant::now();
    loop {
        let status = get(&backend, "/trust/status").await;
        if status.as_ref().is_some_and(|s| s["verified_nodes"] == 7) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not all verified within 60 s: {status:?}\n{}",
            String::from_utf8_lossy(&project.compose(&["logs", "--tail", "20"]).stdout)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every node pinned the root the authority published, instead of trusting the first
    // CA certificate the network handed it.
    let logs = project.ok(&["logs", "--no-color", "backend-secure", "node-agent-secure"]);
    assert_eq!(
        logs.matches("pinning the root published at").count(),
        6,
        "the aggregator and five agents pin the root:\n{logs}"
    );
    assert!(
        !logs.contains("on first use"),
        "a node trusted the CA on first use:\n{logs}"
    );
    // The agents declared themselves: counted live by role, and the aggregator's quorum
    // (`auto`) is theirs.
    let status = get(&backend, "/trust/status").await.unwrap_or_default();
    assert_eq!(status["by_role"]["agent"]["live"], 5, "{status}");
    // Certificates are where the network's guide looks for them.
    let certs = project.ok(&[
        "exec",
        "-T",
        "backend-secure",
        "ls",
        "/etc/sovereign/certs/",
    ]);
    for file in ["ca-cert.pem", "node-cert.pem", "node-key.pem"] {
        assert!(certs.lines().any(|l| l == file), "{file} in:\n{certs}");
    }
    let rounds = rounds_until(
        &backend,
        Duration::from_secs(60),
        "a round with five agents",
        |r| r.iter().any(|x| contributors(x).len() == 5),
    )
    .await;
    let agents = contributors(
        rounds
            .iter()
            .rev()
            .find(|x| contributors(x).len() == 5)
            .unwrap(),
    );

    // An operator certificate from the authority's CA, and the CA certificate.
    project.ok(&[
        "exec",
        "-T",
        "tpm-ca-service",
        "trust-proxy",
        "ca",
        "issue-dev",
        "--admin",
        "ops",
        "--dns",
        "localhost",
        "--state-dir",
        "/var/lib/trust-proxy/authority",
        "--out-dir",
        "/tmp/ops",
    ]);
    let tmp = tempfile::tempdir().unwrap();
    for (file, path) in [
        ("ca.pem", "/etc/sovereign/certs/ca-cert.pem"),
        ("ops-cert.pem", "/tmp/ops/ops-cert.pem"),
        ("ops-key.pem", "/tmp/ops/ops-key.pem"),
    ] {
        std::fs::write(tmp.path().join(file), project.cat("tpm-ca-service", path)).unwrap();
    }
    let door = project.port("tpm-ca-service", "8443");
    let admin = |method: &str, path: &str| -> Value {
        let p = |f: &str| tmp.path().join(f);
        let out = Command::new("curl")
            .args(["-sS", "-X", method, "--cacert"])
            .arg(p("ca.pem"))
            .arg("--cert")
            .arg(p("ops-cert.pem"))
            .arg("--key")
            .arg(p("ops-key.pem"))
            .arg(format!(
                "https://localhost:{}{path}",
                door.rsplit_once(':').unwrap().1
            ))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"))
    };

    // Revoke one agent: from the next rounds on, its updates are refused.
    let victim = agents.iter().next().unwrap().clone();
    let revoked = admin("POST", &format!("/trust/revoke/{victim}"));
    assert_eq!(revoked["revoked"], true, "{revoked}");
    let after = get(&backend, "/fl/rounds")
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .len();
    let honest: BTreeSet<String> = agents.iter().filter(|a| **a != victim).cloned().collect();
    let rounds = rounds_until(
        &backend,
        Duration::from_secs(60),
        "two rounds after the revocation",
        |r| r.len() >= after + 3,
    )
    .await;
    for round in &rounds[after + 1..] {
        assert_eq!(
            contributors(round),
            honest,
            "node {victim} still counted: {round}"
        );
    }

    // The authority stops; the nodes keep working with the CRL they hold.
    project.ok(&["stop", "-t", "5", "tpm-ca-service"]);
    let stopped_at = get(&backend, "/fl/rounds")
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .len();
    let rounds = rounds_until(
        &backend,
        Duration::from_secs(60),
        "two rounds without the authority",
        |r| r.len() >= stopped_at + 2,
    )
    .await;
    for round in &rounds[stopped_at..] {
        assert_eq!(contributors(round), honest, "{round}");
    }

    // down leaves no container, network or volume.
    project.ok(&["down", "-v", "--remove-orphans", "-t", "5"]);
    let left = project.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}
