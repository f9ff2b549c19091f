//! The registry's persistence, measured against the alternative `docs/ARCHITECTURE.md`
//! weighs: the append-only log (`nodes.jsonl`, one fsync'd line per certificate) against
//! rewriting the whole registry as JSON with an atomic replace (temp file, fsync, rename,
//! fsync of the folder) on every enrollment. Real files in a temporary folder on the
//! machine's disk; `cargo bench -p authority --bench registry`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark")]

use std::time::{Duration, Instant};

use authority::registry::{NodeRecord, Registry};

/// A record the size of a real one (the certificate PEM is ~1.6 KiB).
fn record(id: u32) -> NodeRecord {
    NodeRecord {
        node_id: id,
        key: format!("{id:043}"),
        serial: format!("{id:032x}"),
        certificate: "A".repeat(1600),
        issued_at: 1_795_564_800,
        not_after: 1_827_100_800,
    }
}

fn append_log(n: u32) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::open(dir.path()).unwrap();
    let mut worst = Duration::ZERO;
    let start = Instant::now();
    for id in 1..=n {
        let one = Instant::now();
        registry.append(record(id)).unwrap();
        worst = worst.max(one.elapsed());
    }
    (start.elapsed(), worst)
}

fn json_replace(n: u32) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodes.json");
    let mut all = Vec::new();
    let mut worst = Duration::ZERO;
    let start = Instant::now();
    for id in 1..=n {
        let one = Instant::now();
        all.push(record(id));
        let bytes = serde_json::to_vec(&all).unwrap();
        trust_store::write_atomic(&path, &bytes, 0o600).unwrap();
        worst = worst.max(one.elapsed());
    }
    (start.elapsed(), worst)
}

fn main() {
    println!("| store | nodes | total | per enrollment | slowest write |");
    println!("|---|---|---|---|---|");
    for n in [100, 1000] {
        for (name, run) in [
            (
                "append-only log (fsync per line)",
                append_log as fn(u32) -> _,
            ),
            ("JSON, atomic replace per enrollment", json_replace),
        ] {
            let (total, worst) = run(n);
            println!(
                "| {name} | {n} | {:.2} s | {:.2} ms | {:.2} ms |",
                total.as_secs_f64(),
                total.as_secs_f64() * 1000.0 / f64::from(n),
                worst.as_secs_f64() * 1000.0
            );
        }
    }
}
