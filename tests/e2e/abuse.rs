//! Abuse costs the attacker, not the node: a real `trust-proxy run` sidecar, logging as an
//! operator runs it (JSON, default level), is attacked while a legitimate client keeps
//! calling through it. A peer revoked on its open keep-alive connection gets one answer and
//! loses the connection; reconnecting with the revoked certificate, with a certificate from
//! a foreign CA, or stalling handshakes writes log lines at a bounded rate (sampling), while
//! the counters keep every event and the legitimate client never fails. The same holds for
//! the authority's enrollment listener under a loop of bad enrollments. And the memory a
//! flood of connections took comes back once they are gone.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::net::{Net, eventually, metric_at, mtls_config, mtls_with, sigterm};
use crate::support::{Served, issue_dev, ok, post, trust_proxy};

/// Reconnections with each refused certificate.
const TURNS: u64 = 150;
/// Connections that never send a ClientHello.
const STALLED: u64 = 20;
/// Kinds of log event the attack can cause (see `sidecar::log_sampling`).
const ATTACK_EVENTS: [&str; 4] = [
    "tls_handshake_refused",
    "peer_refused_after_handshake",
    "tls_handshake_timeout",
    "peer_no_longer_trusted",
];

/// The log event kind of a JSON log line, when it is one the attack causes.
fn event_of(line: &Value) -> Option<&'static str> {
    match line["fields"]["message"].as_str()? {
        "TLS handshake refused" => Some(ATTACK_EVENTS[0]),
        "peer refused after handshake" => Some(ATTACK_EVENTS[1]),
        "TLS handshake timed out" => Some(ATTACK_EVENTS[2]),
        "request from a peer no longer trusted" => Some(ATTACK_EVENTS[3]),
        _ => None,
    }
}

/// One GET over a new connection; the status, or the error (handshake or request).
async fn attempt(addr: &str, config: &Arc<rustls::ClientConfig>) -> Result<u16, String> {
    let mut conn = mtls_with(addr, Arc::clone(config)).await?;
    post(&mut conn, "localhost", "/whoami", b"", &[]).await
}

