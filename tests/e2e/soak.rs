//! The soak: a whole testnet under mixed traffic for `SOAK_SECS` (120 in the test run;
//! `scripts/soak.sh 30` runs 30 minutes), with the policy set rewritten every 3 s and a node
//! revoked every minute. The agents train and post signed updates through their sidecars
//! all along; a client reads the aggregator through node 1's egress and the network's
//! status through the authority's sidecar. At the end: no unexpected error anywhere, every
//! reload applied, and every process's memory flat (RSS sampled every 2 s; written to
//! `$SOAK_OUT/rss.csv` when set, for the plot in docs/BENCHMARKS.md).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::repo_root;
use crate::support::testnet::{Testnet, metric};

/// Resident memory of `pid`, KiB (`None` once it is gone).
fn rss_kib(pid: u64) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Replaces `path` with `text` the way an operator's deploy tool would (write, rename).
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_with_reloads_and_revocations_runs_clean_with_flat_memory() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let revocations = secs / 60;
    let nodes = u32::try_from(revocations).unwrap() + 2;
    // The testnet reads its policy sets from a copy the soak may rewrite.
    let policies = tempfile::tempdir().unwrap();
    for set in ["node.toml", "authority.toml"] {
        std::fs::copy(
            repo_root().join("policies").join(set),
            policies.path().join(set),
        )
        .unwrap();
    }
    let node_set = std::fs::read_to_string(policies.path().join("node.toml")).unwrap();
    let mut net = Testnet::start(nodes, &["--policies", policies.path().to_str().unwrap()]);
    let pids: BTreeMap<String, u64> = net.manifest["pids"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    let egress = net.node(1)["egress"].as_str().unwrap().to_owned();
    let node1_admin = net.node(1)["admin"].as_str().unwrap().to_owned();
    let aggregator_admin = net.manifest["aggregator"]["admin"]
        .as_str()
        .unwrap()
        .to_owned();
    let reloads_before = metric(&node1_admin, "tpm_policy_reloads_total{result=\"ok\"").await;

    let through_node1 = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{egress}")).unwrap())
        .build()
        .unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut samples: Vec<(f64, String, u64)> = Vec::new();
    let (mut ok, mut unexpected) = (0u64, Vec::<String>::new());
    let mut reload = 0u32;
    let mut revoked = Vec::new();
    let mut next_sample = started;
    let mut next_reload = started + Duration::from_secs(3);
    let mut next_revoke = started + Duration::from_secs(60);
    // About 100 client requests a second on top of the agents' own traffic: load, not a
    // flood that would starve the Flask apps of the two cores.
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    while Instant::now() < deadline {
        pace.tick().await;
        // Traffic: the aggregator's rounds through node 1's sidecar (signed, mTLS,
        // replay-window), and the network's status through the authority's door.
        match through_node1
            .get("http://aggregator/fl/rounds")
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => ok += 1,
            Ok(r) => unexpected.push(format!("GET /fl/rounds via node 1: {}", r.status())),
            Err(e) => unexpected.push(format!("GET /fl/rounds via node 1: {e}")),
        }
        let now = Instant::now();
        if now >= next_sample {
            let t = started.elapsed().as_secs_f64();
            for (name, pid) in &pids {
                if let Some(kib) = rss_kib(*pid) {
                    samples.push((t, name.clone(), kib));
                }
            }
            let status = net.trust_api("GET", "/trust/status", false);
            if status["total_nodes"].as_u64().is_none() {
                unexpected.push(format!("/trust/status: {status}"));
            }
            next_sample = now + Duration::from_secs(2);
        }
        if now >= next_reload {
            reload += 1;
            replace(
                &policies.path().join("node.toml"),
                &format!("{node_set}\n# soak reload {reload}\n"),
            );
            next_reload = now + Duration::from_secs(3);
        }
        if now >= next_revoke && revoked.len() < usize::try_from(revocations).unwrap() {
            // Highest ids first: nodes 1 and 2 stay honest to the end.
            let k = nodes - u32::try_from(revoked.len()).unwrap();
            let answer = net.trust_api("POST", &format!("/trust/revoke/{k}"), true);
            assert_eq!(answer["revoked"], true, "{answer}");
            revoked.push(k);
            next_revoke = now + Duration::from_secs(60);
        }
    }

    // No unexpected error, in the client or in the honest agents.
    assert!(ok > 0, "no request got through");
    assert!(
        unexpected.is_empty(),
        "{} unexpected errors: {:?}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(10)]
    );
    for k in 1..=nodes {
        if revoked.contains(&k) {
            continue;
        }
        let status = net
            .get(net.node(k as usize)["app"].as_str().unwrap(), "/status")
            .await;
        assert_eq!(
            status["errors"], 0,
            "honest node {k}'s agent saw errors: {status}"
        );
    }
    let status = net.trust_api("GET", "/trust/status", false);
    assert_eq!(
        status["revoked_certificates"].as_u64(),
        Some(revoked.len() as u64),
        "{status}"
    );
    // Every rewrite was applied (the 100 ms debounce may fold two into one, never lose the
    // last), none failed, and no plugin failed on any request.
    let reloads =
        metric(&node1_admin, "tpm_policy_reloads_total{result=\"ok\"").await - reloads_before;
    assert!(
        reloads >= f64::from(reload) / 2.0,
        "{reloads} reloads applied for {reload} rewrites"
    );
    assert_eq!(
        metric(&node1_admin, "tpm_policy_reloads_total{result=\"failed\"").await,
        0.0
    );
    assert_eq!(
        metric(
            &aggregator_admin,
            "tpm_policy_evaluations_total{outcome=\"error\""
        )
        .await,
        0.0
    );

    // Flat memory: each process's median RSS over the last quarter of the run against the
    // second quarter (the first is warm-up: plugins compile, pools fill).
    let quarter = secs as f64 / 4.0;
    let mut report = Vec::new();
    for name in pids.keys() {
        let of = |from: f64, to: f64| {
            median(
                samples
                    .iter()
                    .filter(|(t, n, _)| n == name && *t >= from && *t < to)
                    .map(|(_, _, kib)| *kib)
                    .collect(),
            )
        };
        let (early, late) = (of(quarter, 2.0 * quarter), of(3.0 * quarter, 4.0 * quarter));
        report.push(format!("{name}: {early} -> {late} KiB"));
        // Revoked nodes' processes keep running (their posts are refused); all count.
        assert!(
            late <= early + early / 4 + 8 * 1024,
            "{name} grew from {early} KiB to {late} KiB"
        );
    }
    eprintln!(
        "soak {secs}s: {ok} requests, {reload} reloads ({reloads} applied), revoked {revoked:?}\n{}",
        report.join("\n")
    );
    if let Ok(out) = std::env::var("SOAK_OUT") {
        std::fs::create_dir_all(&out).unwrap();
        let mut csv = String::from("seconds,process,rss_kib\n");
        for (t, name, kib) in &samples {
            csv.push_str(&format!("{t:.1},{name},{kib}\n"));
        }
        std::fs::write(Path::new(&out).join("rss.csv"), csv).unwrap();
        std::fs::write(Path::new(&out).join("summary.txt"), report.join("\n")).unwrap();
    }
    assert!(
        net.still_running(),
        "a testnet process died during the soak"
    );
}
