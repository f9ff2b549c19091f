//! The monitoring files against a live network: a real local testnet scraped by a real
//! Prometheus (Debian's package; `scripts/test.sh` installs it) that loads
//! `monitoring/tpm_alerts.yml`. Proves that every metric in the catalog (which
//! `scripts/check-monitoring.sh` proves covers every rule and panel) is exported, that
//! every rule and every dashboard query evaluates without error (`promtool query instant`),
//! and that a revocation and a forged request move their series and fire their alerts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::repo_root;
use crate::support::testnet::Testnet;

/// A Prometheus server, killed and reaped when dropped.
struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping the testnet whose file_sd targets are in `targets`.
    async fn start(dir: &Path, targets: &Path) -> Self {
        let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect(
                "prometheus is not installed: run scripts/test.sh (it installs Debian's package)",
            );
        let config = dir.join("prometheus.yml");
        let rules = repo_root().join("monitoring/tpm_alerts.yml");
        let mut scrape = String::new();
        for job in ["authority", "sidecar"] {
            scrape.push_str(&format!(
                "  - job_name: {job}\n    file_sd_configs:\n      - files: [\"{}\"]\n        refresh_interval: 1s\n    relabel_configs:\n      - source_labels: [job]\n        regex: {job}\n        action: keep\n",
                targets.display()
            ));
        }
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - \"{}\"\nscrape_configs:\n{scrape}",
                rules.display()
            ),
        )
        .unwrap();
        // Prometheus cannot report a port it chose; take a free one just before.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap();
        let prometheus = Self {
            child,
            url: format!("http://{addr}"),
        };
        prometheus
            .until("Prometheus ready", || async {
                reqwest::get(format!("{}/-/ready", prometheus.url))
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .await;
        prometheus
    }

    async fn api(&self, path: &str) -> Value {
        let answer: Value = reqwest::get(format!("{}/api/v1/{path}", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["status"], "success", "{path}: {answer}");
        answer["data"].clone()
    }

    /// The value of a scalar-ish query (the first sample), or None when it is empty.
    async fn value(&self, query: &str) -> Option<f64> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            &[("query", query)],
        )
        .unwrap();
        let answer: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
    }

    async fn firing(&self, alert: &str) -> bool {
        self.api("alerts").await["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["alertname"] == alert && a["state"] == "firing")
    }

    /// Polls `check` every 200 ms for up to 60 s.
    async fn until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while !check().await {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "not within 60 s: {what}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `promtool query instant` must accept `expr` against this server.
    fn promtool_accepts(&self, expr: &str) -> Result<(), String> {
        let out = Command::new("promtool")
            .args(["query", "instant", &self.url, expr])
            .output()
            .map_err(|e| format!("promtool: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{expr}\n  {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// Every `expr` of the dashboards, with Grafana's variables replaced as "All" would.
fn dashboard_queries() -> Vec<String> {
    let mut queries = Vec::new();
    let dir = repo_root().join("monitoring/grafana/dashboards");
    for entry in std::fs::read_dir(dir).unwrap() {
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    queries.push(
                        expr.replace("$__rate_interval", "1m")
                            .replace("$__interval", "1m")
                            .replace("$__range", "1h")
                            .replace("$instance", ".*")
                            .replace("$node", ".*"),
                    );
                }
            }
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_testnet_and_every_rule_and_panel_works_against_it() {
    let net = Testnet::start(3, &[]);
    let dir = net.tmp.path().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let targets = net.tmp.path().join("net/prometheus-targets.json");
    let prometheus = Prometheus::start(&dir, &targets).await;

    // The authority and five sidecars (3 nodes, the aggregator, the authority's own) are up.
    prometheus
        .until("every target up", || async {
            let data = prometheus.api("targets").await;
            let active = data["activeTargets"].as_array().unwrap();
            active.len() == 6 && active.iter().all(|t| t["health"] == "up")
        })
        .await;

    // Every catalogued metric is exported by someone.
    let catalog = std::fs::read_to_string(repo_root().join("monitoring/metrics.txt")).unwrap();
    let wanted: Vec<&str> = catalog
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        wanted.len() >= 25,
        "the catalog lists {} names",
        wanted.len()
    );
    let start = Instant::now();
    loop {
        let names = prometheus.api("label/__name__/values").await;
        let names: Vec<&str> = names
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let missing: Vec<&&str> = wanted
            .iter()
            .filter(|w| !names.contains(w) && !names.contains(&format!("{w}_bucket").as_str()))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "catalogued but not exported: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every rule has been evaluated, without error.
    prometheus
        .until("every rule evaluated", || async {
            let groups = prometheus.api("rules").await["groups"].clone();
            let rules: Vec<Value> = groups
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|g| g["rules"].as_array().unwrap().clone())
                .collect();
            rules.len() == 14 && rules.iter().all(|r| r["health"] != "unknown")
        })
        .await;
    let groups = prometheus.api("rules").await["groups"].clone();
    let mut failures = Vec::new();
    let mut rule_queries = Vec::new();
    for rule in groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
    {
        if rule["health"] != "ok" {
            failures.push(format!("rule {}: {}", rule["name"], rule["lastError"]));
        }
        rule_queries.push(rule["query"].as_str().unwrap().to_owned());
    }
    // And every rule expression and panel query is accepted by promtool against the server.
    let panels = dashboard_queries();
    assert!(panels.len() >= 32, "{} panel queries", panels.len());
    for expr in rule_queries.iter().chain(&panels) {
        if let Err(e) = prometheus.promtool_accepts(expr) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing is wrong yet, so nothing fires.
    assert!(!prometheus.firing("NodeCertificateRevoked").await);
    assert!(!prometheus.firing("SignatureVerificationFailed").await);

    // A revocation and a forged request move their series and fire their alerts.
    let revoke = net.trust_api("POST", "/trust/revoke/2", true);
    assert_eq!(revoke["revoked"], true, "{revoke}");
    let (key, cert) = net.node_credentials(3);
    let ca = net.path("ca_certificate");
    let ingress = net.manifest["aggregator"]["ingress"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut conn = crate::support::mtls(&ingress, &ca, &key, &cert)
        .await
        .unwrap();
    // Signed for one body, another body sent.
    let forged = net.signed_headers(3, "/fl/update", br#"{"round":1}"#);
    let status = crate::support::post(&mut conn, "aggregator", "/fl/update", b"{}", &forged).await;
    assert_eq!(status, Ok(401));

    prometheus
        .until("the revocation counted", || async {
            prometheus
                .value("sum(tpm_authority_revocations_total)")
                .await
                == Some(1.0)
        })
        .await;
    prometheus
        .until("the forged signature counted", || async {
            prometheus
                .value("sum(tpm_signature_verification_failures_total{job=\"sidecar\"})")
                .await
                .is_some_and(|v| v >= 1.0)
        })
        .await;
    prometheus
        .until("NodeCertificateRevoked fires", || async {
            prometheus.firing("NodeCertificateRevoked").await
        })
        .await;
    prometheus
        .until("SignatureVerificationFailed fires", || async {
            prometheus.firing("SignatureVerificationFailed").await
        })
        .await;
}
