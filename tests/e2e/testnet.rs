//! `trust-proxy testnet` as a user runs it: the authority behind its sidecar, the example
//! federated-learning aggregator and node agents (real Flask apps) behind theirs, on
//! ephemeral loopback ports. Checked from the outside: the authority's status, the
//! aggregator's rounds against what the agents say they sent, the sidecars' metrics, and
//! that stopping the testnet leaves none of its processes running.
//!
//! The Byzantine scenario runs here too: requests with no certificate, with a certificate
//! from a self-made CA, with a forged signature, a signature by another node than the TLS
//! peer, a replayed update, and a node revoked mid-run. Each is refused with its reason
//! counted; the aggregate stays the honest nodes' average.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::testnet::Testnet;
use crate::support::{issue_dev, mtls, post, trust_proxy};

/// Asserts that round `round`'s aggregate is the sample-weighted mean of what the nodes
/// in `honest` say they sent for it, and that exactly they contributed.
async fn assert_honest_average(net: &Testnet, round: &Value, honest: &[usize]) {
    let r = round["round"].as_u64().unwrap();
    let contributors: Vec<String> = round["updates"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut expected_ids: Vec<String> = honest.iter().map(usize::to_string).collect();
    expected_ids.sort();
    let mut got = contributors.clone();
    got.sort();
    assert_eq!(got, expected_ids, "round {r}: {round}");
    let (mut sum, mut total) = ([0.0f64; 2], 0.0);
    for &k in honest {
        let (sent, _) = net.sent(k).await;
        let update = &sent[&r];
        assert_eq!(update["status"], 200, "node {k}, round {r}: {update}");
        let samples = update["samples"].as_f64().unwrap();
        for (i, s) in sum.iter_mut().enumerate() {
            *s += update["weights"][i].as_f64().unwrap() * samples;
        }
        total += samples;
    }
    for (i, s) in sum.iter().enumerate() {
        let aggregate = round["aggregate"][i].as_f64().unwrap();
        assert!(
            (aggregate - s / total).abs() < 1e-9,
            "round {r}, weight {i}: aggregate {aggregate} != honest mean {}",
            s / total
        );
    }
}

fn pid_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_testnet_verifies_every_node_trains_and_stops_everything_it_started() {
    let mut net = Testnet::start(5, &[]);
    // Anonymous clients may read the status through the authority's sidecar.
    let status = net.trust_api("GET", "/trust/status", false);
    assert_eq!(
        status["verified_nodes"], 7,
        "5 nodes, aggregator, authority's sidecar: {status}"
    );
    assert_eq!(status["total_nodes"], 7);
    // Every sidecar's signed CRL poll declared its role: live counts by role, and each
    // node's listing says what and where it is.
    assert_eq!(status["live_nodes"], 7, "{status}");
    for (role, n) in [("agent", 5), ("aggregator", 1), ("authority", 1)] {
        assert_eq!(status["by_role"][role]["live"], n, "{role}: {status}");
    }
    let nodes = net.trust_api("GET", "/trust/nodes", true);
    let node3 = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "3")
        .unwrap_or_else(|| panic!("no node 3: {nodes}"));
    assert_eq!(node3["role"], "agent", "{node3}");
    assert!(
        node3["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{node3}"
    );
    assert_eq!(
        node3["names"],
        serde_json::json!(["localhost", "127.0.0.1"])
    );
    let verify = net.trust_api("POST", "/trust/verify/3", true);
    assert_eq!(verify["verified"], true, "{verify}");

    // Training runs through the sidecars: two rounds with all five nodes, each the
    // sample-weighted average of what the agents sent.
    let rounds = net.wait_for_round(2).await;
    for round in rounds.iter().take(2) {
        assert_honest_average(&net, round, &[1, 2, 3, 4, 5]).await;
    }
    // The aggregator learned who sent each update from its sidecar, not from the body.
    assert!(
        net.aggregator_metric("tpm_requests_total{direction=\"ingress\",outcome=\"forwarded\"}")
            .await
            >= 10.0
    );

    let pids: Vec<u64> = net.manifest["pids"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 14, "authority + 13 sidecars and apps");
    assert!(pids.iter().all(|p| pid_alive(*p)));
    // Every sidecar pinned the root the testnet made; none trusted it on first use.
    let logs = net.tmp.path().join("net/logs");
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("on first use"),
            "{}:\n{text}",
            path.display()
        );
    }
    let status = net.stop();
    assert_eq!(status.code(), Some(0));
    let alive: Vec<&u64> = pids.iter().filter(|p| pid_alive(**p)).collect();
    assert!(
        alive.is_empty(),
        "still running after the testnet stopped: {alive:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byzantine_nodes_are_refused_with_reasons_and_the_aggregate_stays_honest() {
    let mut net = Testnet::start(5, &["--round-timeout", "2s"]);
    net.wait_for_round(1).await;
    let ingress = net.manifest["aggregator"]["ingress"]
        .as_str()
        .unwrap()
        .to_owned();
    let port = ingress.rsplit_once(':').unwrap().1.to_owned();
    let ca = net.path("ca_certificate");
    let evil = br#"{"round":1,"weights":[1000.0,1000.0],"samples":1000000}"#;
    let handshakes = "tpm_tls_handshake_failures_total";
    let before_handshakes = net.aggregator_metric(handshakes).await;

    // 1. No certificate: the handshake is refused.
    let curl = |extra: &[&str], cert: Option<(&Path, &Path)>| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&ca)
            .args(extra);
        if let Some((key, cert)) = cert {
            cmd.arg("--key").arg(key).arg("--cert").arg(cert);
        }
        cmd.args([
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data",
        ])
        .arg(String::from_utf8_lossy(evil).into_owned())
        .arg(format!("https://localhost:{port}/fl/update"))
        .output()
        .unwrap()
    };
    let out = curl(&[], None);
    assert!(
        !out.status.success() || String::from_utf8_lossy(&out.stdout) == "401",
        "no certificate was admitted: {out:?}"
    );

    // 2. A certificate from a self-made CA that claims node 3.
    let rogue = net.tmp.path().join("rogue-ca");
    let init = trust_proxy()
        .args(["ca", "init", "--state-dir"])
        .arg(&rogue)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let (rogue_key, rogue_cert) =
        issue_dev(&rogue, &net.tmp.path().join("rogue"), &["--node-id", "3"]);
    let out = curl(&[], Some((&rogue_key, &rogue_cert)));
    assert!(
        !out.status.success(),
        "a self-made CA's certificate was admitted: {out:?}"
    );
    let start = Instant::now();
    while net.aggregator_metric(handshakes).await < before_handshakes + 2.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "handshake refusals not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 3-5. Node 3's real certificate, with bad signatures and a replay.
    let sign = |k: usize, body: &[u8]| net.signed_headers(k, "/fl/update", body);
    let (key3, cert3) = net.node_credentials(3);
    let mut conn = mtls(&ingress, &ca, &key3, &cert3).await.unwrap();
    let signature_failures = "tpm_signature_verification_failures_total";
    let before_signatures = net.aggregator_metric(signature_failures).await;
    // Forged: signed for one body, another body sent.
    let honest_body = br#"{"round":1,"weights":[0.0,0.0],"samples":1}"#;
    let forged = sign(3, honest_body);
    assert_eq!(
        post(&mut conn, "aggregator", "/fl/update", evil, &forged).await,
        Ok(401)
    );
    // Signed by node 4's key over node 3's TLS connection.
    let other = sign(4, evil);
    assert_eq!(
        post(&mut conn, "aggregator", "/fl/update", evil, &other).await,
        Ok(401)
    );
    assert_eq!(
        net.aggregator_metric(signature_failures).await,
        before_signatures + 2.0
    );
    // Replayed: a correctly signed request (for a round that is not open, so the app
    // answers 409 the first time) sent again is refused before it reaches the app.
    let stale = br#"{"round":999999,"weights":[1000.0,1000.0],"samples":1000000}"#;
    let captured = sign(3, stale);
    assert_eq!(
        post(&mut conn, "aggregator", "/fl/update", stale, &captured).await,
        Ok(409)
    );
    let denied = "tpm_policy_evaluations_total{outcome=\"deny\",plugin=\"replay-window\"";
    let replayed = "tpm_signature_verification_failures_total{reason=\"replayed\"}";
    let before_denied = net.aggregator_metric(denied).await;
    let before_replayed = net.aggregator_metric(replayed).await;
    let replay = post(&mut conn, "aggregator", "/fl/update", stale, &captured).await;
    assert_eq!(
        replay,
        Ok(401),
        "the replay must not reach the app (it answered 409)"
    );
    assert_eq!(net.aggregator_metric(denied).await, before_denied + 1.0);
    assert_eq!(
        net.aggregator_metric(replayed).await,
        before_replayed + 1.0,
        "the replay is named as such beside the native signature refusals"
    );

    // 6. Node 5 is revoked mid-run: from the next round on only nodes 1-4 count.
    let revoked_at = net.rounds().await.len() as u64;
    let revoke = net.trust_api("POST", "/trust/revoke/5", true);
    assert_eq!(revoke["revoked"], true, "{revoke}");
    let refused_certificates =
        "tpm_requests_total{direction=\"ingress\",outcome=\"refused_certificate\"}";
    // Rounds closed after the revocation, with one round of slack for an update in flight.
    let first_clean = revoked_at + 2;
    let rounds = net.wait_for_round(first_clean + 1).await;
    for round in rounds
        .iter()
        .filter(|r| r["round"].as_u64().unwrap() >= first_clean)
    {
        assert_honest_average(&net, round, &[1, 2, 3, 4]).await;
    }
    let (_, node5_errors) = net.sent(5).await;
    assert!(node5_errors > 0, "node 5's updates kept being accepted");
    assert!(
        net.aggregator_metric(refused_certificates).await + net.aggregator_metric(handshakes).await
            > before_handshakes + 2.0,
        "node 5's refusals were not counted"
    );
    // Nothing the Byzantine requests carried reached any round, and the honest nodes saw
    // no error at all.
    for round in &rounds {
        for update in round["updates"].as_object().unwrap().values() {
            assert!(update["weights"][0].as_f64().unwrap() < 100.0, "{round}");
        }
    }
    for k in 1..=4 {
        assert_eq!(net.sent(k).await.1, 0, "honest node {k} saw errors");
    }

    // 7. Started again over the same folder, the testnet says at once that node 5 is
    //    revoked and that --fresh starts a new network, instead of waiting for it.
    assert_eq!(net.stop().code(), Some(0));
    let again = net.run_again(5, &[]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(again.status.code(), Some(65), "{said}");
    assert!(
        said.contains("[5]") && said.contains("revoked") && said.contains("--fresh"),
        "{said}"
    );
}
