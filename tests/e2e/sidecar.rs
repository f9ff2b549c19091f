//! `trust-proxy run` as a real process between real Flask apps, with a real authority,
//! all on 127.0.0.1: node A's app calls node B's app through both sidecars; revocation,
//! an unreachable authority, rotation and SIGTERM are watched from the outside (the apps'
//! answers, `/readyz`, `/metrics`, exit codes).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{AuthorityProcess, Served, python, repo_root, trust_proxy};

/// An authority and a temp folder for the nodes' state.
struct Net {
    tmp: tempfile::TempDir,
    authority: Option<AuthorityProcess>,
    url: String,
    token: PathBuf,
}

struct Node {
    sidecar: Served,
    app: Option<Served>,
    dir: PathBuf,
}

impl Net {
    fn start(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let token = tmp.path().join("token");
        std::fs::write(&token, "e2e-bootstrap-token-0123456789").unwrap();
        let authority = AuthorityProcess::start_with(&tmp.path().join("authority"), &token, extra);
        Self {
            url: authority.url.clone(),
            authority: Some(authority),
            tmp,
            token,
        }
    }

    /// A sidecar for node `id` in front of `upstream`, with `peers` (name, address, id)
    /// reachable through its egress; `extra` is appended to the top of the config.
    fn sidecar(&self, id: u32, upstream: &str, peers: &[(&str, &str, u32)], extra: &str) -> Served {
        let dir = self.tmp.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = format!(
            r#"state_dir = "{state}"
node_id = {id}
names = ["localhost", "127.0.0.1"]
shutdown_grace = "20s"
{extra}
[authority]
url = "{url}"
bootstrap_token_file = "{token}"
crl_wait = "5s"

[ingress]
listen = "127.0.0.1:0"
upstream = "{upstream}"
signed_prefixes = ["/fl/"]

[admin]
listen = "127.0.0.1:0"

[rotation]
check_every = "1s"

[egress]
listen = "127.0.0.1:0"
"#,
            state = dir.join("state").display(),
            url = self.url,
            token = self.token.display(),
        );
        for (name, address, peer_id) in peers {
            config.push_str(&format!(
                "[[egress.peers]]\nname = \"{name}\"\naddress = \"{address}\"\nnode_id = {peer_id}\n"
            ));
        }
        let file = dir.join("sidecar.toml");
        std::fs::write(&file, config).unwrap();
        let mut cmd = trust_proxy();
        cmd.args(["--log", "info,trust_proxy=debug", "run", "--config"])
            .arg(&file)
            .env_remove("TRUST_PROXY_CONFIG");
        Served::spawn(
            cmd,
            dir.join("sidecar.log"),
            &["ingress", "egress", "admin"],
        )
    }