/// Calls through its own keep-alive connection until `stop`; (successes, failures).
async fn legit_traffic(
    addr: String,
    config: Arc<rustls::ClientConfig>,
    stop: CancellationToken,
) -> (u64, u64) {
    let (mut good, mut bad) = (0, 0);
    let mut conn = mtls_with(&addr, config).await.unwrap();
    while !stop.is_cancelled() {
        match post(&mut conn, "localhost", "/whoami", b"", &[]).await {
            Ok(200) => good += 1,
            other => {
                eprintln!("legit request failed: {other:?}");
                bad += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (good, bad)
}

fn json_lines(log: &Path, from: usize) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap();
    text[from..]
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_clients_lose_their_connection_and_cannot_grow_the_log() {
    let net = Net::start(&[]);
    let app = net.app("b", None);
    let mut b = net.sidecar_as_operator(
        1,
        app.addr(""),
        &[("TRUST_PROXY_LIMITS_HANDSHAKE_TIMEOUT", "1s")],
    );
    let (ingress, admin) = (b.addr("ingress").to_owned(), b.addr("admin").to_owned());
    // Nodes 2 (the attacker, soon revoked) and 3 (legitimate) enroll through sidecars of
    // their own, stopped once their certificates are on disk.
    for id in [2, 3] {
        drop(net.in_process(id, "127.0.0.1:9", &[]).await);
    }
    let state = |id: u32| net.tmp.path().join(format!("node-{id}/state"));
    let ca = state(1).join("ca-cert.pem");
    let client = |id: u32| {
        Arc::new(mtls_config(
            &ca,
            &state(id).join("node-key.pem"),
            &state(id).join("node-cert.pem"),
        ))
    };
    let (attacker, legit) = (client(2), client(3));
    let foreign_ca = net.tmp.path().join("foreign");
    ok(trust_proxy()
        .args([
            "ca",
            "init",
            "--trust-domain",
            "sovereign.local",
            "--state-dir",
        ])
        .arg(&foreign_ca));
    let (key, cert) = issue_dev(&foreign_ca, &foreign_ca, &["--node-id", "2"]);
    let foreign = Arc::new(mtls_config(&ca, &key, &cert));

    let stop = CancellationToken::new();
    let legit_calls = tokio::spawn(legit_traffic(ingress.clone(), legit, stop.clone()));
    let mut trusted_then = mtls_with(&ingress, Arc::clone(&attacker)).await.unwrap();
    assert_eq!(
        post(&mut trusted_then, "localhost", "/whoami", b"", &[]).await,
        Ok(200)
    );
    net.api().revoke(2).await;
    let admin_ref = &admin;
    eventually(Duration::from_secs(10), "B holds the CRL", || async move {
        metric_at(admin_ref, "tpm_crl_size").await >= 1.0
    })
    .await;
    let failures = |reason: &'static str| async move {
        metric_at(
            admin_ref,
            &format!("tpm_tls_handshake_failures_total{{reason=\"{reason}\"}}"),
        )
        .await as u64
    };
    let (certificate_before, timeout_before) =
        (failures("certificate").await, failures("timeout").await);
    let log_from = std::fs::metadata(&b.log).unwrap().len() as usize;
    let attack_started = Instant::now();

    // 1. The revoked peer on its open connection: one refusal, then the connection is gone.
    assert_eq!(
        post(&mut trusted_then, "localhost", "/whoami", b"", &[]).await,
        Ok(403)
    );
    assert!(
        post(&mut trusted_then, "localhost", "/whoami", b"", &[])
            .await
            .is_err(),
        "the refused peer's connection was closed"
    );
    // 2. Reconnecting: with the revoked certificate, and with one from a foreign CA.
    for config in [&attacker, &foreign] {
        for _ in 0..TURNS {
            let refused = attempt(&ingress, config).await;
            assert!(refused.is_err(), "{refused:?}");
        }
    }
    // 3. Connections that never send a ClientHello, cut at the 1 s handshake deadline.
    let stalled: Vec<_> = futures_stalled(&ingress, STALLED).await;
    eventually(
        Duration::from_secs(10),
        "stalled handshakes cut",
        || async move { failures("timeout").await >= timeout_before + STALLED },
    )
    .await;
    drop(stalled);
    let attack_took = attack_started.elapsed();

    stop.cancel();
    let (good, bad) = legit_calls.await.unwrap();
    assert!(good > 0 && bad == 0, "legit calls: {good} ok, {bad} failed");

    // The counters keep every event.
    assert_eq!(
        failures("certificate").await - certificate_before,
        2 * TURNS,
        "every refused handshake counted once"
    );
    assert_eq!(failures("timeout").await - timeout_before, STALLED);
    let refused_on_connection = metric_at(
        &admin,
        "tpm_requests_total{direction=\"ingress\",outcome=\"refused_certificate\"}",
    )
    .await as u64;
    assert_eq!(refused_on_connection, 1);
    let suppressed = Arc::new(AtomicU64::new(0));
    for event in ATTACK_EVENTS {
        let n = metric_at(
            &admin,
            &format!("tpm_log_lines_suppressed_total{{event=\"{event}\"}}"),
        )
        .await as u64;
        suppressed.fetch_add(n, Ordering::Relaxed);
    }

    // The log: at most (5 in full + 1 summary) lines per kind and window while attacked.
    let attack_lines = json_lines(&b.log, log_from);
    let attack_bytes = std::fs::metadata(&b.log).unwrap().len() as usize - log_from;
    let windows = attack_took.as_secs() / 10 + 2;
    let bound = ATTACK_EVENTS.len() as u64 * 6 * windows;
    let attack_requests = 1 + 2 * TURNS + STALLED;
    eprintln!(
        "attack: {attack_requests} refused attempts in {attack_took:?}: {} log lines, {attack_bytes} bytes \
         ({:.1} bytes per attempt); {} events only counted",
        attack_lines.len(),
        attack_bytes as f64 / attack_requests as f64,
        suppressed.load(Ordering::Relaxed),
    );
    assert!(
        (attack_lines.len() as u64) <= bound,
        "{} lines for {attack_requests} attempts over {attack_took:?} (bound {bound}):\n{attack_lines:#?}",
        attack_lines.len()
    );
    // Without sampling this attack writes a line per attempt, more than the bound.
    assert!(attack_requests > bound);

    // At shutdown the summary lines account for every event not logged in full: logged
    // + not logged = counted, kind by kind.
    let detailed_handshakes = attack_lines
        .iter()
        .filter(|l| matches!(event_of(l), Some(e) if e != "peer_no_longer_trusted" && e != "tls_handshake_timeout"))
        .count() as u64;
    sigterm(b.child.id());
    let status = b.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let all = json_lines(&b.log, log_from);
    let not_logged = |kinds: &[&str]| {
        all.iter()
            .filter(|l| {
                l["fields"]["event"]
                    .as_str()
                    .is_some_and(|e| kinds.contains(&e))
            })
            .map(|l| l["fields"]["not_logged"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        not_logged(&ATTACK_EVENTS),
        suppressed.load(Ordering::Relaxed),
        "the summaries say how many lines were left out"
    );
    let refused_kinds = ["tls_handshake_refused", "peer_refused_after_handshake"];
    let detailed_after = all
        .iter()
        .filter(|l| event_of(l).is_some_and(|e| refused_kinds.contains(&e)))
        .count() as u64;
    assert_eq!(detailed_after, detailed_handshakes);
    assert_eq!(
        detailed_handshakes + not_logged(&refused_kinds),
        2 * TURNS,
        "each refused handshake is in the log, in full or in a summary"
    );
    let from: IpAddr = "127.0.0.1".parse().unwrap();
    assert!(
        all.iter()
            .filter(|l| event_of(l).is_some())
            .all(|l| l["fields"]["peer"]
                .as_str()
                .is_none_or(|p| p.starts_with(&from.to_string()))),
        "detailed lines name the client's address"
    );
}

/// `n` TCP connections to `addr` that send nothing.
async fn futures_stalled(addr: &str, n: u64) -> Vec<tokio::net::TcpStream> {
    let mut open = Vec::new();
    for _ in 0..n {
        open.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    open
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_enrollments_in_a_loop_cannot_grow_the_authoritys_log() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "abuse-test-token-0123456789abcdef").unwrap();
    let mut cmd = trust_proxy();
    cmd.args([
        "--log-format",
        "json",
        "authority",
        "--listen",
        "127.0.0.1:0",
    ])
    .arg("--state-dir")
    .arg(tmp.path().join("authority"))
    .arg("--bootstrap-token-file")
    .arg(&token);
    let mut authority = Served::spawn(cmd, tmp.path().join("authority.log"), &[""]);
    let url = format!("http://{}", authority.addr(""));
    let log_from = std::fs::metadata(&authority.log).unwrap().len() as usize;
    let client = reqwest::Client::new();
    const GUESSES: u64 = 300;
    let csr = trust_core::NodeKey::generate()
        .unwrap()
        .certificate_request("n", &["localhost".into()], &[])
        .unwrap();
    let started = Instant::now();
    for i in 0..GUESSES {
        let answer = client
            .post(format!("{url}/trust/enroll"))
            .json(&serde_json::json!({"csr": csr, "token": format!("guess-{i}-0123456789")}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401);
    }
    let took = started.elapsed();
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert_eq!(
        value("tpm_authority_enrollments_total{result=\"refused\"}"),
        GUESSES,
        "every guess counted"
    );
    let suppressed = value("tpm_log_lines_suppressed_total{event=\"request_refused\"}");
    let lines = json_lines(&authority.log, log_from);
    let bytes = std::fs::metadata(&authority.log).unwrap().len() as usize - log_from;
    eprintln!(
        "{GUESSES} refused enrollments in {took:?}: {} log lines, {bytes} bytes ({:.1} per request); {suppressed} only counted",
        lines.len(),
        bytes as f64 / GUESSES as f64
    );
    let bound = 6 * (took.as_secs() / 10 + 2);
    assert!(lines.len() as u64 <= bound, "{lines:#?}");
    assert!(GUESSES > bound);
    // The summary at shutdown accounts for the rest.
    sigterm(authority.child.id());
    assert!(authority.child.wait().unwrap().success());
    let summed: u64 = json_lines(&authority.log, log_from)
        .iter()
        .filter(|l| l["fields"]["event"] == "request_refused")
        .map(|l| l["fields"]["not_logged"].as_u64().unwrap())
        .sum();
    assert_eq!(summed, suppressed);
    let detailed = json_lines(&authority.log, log_from)
        .iter()
        .filter(|l| l["fields"]["message"] == "request refused")
        .count() as u64;
    assert_eq!(
        detailed + summed,
        GUESSES,
        "each refusal in the log, in full or summed"
    );
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_taken_by_a_flood_of_connections_comes_back_once_they_are_gone() {
    /// Connections in the flood, each through a full handshake and one request, held open.
    const FLOOD: usize = 400;
    /// How far above its idle level the sidecar may stay once the flood is gone.
    const SLACK_MIB: f64 = 6.0;
    let net = Net::start(&[]);
    let app = net.app("b", None);
    let b = net.sidecar_as_operator(1, app.addr(""), &[]);
    let ingress = b.addr("ingress").to_owned();
    drop(net.in_process(2, "127.0.0.1:9", &[]).await);
    let state = |id: u32| net.tmp.path().join(format!("node-{id}/state"));
    let client = Arc::new(mtls_config(
        &state(1).join("ca-cert.pem"),
        &state(2).join("node-key.pem"),
        &state(2).join("node-cert.pem"),
    ));
    let pid = b.child.id();
    // Idle: after a few requests, so lazily built state is already there.
    for _ in 0..3 {
        assert_eq!(attempt(&ingress, &client).await, Ok(200));
    }
    let idle = rss_mib(pid);

    let mut open = Vec::new();
    for _ in 0..FLOOD {
        let mut conn = mtls_with(&ingress, Arc::clone(&client)).await.unwrap();
        assert_eq!(
            post(&mut conn, "localhost", "/whoami", b"", &[]).await,
            Ok(200)
        );
        open.push(conn);
    }
    let during = rss_mib(pid);
    drop(open);
    let b_ref = &b;
    let took = eventually(
        Duration::from_secs(60),
        "RSS back near idle",
        || async move { rss_mib(b_ref.child.id()) <= idle + SLACK_MIB },
    )
    .await;
    let after = rss_mib(pid);
    eprintln!(
        "RSS with {FLOOD} connections: idle {idle:.1} MiB, during {during:.1} MiB, \
         {after:.1} MiB {took:?} after they closed"
    );
    assert!(
        during > idle + SLACK_MIB,
        "the flood took memory: {during} vs {idle}"
    );
    // And the sidecar still serves.
    assert_eq!(attempt(&ingress, &client).await, Ok(200));
}
