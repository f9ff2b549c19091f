//! Policy costs on this machine, as percentiles: per-request evaluation with 0, 1, 2 and 5
//! plugins (real plugins from `plugins/`, warm instances), each plugin alone and the bare
//! call (a fixture that decides nothing), compile time per plugin, and
//! reload latency from a set file landing to the new set deciding.
//!
//! `cargo bench -p policy-host --bench policy` (the numbers go to docs/BENCHMARKS.md).
//! `POLICY_BENCH_LOOP=admin-only-revoke` runs only a long loop of one plugin, to profile.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark set-up")]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use policy_host::chain::NoObserver;
use policy_host::seen::SeenStore;
use policy_host::{BUILT_PLUGIN_DIR, Decision, Peer, PolicyHost, Request, SignatureFacts};

fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{label:<44} n={:<6} p50={:>9.2?} p99={:>9.2?} max={:>9.2?}",
        samples.len(),
        at(0.50),
        at(0.99),
        at(1.0)
    );
}

fn request(i: u64) -> Request {
    Request {
        method: "POST".into(),
        path: "/fl/update".into(),
        query: None,
        headers: vec![("content-type".into(), "application/json".into())],
        peer: Some(Peer {
            spiffe_id: "spiffe://sovereign.local/node/2".into(),
            id: "2".into(),
            roles: vec!["node".into()],
            serial: "0a1b".into(),
            not_after: u64::MAX,
        }),
        signature: Some(SignatureFacts {
            node: "2".into(),
            timestamp: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            nonce: format!("nonce-{i}"),
        }),
        received_at_ms: 0,
    }
}

const PLUGINS: [&str; 5] = [
    "[[plugin]]\nname = \"replay-window\"\n",
    "[[plugin]]\nname = \"admin-only-revoke\"\n",
    "[[plugin]]\nname = \"route-allow-list\"\n[plugin.settings]\nrules = \"node=/fl,/trust/status; admin=/\"\n",
    "[[plugin]]\nname = \"admin-only-revoke\"\n[plugin.settings]\npaths = \"/admin\"\n",
    "[[plugin]]\nname = \"route-allow-list\"\n[plugin.settings]\nrules = \"node=/; admin=/\"\n",
];

/// A host with `text` as its set (written to `set`), the built plugins, a large store.
fn load(set: &Path, text: &str) -> PolicyHost {
    std::fs::write(set, text).unwrap();
    PolicyHost::new(
        set,
        Path::new(BUILT_PLUGIN_DIR),
        Arc::new(SeenStore::new(10_000_000)),
        Arc::new(NoObserver),
    )
    .unwrap()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set.toml");
    let plugin_dir = Path::new(BUILT_PLUGIN_DIR);
    let mut counter = 0u64;
    // POLICY_BENCH_LOOP=<plugin>: only 1 000 000 evaluations of that plugin alone, for a
    // profiler (`perf record -g <bench binary> --bench`), then the mean per evaluation.
    if let Ok(name) = std::env::var("POLICY_BENCH_LOOP") {
        let host = load(&set, &format!("[[plugin]]\nname = \"{name}\"\n"));
        let t = Instant::now();
        for _ in 0..1_000_000 {
            counter += 1;
            host.evaluate(&request(counter));
        }
        println!(
            "{name}: {:?} per evaluation (mean of 1 000 000)",
            t.elapsed() / 1_000_000
        );
        return;
    }
    // Loads `text` as the set and times 50 000 evaluations after 2 000 to warm up.
    let mut evaluations = |text: &str, label: &str| {
        let host = load(&set, text);
        let mut samples = Vec::with_capacity(50_000);
        for i in 0..52_000 {
            counter += 1;
            let r = request(counter);
            let t = Instant::now();
            let v = host.evaluate(&r);
            if i >= 2000 {
                samples.push(t.elapsed());
            }
            assert_eq!(v.decision, Decision::Allow);
        }
        percentiles(label, samples);
    };
    for n in [0usize, 1, 2, 5] {
        evaluations(
            &PLUGINS[..n].concat(),
            &format!("evaluate, {n} plugin(s) in the chain"),
        );
    }
    // Each plugin alone: what its own logic adds to the cost of one call. `misbehave` (a
    // test fixture) on this path does next to nothing, so its figure is the call itself:
    // the request record lowered into guest memory, the guest's answer lifted back.
    evaluations(PLUGINS[0], "evaluate, replay-window alone");
    evaluations(PLUGINS[1], "evaluate, admin-only-revoke alone");
    evaluations(PLUGINS[4], "evaluate, route-allow-list alone");
    evaluations(
        "[[plugin]]\nname = \"misbehave\"\n",
        "evaluate, the bare call (misbehave)",
    );

    for name in ["admin-only-revoke", "replay-window", "route-allow-list"] {
        std::fs::write(&set, format!("[[plugin]]\nname = \"{name}\"\n")).unwrap();
        let mut samples = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            PolicyHost::new(
                &set,
                plugin_dir,
                Arc::new(SeenStore::new(10)),
                Arc::new(NoObserver),
            )
            .unwrap();
            samples.push(t.elapsed());
        }
        percentiles(&format!("load {name} (compile, link, probe)"), samples);
    }

    // Reload: the set flips between two plugins; time from the rename to the first
    // evaluation that shows the new set, with a 20 ms debounce.
    let flip = [
        "[[plugin]]\nname = \"route-allow-list\"\n[plugin.settings]\nrules = \"admin=/\"\n",
        "[[plugin]]\nname = \"admin-only-revoke\"\n",
    ];
    std::fs::write(&set, flip[1]).unwrap();
    let host = Arc::new(
        PolicyHost::new(
            &set,
            plugin_dir,
            Arc::new(SeenStore::new(10)),
            Arc::new(NoObserver),
        )
        .unwrap(),
    );
    let _watch = host.watch(Duration::from_millis(20)).unwrap();
    let mut samples = Vec::new();
    for round in 0..20 {
        let text = flip[round % 2];
        let want_allow = round % 2 == 1;
        let tmp = dir.path().join("set.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        let t = Instant::now();
        std::fs::rename(&tmp, &set).unwrap();
        loop {
            let allowed = host.evaluate(&request(0)).decision == Decision::Allow;
            if allowed == want_allow {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10));
            std::thread::yield_now();
        }
        samples.push(t.elapsed());
    }
    percentiles(
        "reload: file renamed -> new set deciding (20 ms debounce)",
        samples,
    );
}