    /// A Flask app named `name`, its outbound HTTP through `proxy`.
    fn app(&self, name: &str, proxy: Option<&str>) -> Served {
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

    /// Node B (id 1, app "b") and node A (id 2, app "a", calling B as `node-1`).
    fn two_nodes(&self, extra: &str) -> (Node, Node) {
        let app_b = self.app("b", None);
        let sidecar_b = self.sidecar(1, app_b.addr(""), &[], extra);
        // A's ingress is not used here: its upstream is a closed port.
        let sidecar_a = self.sidecar(
            2,
            "127.0.0.1:9",
            &[("node-1", sidecar_b.addr("ingress"), 1)],
            extra,
        );
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
}

impl Node {
    /// Asks this node's app to make an outbound call; returns `{status, body}`.
    async fn call(&self, method: &str, url: &str, body: Value, headers: Value) -> Value {
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

    async fn admin(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{}{path}", self.sidecar.addr("admin")))
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The value of the metric line starting with `series` (0 if absent).
    async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.admin("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

/// Polls `check` every 50 ms until it is true or `limit` passes; returns the time taken.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
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

fn sigterm(pid: u32) {
    let status = Command::new("bash")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flask_app_calls_another_through_both_sidecars_and_the_callee_sees_the_verified_caller() {
    let net = Net::start(&[]);
    let (a, b) = net.two_nodes("");
    let answer = a
        .call(
            "POST",
            "http://node-1/fl/update?round=1",
            json!({"round": 1, "weights": [0.25, 0.5]}),
            json!({"X-Verified-Node-Id": "99", "X-Verified-Roles": "admin"}),
        )
        .await;
    assert_eq!(answer["status"], 200, "{answer}\n{}", b.sidecar.log_text());
    let seen = &answer["body"];
    assert_eq!(seen["app"], "b");
    assert_eq!(seen["path"], "/fl/update?round=1");
    assert_eq!(
        seen["headers"]["x-verified-node-id"], "2",
        "spoofed id replaced: {seen}"
    );
    assert_eq!(seen["headers"]["x-verified-roles"], "node");
    assert_eq!(
        seen["headers"]["x-verified-spiffe-id"],
        "spiffe://sovereign.local/node/2"
    );
    assert_eq!(seen["headers"]["x-verified-signature"], "true");
    assert_eq!(seen["headers"]["x-from-node"], "2");
    assert!(seen["body"].as_str().unwrap().contains("0.25"));
    assert_eq!(
        b.metric("tpm_requests_total{direction=\"ingress\",outcome=\"forwarded\"}")
            .await,
        1.0
    );
    assert_eq!(
        a.metric("tpm_requests_total{direction=\"egress\",outcome=\"forwarded\"}")
            .await,
        1.0
    );

    // A host the egress does not know is refused, not sent anywhere in plaintext.
    let unknown = a
        .call("GET", "http://elsewhere.example/x", Value::Null, json!({}))
        .await;
    assert_eq!(unknown["status"], 502, "{unknown}");
    assert!(
        unknown["body"]["error"]
            .as_str()
            .unwrap()
            .contains("unknown peer")
    );

    // Both sidecars are ready and say why.
    let (code, ready) = b.admin("/readyz").await;
    assert_eq!(code, 200, "{ready}");
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["spiffe_id"], "spiffe://sovereign.local/node/1");
    assert!(ready["crl_number"].as_u64().is_some());
    // The key the node made never left it and is private.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(a.dir.join("state/node-key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_cut_off_on_its_open_connection_and_on_new_ones() {
    let net = Net::start(&[]);
    let (a, b) = net.two_nodes("");
    let first = a
        .call("POST", "http://node-1/whoami", json!({}), json!({}))
        .await;
    assert_eq!(first["status"], 200, "{first}");

    let revoked = reqwest::Client::new()
        .post(format!("{}/trust/revoke/2", net.url))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let revoked_at = Instant::now();
    // The same app, the same keep-alive connection through A's egress to B.
    let a_ref = &a;
    let took = eventually(
        Duration::from_secs(10),
        "A refused after revocation",
        move || async move {
            let r = a_ref
                .call("POST", "http://node-1/whoami", json!({}), json!({}))
                .await;
            r["status"] != 200
        },
    )
    .await;
    let r = a
        .call("POST", "http://node-1/whoami", json!({}), json!({}))
        .await;
    assert!(
        r["status"] == 403 || r["status"] == 502,
        "refused on the open connection or at the handshake: {r}"
    );
    eprintln!(
        "revocation took effect at B after {took:?} ({:?} since the answer)",
        revoked_at.elapsed()
    );
    assert!(
        b.metric("tpm_requests_total{direction=\"ingress\",outcome=\"refused_certificate\"}")
            .await
            >= 1.0
            || b.metric("tpm_tls_handshake_failures_total{reason=\"certificate\"}")
                .await
                >= 1.0
    );
    // A new sidecar for the same revoked node cannot get in either: B refuses the
    // handshake of a fresh connection (A's restart opens new ones).
    drop(a);
    let sidecar_a = net.sidecar(
        2,
        "127.0.0.1:9",
        &[("node-1", b.sidecar.addr("ingress"), 1)],
        "",
    );
    let app_a = net.app("a2", Some(sidecar_a.addr("egress")));
    let a2 = Node {
        sidecar: sidecar_a,
        app: Some(app_a),
        dir: net.tmp.path().join("node-2"),
    };
    let r = a2
        .call("POST", "http://node-1/whoami", json!({}), json!({}))
        .await;
    assert_eq!(
        r["status"], 502,
        "a revoked node's new connection is refused: {r}"
    );
    assert!(
        b.metric("tpm_tls_handshake_failures_total{reason=\"certificate\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_authority_gone_sidecars_serve_on_the_last_crl_until_it_expires_then_refuse() {
    let mut net = Net::start(&["--crl-validity", "10s"]);
    let (a, b) = net.two_nodes("");
    assert_eq!(
        a.call("POST", "http://node-1/whoami", json!({}), json!({}))
            .await["status"],
        200
    );
    net.authority.take().unwrap().kill9();
    // Still served on the last good CRL.
    let r = a
        .call("POST", "http://node-1/whoami", json!({}), json!({}))
        .await;
    assert_eq!(r["status"], 200, "{r}");
    let b_ref = &b;
    eventually(
        Duration::from_secs(30),
        "B reports the failed CRL updates",
        move || async move { b_ref.metric("tpm_crl_update_failures_total").await >= 1.0 },
    )
    .await;
    assert!(b.metric("tpm_crl_age_seconds").await >= 0.0);
    // Past nextUpdate: not ready, and the peer is refused (fail closed).
    eventually(
        Duration::from_secs(30),
        "B not ready once its CRL expired",
        move || async move { b_ref.admin("/readyz").await.0 == 503 },
    )
    .await;
    let (_, why) = b.admin("/readyz").await;
    assert!(why.contains("nextUpdate"), "{why}");
    let r = a
        .call("POST", "http://node-1/whoami", json!({}), json!({}))
        .await;
    assert_ne!(r["status"], 200, "an expired CRL admits nobody: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_before_expiry_without_failing_requests() {
    let net = Net::start(&["--node-validity", "15s"]);
    let (a, b) = net.two_nodes("");
    let serial_before = std::fs::read_to_string(b.dir.join("state/node-cert.pem")).unwrap();
    let (a_ref, b_ref) = (&a, &b);
    let took = eventually(
        Duration::from_secs(40),
        "B renews its certificate",
        move || async move {
            let r = a_ref
                .call("POST", "http://node-1/whoami", json!({}), json!({}))
                .await;
            assert_eq!(r["status"], 200, "a request failed during rotation: {r}");
            b_ref
                .metric("tpm_certificate_rotations_total{result=\"renewed\"}")
                .await
                >= 1.0
        },
    )
    .await;
    let serial_after = std::fs::read_to_string(b.dir.join("state/node-cert.pem")).unwrap();
    assert_ne!(serial_before, serial_after, "a new certificate is on disk");
    let r = a
        .call(
            "POST",
            "http://node-1/fl/update",
            json!({"after": "rotation"}),
            json!({}),
        )
        .await;
    assert_eq!(r["status"], 200, "{r}");
    assert!(took > Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_refuses_new_ones_and_exits_0() {
    let net = Net::start(&[]);
    let (a, mut b) = net.two_nodes("");
    let slow = {
        let app = a.app.as_ref().unwrap().addr("").to_owned();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("http://{app}/call"))
                .json(&json!({"method": "GET", "url": "http://node-1/slow?s=3", "json": null}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    {
        let b_ref = &b;
        eventually(
            Duration::from_secs(10),
            "the slow request reached B",
            move || async move { b_ref.metric("tpm_connections_active").await >= 1.0 },
        )
        .await;
    }
    sigterm(b.sidecar.child.id());
    let ingress = b.sidecar.addr("ingress").to_owned();
    let ingress_ref = &ingress;
    eventually(
        Duration::from_secs(5),
        "B stops accepting",
        move || async move { tokio::net::TcpStream::connect(ingress_ref).await.is_err() },
    )
    .await;
    assert!(!slow.is_finished(), "the slow request is still in flight");
    let answer = slow.await.unwrap();
    assert_eq!(
        answer["status"], 200,
        "the in-flight request completed: {answer}"
    );
    let status = b.sidecar.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", b.sidecar.log_text());
    b.app.take();
}
