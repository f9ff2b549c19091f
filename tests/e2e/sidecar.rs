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
        self.sidecar_with_env(id, upstream, peers, extra, &[])
    }

    /// As [`Self::sidecar`], with environment overrides.
    fn sidecar_with_env(
        &self,
        id: u32,
        upstream: &str,
        peers: &[(&str, &str, u32)],
        extra: &str,
        env: &[(&str, &str)],
    ) -> Served {
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
        cmd.args(["--log", "info,sidecar=debug", "run", "--config"])
            .arg(&file)
            .env_remove("TRUST_PROXY_CONFIG")
            .envs(env.iter().copied());
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

    /// Waits until the metric `series` reaches `at_least` (within `limit`).
    async fn wait_metric(&self, series: &str, at_least: f64, limit: Duration) {
        eventually(limit, series, move || async move {
            self.metric(series).await >= at_least
        })
        .await;
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
    b.wait_metric(
        "tpm_crl_update_failures_total",
        1.0,
        Duration::from_secs(30),
    )
    .await;
    let b_ref = &b;
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
    // Once A has rotated too, its signed requests carry the new certificate's fingerprint
    // and must travel on connections made with that certificate (the peer binds them).
    a.wait_metric(
        "tpm_certificate_rotations_total{result=\"renewed\"}",
        1.0,
        Duration::from_secs(40),
    )
    .await;
    assert!(
        b.metric("tpm_certificate_rotations_total{result=\"renewed\"}")
            .await
            <= 2.0,
        "one renewal per two thirds of the life, not one per check"
    );
    for round in 0..3 {
        let r = a
            .call(
                "POST",
                "http://node-1/fl/update",
                json!({"after": "rotation", "round": round}),
                json!({}),
            )
            .await;
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["body"]["headers"]["x-verified-signature"], "true");
    }
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
    // The slow request has reached B.
    b.wait_metric("tpm_connections_active", 1.0, Duration::from_secs(10))
        .await;
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

/// `ca issue-dev` against `state` (an authority's CA folder, or another CA); returns
/// (key, cert) paths.
pub(crate) fn issue_dev(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_an_admin_certificate_reads_trust_status_through_the_authoritys_sidecar() {
    let net = Net::start(&[]);
    let authority_addr = net.url.trim_start_matches("http://").to_owned();
    // The CA certificate is public; everything else needs a client certificate. The
    // setting comes from the environment, as a container would pass it.
    let front = net.sidecar_with_env(
        100,
        &authority_addr,
        &[],
        "",
        &[(
            "TRUST_PROXY_INGRESS_ANONYMOUS_PREFIXES",
            r#"["/trust/ca-certificate"]"#,
        )],
    );
    let ca = net.tmp.path().join("node-100/state/ca-cert.pem");
    let (key, cert) = issue_dev(
        &net.tmp.path().join("authority"),
        &net.tmp.path().join("admin"),
        &["--admin", "ops"],
    );
    let base = format!("https://{}", front.addr("ingress"));
    let curl = |path: &str, args: &[&str], with_cert: bool| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-w", "\n%{http_code} %{http_version}", "--cacert"])
            .arg(&ca)
            .args(args);
        if with_cert {
            cmd.arg("--cert").arg(&cert).arg("--key").arg(&key);
        }
        let out = cmd.arg(format!("{base}{path}")).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, tail) = text.rsplit_once('\n').unwrap_or(("", ""));
        (body.to_owned(), tail.to_owned())
    };
    let (body, tail) = curl("/trust/status", &["--http1.1"], true);
    assert_eq!(tail, "200 1.1", "{body}\n{}", front.log_text());
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["total_nodes"], 1,
        "the authority's own sidecar enrolled: {status}"
    );
    assert_eq!(status["verified_nodes"], 1);
    // HTTP/2 by ALPN, and TLS 1.2 as well as 1.3.
    assert_eq!(curl("/trust/status", &["--http2"], true).1, "200 2");
    assert_eq!(
        curl("/trust/status", &["--tlsv1.2", "--tls-max", "1.2"], true).1,
        "200 2"
    );
    // Anonymous: the public route answers, the others are 401 with a reason.
    let (body, tail) = curl("/trust/ca-certificate", &[], false);
    assert_eq!(tail, "200 2", "{body}");
    assert!(body.contains("BEGIN CERTIFICATE"));
    let (body, tail) = curl("/trust/status", &[], false);
    assert_eq!(tail, "401 2", "{body}");
    assert!(body.contains("client certificate is required"), "{body}");
    let (body, tail) = curl("/trust/revoke/1", &["-X", "POST"], false);
    assert_eq!(tail, "401 2", "{body}");
}

