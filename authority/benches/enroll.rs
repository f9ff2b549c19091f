//! Authority load figures for docs/BENCHMARKS.md: enroll 100 and 1000 nodes over HTTP
//! (client key generation included and excluded), `/trust/status` latency with 1000
//! nodes, and how fast a CRL long poll wakes after a revocation.
//!
//! `cargo bench -p authority --bench enroll` (about 2 minutes on 2 cores).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark"
)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use authority::{Authority, AuthorityConfig, Secret};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use trust_core::{NodeKey, UnixTime};

const TOKEN: &str = "bench-bootstrap-token-0123456789";
const CONCURRENCY: usize = 16;

fn now() -> UnixTime {
    UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap(),
    )
}

async fn start(dir: &std::path::Path) -> (String, CancellationToken) {
    let config = AuthorityConfig::new(dir.to_owned(), Secret::new(TOKEN));
    let (authority, _) = tokio::task::spawn_blocking(move || Authority::open(config, now()))
        .await
        .unwrap()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let serve = authority::run(listener, Arc::new(authority), stop.clone());
    tokio::spawn(async move { serve.await.unwrap() });
    (url, stop)
}

fn csr() -> String {
    NodeKey::generate()
        .unwrap()
        .certificate_request("n", &["localhost".into()], &[])
        .unwrap()
}

/// Enrolls `n` nodes with CONCURRENCY clients; returns the wall time until all are
/// enrolled and `/trust/status` reports them verified.
async fn enroll(url: &str, n: usize, pregenerated: Option<Vec<String>>) -> Duration {
    let client = reqwest::Client::new();
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut csrs = pregenerated.map(|v| v.into_iter());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
        let given = csrs.as_mut().and_then(Iterator::next);
        let (client, url) = (client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let csr = match given {
                Some(c) => c,
                None => tokio::task::spawn_blocking(csr).await.unwrap(),
            };
            let r = client
                .post(format!("{url}/trust/enroll"))
                .json(&json!({"csr": csr, "token": TOKEN}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let status: Value = client
        .get(format!("{url}/trust/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["verified_nodes"].as_u64(), Some(n as u64));
    started.elapsed()
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (p(0.5), p(0.95), v[v.len() - 1])
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("| what | figure | budget |");
        println!("|---|---|---|");
        for n in [100usize, 1000] {
            let dir = tempfile::tempdir().unwrap();
            let (url, stop) = start(dir.path()).await;
            let t = enroll(&url, n, None).await;
            println!("| enroll and verify {n} nodes, client keygen included ({CONCURRENCY} clients) | {:.2} s | {} |", t.as_secs_f64(), if n == 100 { "<= 5 s" } else { "<= 60 s" });
            stop.cancel();

            let dir = tempfile::tempdir().unwrap();
            let (url, stop) = start(dir.path()).await;
            let pre: Vec<String> = tokio::task::spawn_blocking(move || (0..n).map(|_| csr()).collect()).await.unwrap();
            let t = enroll(&url, n, Some(pre)).await;
            println!("| enroll and verify {n} nodes, keys made beforehand | {:.2} s | |", t.as_secs_f64());
            if n == 1000 {
                let client = reqwest::Client::new();
                let mut samples = Vec::new();
                for _ in 0..200 {
                    let s = Instant::now();
                    let r = client.get(format!("{url}/trust/status")).send().await.unwrap();
                    let _ = r.bytes().await.unwrap();
                    samples.push(s.elapsed());
                }
                let (p50, p95, max) = percentiles(samples);
                println!("| `GET /trust/status` with 1000 nodes (all verified, cached) | p50 {p50:.1?}, p95 {p95:.1?}, max {max:.1?} | |");

                let mut wake = Vec::new();
                let mut revoke = Vec::new();
                for id in 1..=20 {
                    let etag = client.get(format!("{url}/trust/crl")).send().await.unwrap().headers()["etag"].to_str().unwrap().to_owned();
                    let waiter = {
                        let (client, url) = (client.clone(), url.clone());
                        tokio::spawn(async move {
                            let r = client.get(format!("{url}/trust/crl?wait=30")).header("If-None-Match", etag).send().await.unwrap();
                            assert_eq!(r.status(), 200);
                            let _ = r.bytes().await.unwrap();
                            Instant::now()
                        })
                    };
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(20)).await; // let the poll reach the server (benchmark only)
                    let sent = Instant::now();
                    let r = client.post(format!("{url}/trust/revoke/{id}")).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    revoke.push(sent.elapsed());
                    wake.push(waiter.await.unwrap().duration_since(sent));
                }
                let (w50, w95, wmax) = percentiles(wake);
                let (r50, r95, _) = percentiles(revoke);
                println!("| revocation answered (persist + new CRL signed) | p50 {r50:.1?}, p95 {r95:.1?} | |");
                println!("| CRL long poll woken, from the revoke request sent | p50 {w50:.1?}, p95 {w95:.1?}, max {wmax:.1?} | wake-up <= 100 ms |");
            }
            stop.cancel();
        }
    });
}