/// An HTTP/1.1 connection over mTLS to `addr` as the holder of `key`/`cert`.
pub(crate) async fn mtls(
    addr: &str,
    ca: &std::path::Path,
    key: &std::path::Path,
    cert: &std::path::Path,
) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>, String> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![rustls::pki_types::CertificateDer::from_pem_file(cert).unwrap()],
        rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap(),
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
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

pub(crate) async fn post(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_ingress_refuses_each_bad_request_with_its_reason_in_the_metrics() {
    use trust_core::{MessageSigner, NodeKey, RequestParts, UnixTime};
    let net = Net::start(&[]);
    let app_b = net.app("b", None);
    let b = Node {
        sidecar: net.sidecar(1, app_b.addr(""), &[], ""),
        app: Some(app_b),
        dir: net.tmp.path().join("node-1"),
    };
    let ingress = b.sidecar.addr("ingress").to_owned();
    let ca = b.dir.join("state/ca-cert.pem");
    let authority_state = net.tmp.path().join("authority");
    let (a_key, a_cert) = issue_dev(
        &authority_state,
        &net.tmp.path().join("a"),
        &["--node-id", "7"],
    );
    let (m_key, m_cert) = issue_dev(
        &authority_state,
        &net.tmp.path().join("m"),
        &["--node-id", "8"],
    );
    let signer = |key: &PathBuf, cert: &PathBuf, id: u32| {
        let key = NodeKey::from_pkcs8_pem(&std::fs::read_to_string(key).unwrap()).unwrap();
        let der = pem::parse(std::fs::read_to_string(cert).unwrap())
            .unwrap()
            .into_contents();
        MessageSigner::new(
            key,
            &trust_core::Subject::Node(trust_core::NodeId::new(id).unwrap()),
            &der,
        )
    };
    let a = signer(&a_key, &a_cert, 7);
    let host = "localhost";
    let body = br#"{"round":3}"#;
    let sign_at = |s: &MessageSigner, body: &[u8], at: u64| -> Vec<(&'static str, String)> {
        s.sign(
            &RequestParts::new("POST", host, "/fl/update", body),
            UnixTime::since_unix_epoch(Duration::from_secs(at)),
        )
        .unwrap()
        .pairs()
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .collect()
    };
    let now = UnixTime::now().as_secs();
    let mut conn = mtls(&ingress, &ca, &a_key, &a_cert).await.unwrap();
    assert_eq!(
        post(&mut conn, host, "/fl/update", body, &sign_at(&a, body, now)).await,
        Ok(200)
    );
    let forwarded = "tpm_requests_total{direction=\"ingress\",outcome=\"forwarded\"}";
    assert_eq!(b.metric(forwarded).await, 1.0);

    let mut forged = sign_at(&a, body, now);
    let sig = forged
        .iter_mut()
        .find(|(k, _)| *k == trust_core::signature::header::SIGNATURE)
        .unwrap();
    {
        use base64::Engine as _;
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(&sig.1)
            .unwrap();
        raw[10] ^= 0x01;
        sig.1 = base64::engine::general_purpose::STANDARD.encode(raw);
    }
    let m = signer(&m_key, &m_cert, 8);
    let mut m_conn = mtls(&ingress, &ca, &m_key, &m_cert).await.unwrap();
    type Headers = Vec<(&'static str, String)>;
    let cases: Vec<(&str, u16, &str, Headers, &[u8])> = vec![
        (
            "unsigned where required",
            401,
            "missing_header",
            vec![],
            body,
        ),
        ("forged signature", 401, "bad_signature", forged, body),
        (
            "body altered",
            401,
            "bad_signature",
            sign_at(&a, body, now),
            br#"{"round":4}"#,
        ),
        ("stale", 401, "stale", sign_at(&a, body, now - 3600), body),
        ("future", 401, "future", sign_at(&a, body, now + 3600), body),
    ];
    for (what, status, reason, headers, sent) in cases {
        assert_eq!(
            post(&mut conn, host, "/fl/update", sent, &headers).await,
            Ok(status),
            "{what}"
        );
        let series = format!("tpm_signature_verification_failures_total{{reason=\"{reason}\"}}");
        assert!(b.metric(&series).await >= 1.0, "{what}: {series}");
    }
    // The signed-route rule cannot be dodged by spelling the path differently: the
    // path is normalised once, before routing, policy and forwarding.
    for (path, status) in [
        ("//fl/update", 401),
        ("/x/../fl/update", 401),
        ("/./fl//update", 401),
        ("/fl/%2e%2e/whoami", 400),
        ("/x%2F..%2Ffl/update", 400),
        ("/../fl/update", 400),
    ] {
        assert_eq!(
            post(&mut conn, host, path, body, &[]).await,
            Ok(status),
            "{path}"
        );
    }
    // Signed by A, carried over M's connection.
    assert_eq!(
        post(
            &mut m_conn,
            host,
            "/fl/update",
            body,
            &sign_at(&a, body, now)
        )
        .await,
        Ok(401)
    );
    assert!(
        b.metric("tpm_signature_verification_failures_total{reason=\"unknown_node\"}")
            .await
            >= 1.0
    );
    // M signing for itself is fine: the refusals were about the requests, not the peers.
    assert_eq!(
        post(
            &mut m_conn,
            host,
            "/fl/update",
            body,
            &sign_at(&m, body, now)
        )
        .await,
        Ok(200)
    );
    assert_eq!(
        b.metric(forwarded).await,
        2.0,
        "no refused request reached the app"
    );

    // No client certificate at all.
    let bare = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&ca)
        .arg(format!(
            "https://localhost:{}/whoami",
            ingress.rsplit(':').next().unwrap()
        ))
        .output()
        .unwrap();
    assert!(!bare.status.success(), "no client certificate, no answer");
    // A certificate from another CA with the same name and trust domain.
    let other = net.tmp.path().join("other-ca");
    let init = trust_proxy()
        .args(["ca", "init", "--state-dir"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(init.status.success());
    let (o_key, o_cert) = issue_dev(&other, &net.tmp.path().join("o"), &["--node-id", "7"]);
    let refused = match mtls(&ingress, &ca, &o_key, &o_cert).await {
        Err(_) => true,
        Ok(mut c) => post(&mut c, host, "/fl/update", body, &[]).await.is_err(),
    };
    assert!(refused, "a look-alike CA's certificate gets no answer");
    assert!(
        b.metric("tpm_tls_handshake_failures_total{reason=\"certificate\"}")
            .await
            >= 1.0
    );
    assert_eq!(b.metric(forwarded).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_file_replaced_by_the_operator_is_picked_up_and_served() {
    let net = Net::start(&[]);
    let (a, b) = net.two_nodes("");
    let state = b.dir.join("state");
    let new_cert = replacement_certificate(&net, &state, 1);
    replace_file(
        &state.join("node-cert.pem"),
        &std::fs::read(&new_cert).unwrap(),
    );
    b.wait_metric(
        "tpm_certificate_rotations_total{result=\"reloaded\"}",
        1.0,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        served_certificate(b.sidecar.addr("ingress")),
        pem_body(&std::fs::read_to_string(&new_cert).unwrap()),
        "the ingress serves the replaced certificate"
    );
    let r = a
        .call("POST", "http://node-1/whoami", json!({}), json!({}))
        .await;
    assert_eq!(r["status"], 200, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_on_demand_and_a_broken_certificate_file_is_kept_out_and_counted() {
    let net = Net::start(&[]);
    let app_b = net.app("b", None);
    let set = net.tmp.path().join("set.toml");
    std::fs::write(&set, "[[plugin]]\nname = \"admin-only-revoke\"\n").unwrap();
    let policy = format!(
        "[policy]\nset = \"{}\"\nplugin_dir = \"{}\"\n",
        set.display(),
        policy_host::BUILT_PLUGIN_DIR
    );
    // The periodic check is an hour away: only SIGHUP looks at the files in this test.
    let b = Node {
        sidecar: net.sidecar_with_env(
            1,
            app_b.addr(""),
            &[],
            &policy,
            &[("TRUST_PROXY_ROTATION_CHECK_EVERY", "1h")],
        ),
        app: Some(app_b),
        dir: net.tmp.path().join("node-1"),
    };
    let state = b.dir.join("state");
    let ingress = b.sidecar.addr("ingress").to_owned();
    let hup = || {
        let pid = b.sidecar.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    let before = served_certificate(&ingress);
    let series = |result: &str| format!("tpm_certificate_rotations_total{{result=\"{result}\"}}");

    // A broken replacement: refused, counted, kept out; the old certificate keeps serving.
    replace_file(
        &state.join("node-cert.pem"),
        b"-----BEGIN CERTIFICATE-----\nnot one\n",
    );
    hup();
    b.wait_metric(&series("failed"), 1.0, Duration::from_secs(10))
        .await;
    assert_eq!(b.metric(&series("reloaded")).await, 0.0);
    assert_eq!(
        served_certificate(&ingress),
        before,
        "the old certificate still serves"
    );
    let (code, ready) = b.admin("/readyz").await;
    assert_eq!(code, 200, "{ready}");
    assert!(
        b.sidecar
            .log_text()
            .contains("the replaced node certificate is unusable"),
        "the log says why"
    );
    // The policy set is reloaded on demand too, with no change to its file.
    let reloads = "tpm_policy_reloads_total{result=\"ok\"}";
    let reloaded = b.metric(reloads).await;
    hup();
    b.wait_metric(reloads, reloaded + 1.0, Duration::from_secs(10))
        .await;

    // A good replacement: picked up on the next SIGHUP and served.
    let new_cert = replacement_certificate(&net, &state, 1);
    replace_file(
        &state.join("node-cert.pem"),
        &std::fs::read(&new_cert).unwrap(),
    );
    hup();
    b.wait_metric(&series("reloaded"), 1.0, Duration::from_secs(10))
        .await;
    assert_eq!(b.metric(&series("failed")).await, 1.0);
    assert_eq!(
        served_certificate(&ingress),
        pem_body(&std::fs::read_to_string(&new_cert).unwrap())
    );
}

/// A new certificate for node `id`'s own key (in `state`), issued by the test authority's
/// CA with the CLI; its path.
fn replacement_certificate(net: &Net, state: &std::path::Path, id: u32) -> PathBuf {
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
fn replace_file(path: &std::path::Path, content: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The base64 body of the first PEM certificate in `text`.
fn pem_body(text: &str) -> String {
    text.split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|s| s.split("-----END CERTIFICATE-----").next())
        .unwrap_or_default()
        .lines()
        .collect()
}

/// The certificate a fresh handshake with `addr` gets, as [`pem_body`].
fn served_certificate(addr: &str) -> String {
    let served = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    pem_body(&String::from_utf8_lossy(&served.stdout))
}

/// `openssl s_client` as `node`'s holder: one HTTP/1.1 request, optionally resuming the
/// session saved in `sess_in`, saving the new one to `sess_out`. Returns its stdout.
fn s_client(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_cannot_come_back_by_resuming_its_tls_session() {
    // Envoy's CVE-2022-21654: a revoked client kept access through session resumption.
    let net = Net::start(&[]);
    let (a, b) = net.two_nodes("");
    let ingress = b.sidecar.addr("ingress").to_owned();
    let a_state = a.dir.join("state");
    let first_session = net.tmp.path().join("a.session");
    let first = s_client(&ingress, &a_state, None, &first_session);
    assert!(first.contains("HTTP/1.1 200"), "{first}");
    // Resumption works while A is trusted (so the refusal below is about revocation).
    let again = s_client(
        &ingress,
        &a_state,
        Some(&first_session),
        &net.tmp.path().join("a2.session"),
    );
    assert!(
        again.contains("Reused, TLSv1.3"),
        "the session resumes: {again}"
    );
    assert!(again.contains("HTTP/1.1 200"), "{again}");

    let crl_before = b.metric("tpm_crl_number").await;
    let revoked = reqwest::Client::new()
        .post(format!("{}/trust/revoke/2", net.url))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    b.wait_metric("tpm_crl_number", crl_before + 1.0, Duration::from_secs(10))
        .await;
    let resumed = s_client(
        &ingress,
        &a_state,
        Some(&first_session),
        &net.tmp.path().join("a3.session"),
    );
    assert!(
        !resumed.contains("HTTP/1.1 200"),
        "a resumed session of a revoked node gets no answer: {resumed}"
    );
    assert!(
        b.metric("tpm_tls_handshake_failures_total{reason=\"certificate\"}")
            .await
            >= 1.0,
        "counted as a certificate refusal"
    );
}

/// Environment that puts policy set `set` (from `policies/`) in force.
fn policy_env(set: &str) -> [(&'static str, String); 2] {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_only_revoke_lets_an_admin_revoke_through_the_authoritys_sidecar_and_no_node() {
    let net = Net::start(&[]);
    let authority_addr = net.url.trim_start_matches("http://").to_owned();
    let env = policy_env("authority.toml");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let front = net.sidecar_with_env(100, &authority_addr, &[], "", &env);
    // A node to revoke (enrolled by its own sidecar).
    let _victim = net.sidecar(5, "127.0.0.1:9", &[], "");
    let ca = net.tmp.path().join("node-100/state/ca-cert.pem");
    let authority_state = net.tmp.path().join("authority");
    let (admin_key, admin_cert) = issue_dev(
        &authority_state,
        &net.tmp.path().join("admin"),
        &["--admin", "ops"],
    );
    let (node_key, node_cert) = issue_dev(
        &authority_state,
        &net.tmp.path().join("n7"),
        &["--node-id", "7"],
    );
    let base = format!("https://{}", front.addr("ingress"));
    let post = |path: &str, key: &PathBuf, cert: &PathBuf| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-X",
                "POST",
                "--path-as-is",
                "-w",
                "\\n%{http_code}",
                "--cacert",
            ])
            .arg(&ca)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg(format!("{base}{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (code.to_owned(), body.to_owned())
    };
    for path in [
        "/trust/revoke/5",
        "/trust/revoke/5/",
        "/trust/re%76%6Fke/5",
        "/trust/%72evoke/5",
        "//trust//revoke/5",
        "/trust/./revoke/5",
        "/x/../trust/revoke/5",
    ] {
        let (code, body) = post(path, &node_key, &node_cert);
        assert_eq!(
            code,
            "403",
            "a node on {path}: {body}\n{}",
            front.log_text()
        );
    }
    // Letter case makes another route: the authority, which routes as the sidecar reads,
    // does not serve it and revokes nothing.
    let (code, body) = post("/TRUST/REVOKE/5", &node_key, &node_cert);
    assert_eq!(code, "404", "{body}");
    let front_node = Node {
        sidecar: front,
        app: None,
        dir: PathBuf::new(),
    };
    assert!(
        front_node
            .metric("tpm_policy_evaluations_total{outcome=\"deny\",plugin=\"admin-only-revoke\",shadow=\"false\"}")
            .await
            >= 7.0
    );
    let status: Value = reqwest::get(format!("{}/trust/status", net.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["revoked_certificates"], 0,
        "no node revoked anything"
    );
    let (code, body) = post("/trust/revoke/5", &admin_key, &admin_cert);
    assert_eq!(code, "200", "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["revoked"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_window_refuses_the_same_signed_request_the_second_time() {
    use trust_core::{MessageSigner, NodeKey, RequestParts, UnixTime};
    let net = Net::start(&[]);
    let app_b = net.app("b", None);
    let env = policy_env("node.toml");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let b = Node {
        sidecar: net.sidecar_with_env(1, app_b.addr(""), &[], "", &env),
        app: Some(app_b),
        dir: net.tmp.path().join("node-1"),
    };
    let ingress = b.sidecar.addr("ingress").to_owned();
    let ca = b.dir.join("state/ca-cert.pem");
    let (key, cert) = issue_dev(
        &net.tmp.path().join("authority"),
        &net.tmp.path().join("a"),
        &["--node-id", "7"],
    );
    let signer = MessageSigner::new(
        NodeKey::from_pkcs8_pem(&std::fs::read_to_string(&key).unwrap()).unwrap(),
        &trust_core::Subject::Node(trust_core::NodeId::new(7).unwrap()),
        &pem::parse(std::fs::read_to_string(&cert).unwrap())
            .unwrap()
            .into_contents(),
    );
    let body = br#"{"round":9}"#;
    let sign = || -> Vec<(&'static str, String)> {
        signer
            .sign(
                &RequestParts::new("POST", "localhost", "/fl/update", body),
                UnixTime::now(),
            )
            .unwrap()
            .pairs()
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect()
    };
    let captured = sign();
    let mut conn = mtls(&ingress, &ca, &key, &cert).await.unwrap();
    assert_eq!(
        post(&mut conn, "localhost", "/fl/update", body, &captured).await,
        Ok(200)
    );
    assert_eq!(
        post(&mut conn, "localhost", "/fl/update", body, &captured).await,
        Ok(401),
        "replayed"
    );
    // On another connection too: the store is the sidecar's, not the connection's.
    let mut other = mtls(&ingress, &ca, &key, &cert).await.unwrap();
    assert_eq!(
        post(&mut other, "localhost", "/fl/update", body, &captured).await,
        Ok(401)
    );
    // A fresh signature passes.
    assert_eq!(
        post(&mut other, "localhost", "/fl/update", body, &sign()).await,
        Ok(200)
    );
    assert!(
        b.metric("tpm_policy_evaluations_total{outcome=\"deny\",plugin=\"replay-window\",shadow=\"false\"}").await
            >= 2.0
    );
    // The plugin names the refusal a replay: it is counted beside the native verifier's
    // signature refusals, and no other reason moved.
    assert_eq!(
        b.metric("tpm_signature_verification_failures_total{reason=\"replayed\"}")
            .await,
        2.0
    );
    let (_, text) = b.admin("/metrics").await;
    let refused: f64 = text
        .lines()
        .filter(|l| l.starts_with("tpm_signature_verification_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, 2.0, "only the two replays: {text}");
    assert_eq!(
        b.metric("tpm_requests_total{direction=\"ingress\",outcome=\"refused_policy\"}")
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_refuses_a_peer_whose_certificate_names_another_node_than_the_url() {
    let net = Net::start(&[]);
    let app_b = net.app("b", None);
    let b = net.sidecar(1, app_b.addr(""), &[], "");
    let b_ingress = b.addr("ingress").to_owned();
    let b_port = b_ingress.rsplit(':').next().unwrap().to_owned();
    // A believes `node-9` lives at B's address; B's certificate says node 1. Hosts not
    // listed go to <host>:<B's port> and must carry <host> as a DNS name.
    let env = [("TRUST_PROXY_EGRESS_DEFAULT_PEER_PORT", b_port.as_str())];
    let sidecar_a = net.sidecar_with_env(2, "127.0.0.1:9", &[("node-9", &b_ingress, 9)], "", &env);
    let a = Node {
        app: Some(net.app("a", Some(sidecar_a.addr("egress")))),
        sidecar: sidecar_a,
        dir: net.tmp.path().join("node-2"),
    };
    let b = Node {
        sidecar: b,
        app: Some(app_b),
        dir: net.tmp.path().join("node-1"),
    };
    let impostor = a
        .call("POST", "http://node-9/whoami", json!({}), json!({}))
        .await;
    assert_eq!(impostor["status"], 502, "{impostor}");
    assert!(
        impostor["body"]["error"]
            .as_str()
            .unwrap()
            .contains("certificate was refused"),
        "{impostor}"
    );
    // By DNS name: B's certificate carries `localhost`, not a DNS name `127.0.0.1`.
    let by_name = a
        .call("POST", "http://localhost/whoami", json!({}), json!({}))
        .await;
    assert_eq!(by_name["status"], 200, "{by_name}");
    assert_eq!(by_name["body"]["headers"]["x-verified-node-id"], "2");
    let by_ip = a
        .call("POST", "http://127.0.0.1/whoami", json!({}), json!({}))
        .await;
    assert_eq!(by_ip["status"], 502, "{by_ip}");
    assert_eq!(
        b.metric("tpm_requests_total{direction=\"ingress\",outcome=\"forwarded\"}")
            .await,
        1.0,
        "only the correctly named request reached B's app"
    );
    assert!(
        a.metric("tpm_upstream_errors_total{direction=\"egress\",kind=\"peer_certificate\"}")
            .await
            >= 2.0
    );
    // What an app could send the egress that it must not forward: CONNECT (end-to-end TLS
    // the sidecar could not sign), origin-form (no peer named), an https:// URL.
    let egress = a.sidecar.addr("egress").to_owned();
    for (request, want) in [
        (
            "CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n",
            405,
        ),
        ("GET /whoami HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
        (
            "GET https://localhost/whoami HTTP/1.1\r\nHost: localhost\r\n\r\n",
            400,
        ),
    ] {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(&egress).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).await.unwrap();
        let status = String::from_utf8_lossy(&head[9..12])
            .parse::<u16>()
            .unwrap();
        assert_eq!(status, want, "{request:?}");
    }
    assert_eq!(
        b.metric("tpm_requests_total{direction=\"ingress\",outcome=\"forwarded\"}")
            .await,
        1.0,
        "none of them reached B"
    );
}

#[test]
fn a_pinned_root_is_checked_before_enrolment_and_a_wrong_pin_is_refused() {
    let net = Net::start(&[]);
    let root = std::fs::read_to_string(net.tmp.path().join("authority/ca-cert.pem")).unwrap();
    let der = pem::parse(root).unwrap().into_contents();
    let pin = trust_core::Fingerprint::of_der(&der);
    // The right root, pinned in the base64url form `cert inspect` prints: it serves.
    let good = net.sidecar_with_env(
        1,
        "127.0.0.1:9",
        &[],
        "",
        &[("TRUST_PROXY_AUTHORITY_CA_FINGERPRINT", &pin.to_string())],
    );
    assert!(
        !good.log_text().contains("on first use"),
        "{}",
        good.log_text()
    );
    // Another root's fingerprint (a valid hex pin): refused before any key is enrolled.
    let config = std::fs::read_to_string(net.tmp.path().join("node-1/sidecar.toml"))
        .unwrap()
        .replace("node-1/state", "node-2/state")
        .replace("node_id = 1", "node_id = 2");
    assert!(config.contains("node-2/state") && config.contains("node_id = 2"));
    let file = net.tmp.path().join("node-2.toml");
    std::fs::write(&file, config).unwrap();
    let out = trust_proxy()
        .args(["run", "--config"])
        .arg(&file)
        .env("TRUST_PROXY_AUTHORITY_CA_FINGERPRINT", "ab".repeat(32))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{stderr}");
    assert!(stderr.contains("not the pinned"), "{stderr}");
    assert!(
        !net.tmp.path().join("node-2/state/node-cert.pem").exists(),
        "a node that refused the root must not have enrolled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_with_the_authority_down_and_no_usable_saved_crl_a_sidecar_refuses_everyone() {
    let mut net = Net::start(&[]);
    let (a, b) = net.two_nodes("");
    let ok = a
        .call("POST", "http://node-1/whoami", json!({}), json!({}))
        .await;
    assert_eq!(ok["status"], 200, "{ok}");
    net.authority.take().unwrap().kill9();
    let Node { sidecar, app, dir } = b;
    drop(sidecar);
    let app_b = app.unwrap();
    let state = dir.join("state");
    let a_state = a.dir.join("state");
    for case in ["garbage", "missing"] {
        let crl = state.join("crl.der");
        if case == "garbage" {
            std::fs::write(&crl, b"\x30\x82\x01\x00 not a CRL").unwrap();
        } else {
            let _ = std::fs::remove_file(&crl);
        }
        // B comes back with its certificate but no CRL it can trust, and no authority.
        let b = Node {
            sidecar: net.sidecar(1, app_b.addr(""), &[], ""),
            app: None,
            dir: dir.clone(),
        };
        let (code, why) = b.admin("/readyz").await;
        assert_eq!(code, 503, "{case}: {why}");
        assert!(why.to_lowercase().contains("crl"), "{case}: {why}");
        // Fail closed: A's valid certificate is refused (no CRL, no trust).
        let refused = match mtls(
            b.sidecar.addr("ingress"),
            &state.join("ca-cert.pem"),
            &a_state.join("node-key.pem"),
            &a_state.join("node-cert.pem"),
        )
        .await
        {
            Err(_) => true,
            Ok(mut conn) => !matches!(
                post(&mut conn, "localhost", "/whoami", b"{}", &[]).await,
                Ok(200)
            ),
        };
        assert!(refused, "{case}: a peer was admitted without a CRL");
        b.wait_metric(
            "tpm_tls_handshake_failures_total{reason=\"certificate\"}",
            1.0,
            Duration::from_secs(10),
        )
        .await;
        assert!(
            b.sidecar.log_text().contains("CRL"),
            "{case}: the log says why"
        );
    }
}
